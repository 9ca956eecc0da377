"""The train stage end to end on a tiny Market-layout dataset of real JPEGs (CPU)."""

import logging
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from support import ROOT, deep_merge
from support.market_fixtures import make_tiny_market
from support.tiny_run import EVERY_EPOCH, tiny_arch, tiny_params

from reidpipe.data.manifest import manifest_path
from reidpipe.data.split import make_split
from reidpipe.errors import ReidpipeError
from reidpipe.filenames import MODEL_FILE, TRAIN_LOG_FILE
from reidpipe.training.model import load_trained_model
from reidpipe.training.train import (
    CHECKPOINT_DIR,
    FINGERPRINT_FILE,
    Runtime,
    fingerprint,
    pretrained_weights,
    resolve_runtime,
    train_arch,
)

CLI = [sys.executable, "-c", "import sys; from reidpipe.cli import main; sys.exit(main())"]
# A full-width resnet18 for 2 whole epochs
TINY = tiny_params(
    model={"backbone": "resnet18", "metric_loss_type": "triplet_center"},
    train={"num_epochs": 2, **EVERY_EPOCH, "optim": {"lr_steps": [1], "warmup_epochs": 1}},
)


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    make_tiny_market(root / "market", train_ids=10)
    make_split(root / "market", root / "splits", val_ids=2, seed=0)
    return root / "splits"


def params_file(tmp_path, **train):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(deep_merge(TINY, {"train": train})))
    return path


def tiny_cfg(tmp_path, **train):
    return tiny_arch(tmp_path, TINY, **train)


def test_train_writes_model_log_and_config_and_rerun_is_a_no_op(tmp_path, splits, caplog):
    caplog.set_level(logging.INFO, logger="reidpipe")
    cfg = tiny_cfg(tmp_path, num_threads=1)
    out = tmp_path / "model"
    last = train_arch(cfg, splits, out, Runtime("cpu", 1, "32", "test"))
    log = pd.read_csv(out / "train_log.csv")
    assert log["epoch"].tolist() == [0, 1, 2]  # 0: the untrained model's val mAP
    trained = log[log["epoch"] > 0]
    assert (
        trained[["loss", "id_loss", "triplet_loss", "center_loss", "val_mAP"]].notna().all().all()
    )
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
    cmd = CLI + [
        "train",
        "--params",
        str(ROOT / "params.yaml"),
        str(params),
        "--arch",
        "tiny",
        "--splits",
        str(splits),
        "--out",
        str(out),
    ]
    first = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    deadline = time.monotonic() + 120
    while not list((out / "checkpoints").glob("epoch*.ckpt")):
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not (out / "model.pt").exists()
    done = (
        pd.read_csv(out / "train_log.csv")["epoch"].max() if (out / "train_log.csv").exists() else 0
    )
    assert done < epochs

    rerun = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming from" in rerun.stderr
    trained = [
        int(n) for n in re.findall(r"^reidpipe train: epoch (\d+)/", rerun.stderr, re.MULTILINE)
    ]
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
    """One SGD step without momentum or weight decay moves the trained parameters by lr times
    the clipped gradient: ||dw|| is at most lr x clip_grad_norm, and equal to it when the whole
    gradient is larger, as the unclipped step shows it is. (A run at lr 1e-30 gives the starting
    weights: same seed, and a step that small moves no float32 weight.)"""
    lr, clip = 0.1, 0.1
    optim = {
        "name": "SGD",
        "warmup_epochs": 0,
        "lr_steps": [5],
        "momentum": 0.0,
        "weight_decay": 0.0,
        "weight_decay_bias": 0.0,
        "bias_lr_factor": 1.0,
    }
    weights = {}
    for name, base_lr, clip_norm in (
        ("start", 1e-30, 0.0),
        ("clipped", lr, clip),
        ("unclipped", lr, 0.0),
    ):
        (tmp_path / name).mkdir()
        cfg = tiny_cfg(
            tmp_path / name,
            num_epochs=1,
            max_steps_per_epoch=1,
            num_threads=1,
            clip_grad_norm=clip_norm,
            optim={**optim, "base_lr": base_lr},
        )
        out = tmp_path / name / "model"
        train_arch(cfg, splits, out, Runtime("cpu", 1, "32", "test"))
        assert pd.read_csv(out / TRAIN_LOG_FILE)["lr"].iloc[-1] == base_lr
        net, _ = load_trained_model(out)
        weights[name] = {k: p.detach() for k, p in net.named_parameters() if p.requires_grad}

    def step_norm(run: str) -> float:
        return float(
            torch.sqrt(
                sum(
                    ((weights[run][k].double() - w.double()) ** 2).sum()
                    for k, w in weights["start"].items()
                )
            )
        )

    assert step_norm("unclipped") > 2 * lr * clip  # the gradient is larger than the clip norm
    assert step_norm("clipped") == pytest.approx(lr * clip, rel=1e-3)


def test_changed_config_or_manifests_retrain_and_foreign_checkpoints_are_discarded(
    tmp_path, splits, caplog
):
    """A finished run is done while only runtime keys change; a changed config or changed
    manifests train again from scratch: the checkpoints of the other config are discarded,
    not resumed (the network has the same shapes, so resuming would be possible and wrong)."""
    caplog.set_level(logging.INFO, logger="reidpipe")
    runtime = Runtime("cpu", 1, "32", "test")
    out = tmp_path / "model"
    optim = {"lr_steps": [1], "warmup_epochs": 1}

    def train(name: str, manifests: Path, **train_keys) -> tuple[dict, dict]:
        (tmp_path / name).mkdir()
        cfg = tiny_cfg(tmp_path / name, max_steps_per_epoch=2, num_threads=1, **train_keys)
        caplog.clear()
        last = train_arch(cfg, manifests, out, runtime)
        saved = torch.load(out / MODEL_FILE, weights_only=True)
        assert saved["fingerprint"] == fingerprint(cfg, manifests)
        assert (out / CHECKPOINT_DIR / FINGERPRINT_FILE).read_text().strip() == saved["fingerprint"]
        return last, saved

    _, first = train("first", splits, optim=optim)
    assert train("runtime_key", splits, optim=optim, num_gpus=1)[0] == {}
    assert "up to date" in caplog.text and "starting afresh" not in caplog.text

    last, other_lr = train("other_lr", splits, optim={**optim, "base_lr": 1e-3})
    assert "starting afresh" in caplog.text and "resuming from" not in caplog.text
    assert pd.read_csv(out / TRAIN_LOG_FILE)["epoch"].tolist() == [0, 1, 2] and last["epoch"] == 2
    assert not torch.equal(
        first["state_dict"]["classifier.weight"], other_lr["state_dict"]["classifier.weight"]
    )

    fewer = tmp_path / "fewer_images"
    shutil.copytree(splits, fewer)
    train_csv = pd.read_csv(manifest_path(fewer, "train"))
    train_csv.drop(index=train_csv.index[-1]).to_csv(manifest_path(fewer, "train"), index=False)
    train("other_manifests", fewer, optim={**optim, "base_lr": 1e-3})
    assert "starting afresh" in caplog.text and "resuming from" not in caplog.text
    assert pd.read_csv(out / TRAIN_LOG_FILE)["epoch"].tolist() == [0, 1, 2]


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
    assert (
        pretrained_weights(plain, timm.create_model("resnet18", pretrained=False))
        == f"timm:resnet18.{tag}"
    )
    own = ModelParams(pretrain_choice="self", pretrained_model_path="/w/solider.pth")
    assert pretrained_weights(own, backbone) == "/w/solider.pth"
