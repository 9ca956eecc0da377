"""Global batch size, and resuming under another process count (CPU, gloo)."""

import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml
from support import ROOT
from support.market_fixtures import make_tiny_market
from support.references import bot_lr
from support.tiny_run import DDP_RUN

from reidpipe.data.split import make_split
from reidpipe.errors import ReidpipeError
from reidpipe.params import DatasetParams, load_params
from reidpipe.training.datamodule import per_rank_batch
from reidpipe.training.lightning_module import restore_cuda_rng
from reidpipe.training.sampler import IdentityBatchSampler
from reidpipe.training.train import Runtime, train_arch


def test_the_batch_size_is_global_and_divides_over_the_processes():
    pk = DatasetParams(batch_size=64, num_instances=4, sampler="softmax_triplet")
    assert [per_rank_batch(pk, world) for world in (1, 2, 4, 8, 16)] == [64, 32, 16, 8, 4]
    with pytest.raises(
        ReidpipeError,
        match=r"dataset.batch_size \(64\).*num_instances \(4\)"
        r".*3 processes",
    ):
        per_rank_batch(pk, 3)
    with pytest.raises(ReidpipeError, match="dataset.batch_size"):
        per_rank_batch(pk, 32)  # 2 images a rank: not one identity of 4
    plain = DatasetParams(batch_size=60, sampler="softmax")
    assert per_rank_batch(plain, 3) == 20
    with pytest.raises(ReidpipeError, match=r"dataset.batch_size \(60\).*7 processes"):
        per_rank_batch(plain, 7)


def test_cuda_rng_states_restore_onto_another_device_count():
    saved = [torch.tensor([i], dtype=torch.uint8) for i in range(2)]
    restored: dict[int, int] = {}

    def set_state(state: torch.Tensor, device: int) -> None:
        restored[device] = int(state[0])

    restore_cuda_rng(saved, 1, set_state)  # saved on 2 GPUs, resumed on 1
    assert restored == {0: 0}
    restored.clear()
    restore_cuda_rng(saved[:1], 2, set_state)  # saved on 1 GPU, resumed on 2
    assert restored == {0: 0}
    restored.clear()
    restore_cuda_rng(saved, 2, set_state)
    assert restored == {0: 0, 1: 1}


def test_a_two_process_checkpoint_resumes_in_one_process(tmp_path):
    make_tiny_market(tmp_path / "market", train_ids=10)
    make_split(tmp_path / "market", tmp_path / "splits", val_ids=2, seed=0)
    splits = tmp_path / "splits"
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(DDP_RUN))
    files = [ROOT / "params.yaml", tmp_path / "tiny.yaml"]
    script = tmp_path / "ddp.py"
    script.write_text(
        "from reidpipe.params import load_params\n"
        "from reidpipe.training.train import Runtime, train_arch\n"
        f"cfg = load_params({[str(f) for f in files]!r}).arch('tiny')\n"
        f"train_arch(cfg, {str(splits)!r}, {str(tmp_path / 'two')!r}, "
        "Runtime('cpu', 2, '32', '2-process CPU DDP'))\n"
    )
    run = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    (checkpoint,) = (tmp_path / "two" / "checkpoints").glob("epoch*.ckpt")

    torch.set_num_threads(1)
    cfg = load_params(
        files,
        [
            f"archs.tiny.train.resume_training_checkpoint_path={checkpoint}",
            "archs.tiny.train.num_epochs=4",
        ],
    ).arch("tiny")
    train_arch(cfg, splits, tmp_path / "one", Runtime("cpu", 1, "32", "resumed on 1 process"))
    log = pd.read_csv(tmp_path / "one" / "train_log.csv")
    assert log["epoch"].tolist() == [0, 1, 2, 3, 4]
    labels = pd.read_csv(splits / "train.csv")["label"].tolist()
    # The global batch of 8 was 4 a process on 2 processes (each drawing from its half of the
    # identities), and is 8 on one.
    two = len(IdentityBatchSampler(labels, 4, 2, num_replicas=2, rank=0))
    one = len(IdentityBatchSampler(labels, 8, 2, num_replicas=1, rank=0))
    assert log["steps"].tolist() == [0, two, two, one, one]
    # The schedule is a function of the epoch: the process count does not change its pace.
    assert log["lr"][1:].tolist() == pytest.approx([bot_lr(e) for e in (1, 2, 3, 4)], rel=1e-9)
    assert torch.load(tmp_path / "one" / "model.pt", weights_only=True)["epochs"] == 4
