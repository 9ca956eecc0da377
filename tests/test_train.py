"""The train stage end to end on a tiny Market-layout dataset of real JPEGs (CPU)."""

import logging
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from market_fixtures import make_tiny_market

from reidpipe.data.split import make_split
from reidpipe.errors import ReidpipeError
from reidpipe.params import load_params
from reidpipe.training.model import load_trained_model
from reidpipe.training.train import Runtime, pretrained_weights, resolve_runtime, train_arch

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "import sys; from reidpipe.cli import main; sys.exit(main())"]
TINY = {
    "pipeline": {"archs": ["tiny"]},
    "model": {"backbone": "resnet18", "pretrain_choice": "", "input_width": 16,
              "input_height": 32, "feat_dim": 32, "metric_loss_type": "triplet_center"},
    "dataset": {"batch_size": 4, "val_batch_size": 16, "num_workers": 0, "padding": 2,
                "num_instances": 2},
    "train": {"num_epochs": 2, "checkpoint_interval": 1, "validation_interval": 1,
              "num_gpus": 0, "optim": {"lr_steps": [1], "warmup_epochs": 1}},
    "archs": {"tiny": {}},
}


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    make_tiny_market(root / "market", train_ids=10)
    make_split(root / "market", root / "splits", val_ids=2, seed=0)
    return root / "splits"


def params_file(tmp_path, **train):
    data = yaml.safe_load(yaml.safe_dump(TINY))
    data["train"].update(train)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def tiny_cfg(tmp_path, **train):
    return load_params([ROOT / "params.yaml", params_file(tmp_path, **train)]).arch("tiny")


def test_train_writes_model_log_and_config_and_rerun_is_a_no_op(tmp_path, splits, caplog):
    torch.set_num_threads(1)
    caplog.set_level(logging.INFO, logger="reidpipe")
    cfg = tiny_cfg(tmp_path)
    out = tmp_path / "model"
    last = train_arch(cfg, splits, out, Runtime("cpu", 1, "32", "test"))
    log = pd.read_csv(out / "train_log.csv")
    assert log["epoch"].tolist() == [0, 1, 2]  # 0: the untrained model's val mAP
    trained = log[log["epoch"] > 0]
    assert trained[["loss", "id_loss", "triplet_loss", "center_loss", "val_mAP"]].notna().all().all()
    assert log["val_mAP"].notna().all()
    assert 0 < last["val_mAP"] <= 1
    net, saved_cfg = load_trained_model(out)
    assert not net.training and saved_cfg == cfg
    assert net(torch.rand(3, 3, 32, 16)).shape == (3, 32)
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["model"]["feat_dim"] == 32 and written["pretrained_weights"] == "none"
    stamp = (out / "model.pt").stat().st_mtime_ns
    assert train_arch(cfg, splits, out, Runtime("cpu", 1, "32", "test")) == {}
    assert "up to date" in caplog.text
    assert (out / "model.pt").stat().st_mtime_ns == stamp


def test_killed_run_resumes_from_its_last_checkpoint(tmp_path, splits):
    epochs = 6
    params = params_file(tmp_path, num_epochs=epochs)
    out = tmp_path / "model"
    cmd = CLI + ["train", "--params", str(ROOT / "params.yaml"), str(params), "--arch", "tiny",
                 "--splits", str(splits), "--out", str(out)]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    deadline = time.monotonic() + 120
    while not list((out / "checkpoints").glob("epoch*.ckpt")):
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not (out / "model.pt").exists()
    done = pd.read_csv(out / "train_log.csv")["epoch"].max() if (out / "train_log.csv").exists() else 0
    assert done < epochs

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False,
                           env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming from" in rerun.stderr
    trained = [int(n) for n in re.findall(r"^reidpipe train: epoch (\d+)/", rerun.stderr,
                                          re.MULTILINE)]
    assert trained[0] > 1 and trained[-1] == epochs
    assert pd.read_csv(out / "train_log.csv")["epoch"].tolist() == list(range(epochs + 1))
    assert torch.load(out / "model.pt", weights_only=True)["epochs"] == epochs


