"""Multi-node DDP through Snakemake's Slurm executor: the ``train`` rule of a tiny config with
``train.num_nodes: 2`` on the two nodes of ``.ci/start_slurm.sh`` (one task a node, gloo on CPU,
the ranks talking across the nodes' own addresses), against the same config trained by two
processes on one machine.

Needs the two-node cluster (skipped with its reason otherwise) and snakemake-executor-plugin-slurm.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from support import deep_merge
from support.references import bot_lr
from support.repo_copy import copy_working_tree, pipeline_env, snakemake
from support.slurm_cluster import SUBMITTED, job_record, profile_with, slurm_unavailable
from support.tiny_run import DDP_RUN

from reidpipe.filenames import MODEL_FILE, TRAIN_CONFIG_FILE, TRAIN_LOG_FILE
from reidpipe.params import load_params
from reidpipe.training.sampler import IdentityBatchSampler
from reidpipe.training.train import Runtime, train_arch

# The profile's `set-resources: train:` for train.num_nodes = 2 on CPU, one task a node
# (README "Running on a Slurm cluster"): no GPU, two nodes, two tasks, and the launcher that
# starts the command once a task (Lightning reads its ranks from srun's SLURM_* variables).
MULTI_NODE_CPU = {"nodes": 2, "tasks": 2, "mpi": "srun --nodes=2 --ntasks-per-node=1 --label"}
SEED, STEPS = 1234, 3
TINY = deep_merge(
    DDP_RUN,
    {
        "data": {"synthetic_ids": 16, "dataset_dir": "data/tiny-synthetic"},
        "split": {"val_ids": 2},
        "train": {"seed": SEED, "max_steps_per_epoch": STEPS, "num_nodes": 2, "num_threads": 1},
    },
)
GLOBAL_BATCH, K = TINY["dataset"]["batch_size"], TINY["dataset"]["num_instances"]
EPOCHS = TINY["train"]["num_epochs"]
PARAMS = ["params.yaml", "config/demo.yaml", "tiny.yaml"]
# The tiny arch on 2 processes of this machine (Lightning starts rank 1 by running the script
# again), with the CPU kernels pinned as the CLI pins them.
TWO_PROCESSES = """
from reidpipe import environment
from reidpipe.params import load_params
environment.pin_cpu_isa(load_params({params!r}).pipeline.cpu_isa)
from reidpipe.training.train import Runtime, train_arch
cfg = load_params({params!r}, ["train.num_nodes=1"]).arch("tiny")
train_arch(cfg, {splits!r}, {out!r}, Runtime("cpu", 2, "32", "2 processes, one machine"))
"""


def _batches(labels: list[int], epoch: int, world: int, rank: int) -> list[list[int]]:
    """What rank ``rank`` of ``world`` processes draws in ``epoch``."""
    sampler = IdentityBatchSampler(
        labels, GLOBAL_BATCH // world, K, SEED, num_replicas=world, rank=rank
    )
    sampler.set_epoch(epoch)
    return list(sampler)


@pytest.mark.slow
def test_train_runs_on_two_slurm_nodes_as_on_two_local_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reason = slurm_unavailable(nodes=2)
    if reason is not None:
        pytest.skip(reason)
    repo = copy_working_tree(tmp_path / "repo")
    (repo / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    env = pipeline_env(repo)
    target = f"models/tiny/{MODEL_FILE}"
    # The data stages here, the training on the cluster.
    local = subprocess.run(
        [*snakemake(target, "--omit-from", "train", "--configfile", *PARAMS)],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert local.returncode == 0, local.stderr[-3000:]
    profile = profile_with(tmp_path / "profile", MULTI_NODE_CPU)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            target,
            "--workflow-profile",
            str(profile),
            "--slurm-init-seconds-before-status-checks",
            "2",
            "--configfile",
            *PARAMS,
        ],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    splits = repo / re.search(r"--splits (\S+)", output).group(1)
    model_dir = repo / re.search(r"--out (\S+)", output).group(1)

    # One Slurm job on two nodes, one task on each; both ranks joined one gloo group.
    (job_id,) = SUBMITTED.findall(output)
    job = job_record(job_id)
    assert (job["JobState"], job["NumNodes"], job["NumTasks"]) == ("COMPLETED", "2", "2"), job
    log = (repo / "logs/train_tiny.log").read_text()
    for rank in (0, 1):
        assert f"{rank}: Initializing distributed: GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in log
    assert (
        yaml.safe_load((model_dir / TRAIN_CONFIG_FILE).read_text())["environment"]["world_size"]
        == 2
    )

    # Each rank draws P x K batches of half the configured global batch, from identities the other
    # rank never sees that epoch (train.max_steps_per_epoch keeps the first few).
    labels = pd.read_csv(splits / "train.csv")["label"].tolist()
    train_log = pd.read_csv(model_dir / TRAIN_LOG_FILE)
    assert train_log["epoch"].tolist() == list(range(EPOCHS + 1))
    for epoch in range(EPOCHS):
        batches = [_batches(labels, epoch, 2, rank) for rank in (0, 1)]
        assert {len(b) for rank in batches for b in rank} == {GLOBAL_BATCH // 2}
        ids = [{labels[i] for b in rank for i in b} for rank in batches]
        assert not ids[0] & ids[1]
        assert len(batches[0]) == len(batches[1]) > STEPS  # the run took the first STEPS
        assert train_log["steps"][epoch + 1] == STEPS
    assert train_log["lr"][1:].tolist() == pytest.approx([bot_lr(e) for e in (1, 2)], rel=1e-9)

    # The same config on 2 processes of one machine gives the same weights, bit for bit.
    files = [str(repo / p) for p in PARAMS]
    script = tmp_path / "two_processes.py"
    script.write_text(
        TWO_PROCESSES.format(params=files, splits=str(splits), out=str(tmp_path / "two"))
    )
    two = subprocess.run(
        [sys.executable, str(script)],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=240,
        env=pipeline_env(repo, OMP_NUM_THREADS="1"),
    )
    assert two.returncode == 0, two.stderr[-3000:]
    on_slurm = torch.load(model_dir / MODEL_FILE, weights_only=True)["state_dict"]
    local = torch.load(tmp_path / "two" / MODEL_FILE, weights_only=True)["state_dict"]
    assert on_slurm.keys() == local.keys()
    assert all(torch.equal(on_slurm[k], local[k]) for k in on_slurm)

    # The two-node checkpoint resumes in one process, with the global batch on one rank.
    (checkpoint,) = (model_dir / "checkpoints").glob("epoch*.ckpt")
    monkeypatch.chdir(repo)  # the manifests name images relative to the project
    torch.set_num_threads(1)
    cfg = load_params(
        files,
        [
            "train.num_nodes=1",
            "train.num_epochs=4",
            f"train.resume_training_checkpoint_path={checkpoint}",
        ],
    ).arch("tiny")
    train_arch(cfg, splits, tmp_path / "one", Runtime("cpu", 1, "32", "resumed in one process"))
    resumed = pd.read_csv(tmp_path / "one" / TRAIN_LOG_FILE)
    assert resumed["epoch"].tolist() == [0, 1, 2, 3, 4]
    assert resumed["steps"][1:].tolist() == [
        *train_log["steps"][1:],
        *(min(STEPS, len(_batches(labels, epoch, 1, 0))) for epoch in (2, 3)),
    ]
    assert resumed["lr"][1:].tolist() == pytest.approx([bot_lr(e) for e in (1, 2, 3, 4)], rel=1e-9)