def test_runtime_falls_back_to_cpu_with_a_note(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr("reidpipe.devices.count_gpus", lambda: 0)  # this machine has no GPU
    runtime = resolve_runtime(tiny_cfg(tmp_path, num_gpus=1))
    assert (runtime.accelerator, runtime.devices, runtime.precision) == ("cpu", 1, "32")
    assert "CPU" in runtime.note
    with pytest.raises(ReidpipeError, match="16-mixed"):
        resolve_runtime(tiny_cfg(tmp_path, num_gpus=0, precision="16-mixed"))


def test_training_without_held_out_identities_skips_validation(tmp_path, splits):
    make_split(splits.parent / "market", tmp_path / "splits", val_ids=0, seed=0)
    cfg = tiny_cfg(tmp_path, num_epochs=1)
    train_arch(cfg, tmp_path / "splits", tmp_path / "model", Runtime("cpu", 1, "32", "test"))
    log = pd.read_csv(tmp_path / "model" / "train_log.csv")
    assert log["epoch"].tolist() == [1] and log["val_mAP"].isna().all()


def test_slurm_single_task_job_lets_lightning_launch_the_ranks():
    from lightning.pytorch.plugins.environments import LightningEnvironment

    from reidpipe.training.train import cluster_plugins

    assert cluster_plugins(2, 1, env={}) == []
    assert cluster_plugins(2, 1, env={"SLURM_NTASKS": "2"}) == []
    plugins = cluster_plugins(2, 1, env={"SLURM_NTASKS": "1"})
    assert len(plugins) == 1 and isinstance(plugins[0], LightningEnvironment)
    assert cluster_plugins(4, 2, env={"SLURM_NTASKS": "8"}) == []


def test_clip_grad_norm_bounds_the_update(tmp_path, splits):
    """Same seed, same data: a near-zero clip norm must change what SGD learns (CPU runs are
    deterministic, so a clip that does nothing would give identical weights)."""
    torch.set_num_threads(1)
    weights = {}
    for clip in (0.0, 1e-9):
        optim = {"name": "SGD", "base_lr": 0.1, "warmup_epochs": 0, "lr_steps": [5],
                 "momentum": 0.0}
        (tmp_path / f"clip{clip}").mkdir()
        cfg = tiny_cfg(tmp_path / f"clip{clip}", num_epochs=1, clip_grad_norm=clip,
                       max_steps_per_epoch=2, optim=optim)
        out = tmp_path / f"clip{clip}" / "model"
        train_arch(cfg, splits, out, Runtime("cpu", 1, "32", "test"))
        weights[clip] = torch.load(out / "model.pt", weights_only=False)["state_dict"][
            "backbone.conv1.weight"]
    assert not torch.allclose(weights[0.0], weights[1e-9])


def test_config_records_the_exact_pretrained_weights():
    import dataclasses

    import timm

    from reidpipe.params import ModelParams

    bot = ModelParams(backbone="resnet50.tv_in1k", pretrain_choice="imagenet")
    backbone = timm.create_model(bot.backbone, pretrained=False, num_classes=0)
    assert pretrained_weights(bot, backbone) == "timm:resnet50.tv_in1k"
    # a bare name resolves to timm's default tag, which is recorded too
    plain = dataclasses.replace(bot, backbone="resnet18")
    tag = timm.create_model("resnet18", pretrained=False).pretrained_cfg["tag"]
    assert pretrained_weights(plain, timm.create_model("resnet18", pretrained=False)) == \
        f"timm:resnet18.{tag}"
    own = ModelParams(pretrain_choice="self", pretrained_model_path="/w/solider.pth")
    assert pretrained_weights(own, backbone) == "/w/solider.pth"
