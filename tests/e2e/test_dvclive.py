"""Training visible to DVC and TensorBoard (issue 21): each epoch's loss terms, lr, images/s and
val mAP/R1 reach DVCLive's folder in the model folder (the train stage's DVC metric and plots)
and, on request, TensorBoard event files, row for row as ``train_log.csv`` has them. Two
`dvc exp run` experiments are read back through `dvc exp show` and `dvc plots diff`, and
Snakemake's run of the same job writes the same files. (A killed run's curves go on after its
resume: test_recovery.py.)"""

from __future__ import annotations

import copy
import json
import math
import shutil
import struct
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from support import deep_merge
from support.market_fixtures import make_tiny_market
from support.repo_copy import ROOT, SMALL, dvc, make_repo, run, snakemake
from support.tiny_run import TINY as RECOVERY_RUN

from reidpipe.data.split import make_split
from reidpipe.filenames import (
    DVCLIVE_DIR,
    DVCLIVE_METRICS_FILE,
    DVCLIVE_PLOTS_DIR,
    TENSORBOARD_DIR,
    TRAIN_LOG_FILE,
)
from reidpipe.params import load_params
from reidpipe.training.lightning_module import LOGGER_NAMES
from reidpipe.training.loggers import EpochDVCLiveLogger
from reidpipe.training.train import Runtime, train_arch

# The recovery tests' tiny run, validating every other epoch, with TensorBoard too
TINY = deep_merge(RECOVERY_RUN, {"train": {"validation_interval": 2, "loggers": ["tensorboard"]}})
TIMING = "images_per_s"


def curves(live: Path) -> dict[str, pd.DataFrame]:
    """DVCLive's plot files: the logger's name of each curve -> its (step, value) rows."""
    plots = live / DVCLIVE_PLOTS_DIR
    return {
        str(p.relative_to(plots).with_suffix("")): pd.read_csv(p, sep="\t")
        for p in sorted(plots.rglob("*.tsv"))
    }


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """The scalars of TensorBoard event files (TFRecord: a length, its CRC, the event, its CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_the_dvclive_logger_writes_its_folder_and_nothing_else(tmp_path, monkeypatch):
    """In a git checkout without DVC, as inside `dvc exp run`: no `dvc init`, no dvc.yaml, nothing
    staged in git; epoch 0 (the untrained model) stays at step 0."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "0" * 40)
    logger = EpochDVCLiveLogger(tmp_path / "model" / DVCLIVE_DIR)
    logger.log_metrics({"val/mAP": 0.5}, step=0)
    logger.log_metrics({"val/mAP": 0.75, "train/loss": 2.0}, step=2)
    logger.finalize("success")
    live = tmp_path / "model" / DVCLIVE_DIR
    assert {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if ".git" not in p.parts} == {
        "model",
        f"model/{DVCLIVE_DIR}",
        f"model/{DVCLIVE_DIR}/{DVCLIVE_METRICS_FILE}",
        f"model/{DVCLIVE_DIR}/plots",
        f"model/{DVCLIVE_DIR}/{DVCLIVE_PLOTS_DIR}",
        f"model/{DVCLIVE_DIR}/{DVCLIVE_PLOTS_DIR}/val",
        f"model/{DVCLIVE_DIR}/{DVCLIVE_PLOTS_DIR}/val/mAP.tsv",
        f"model/{DVCLIVE_DIR}/{DVCLIVE_PLOTS_DIR}/train",
        f"model/{DVCLIVE_DIR}/{DVCLIVE_PLOTS_DIR}/train/loss.tsv",
    }
    assert (
        live / DVCLIVE_PLOTS_DIR / "val" / "mAP.tsv"
    ).read_text() == "step\tmAP\n0\t0.5\n2\t0.75\n"
    assert json.loads((live / DVCLIVE_METRICS_FILE).read_text()) == {
        "val": {"mAP": 0.75},
        "train": {"loss": 2.0},
        "step": 2,
    }
    staged = subprocess.run(
        ["git", "status", "--porcelain"], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert not [line for line in staged.splitlines() if not line.startswith("??")], staged


def test_dvclive_and_tensorboard_get_the_rows_of_train_log(tmp_path):
    root = tmp_path / "data"
    make_tiny_market(root / "market", train_ids=8)
    make_split(root / "market", root / "splits", val_ids=2, seed=0)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    cfg = load_params([ROOT / "params.yaml", tmp_path / "tiny.yaml"]).arch("tiny")
    torch.set_num_threads(1)
    out = tmp_path / "model"
    train_arch(cfg, root / "splits", out, Runtime("cpu", 1, "32", "test"))

    log = pd.read_csv(out / TRAIN_LOG_FILE)
    expected = {
        name: [
            (int(epoch), float(value))
            for epoch, value in zip(log["epoch"], log[key])
            if not math.isnan(value)
        ]
        for key, name in LOGGER_NAMES.items()
        if key in log and log[key].notna().any()
    }
    assert expected["val/mAP"][0][0] == 0 and [e for e, _ in expected["val/mAP"]] == [0, 2, 3]
    live = curves(out / DVCLIVE_DIR)
    assert sorted(live) == sorted([*expected, f"train/{TIMING}"])
    for name, rows in expected.items():
        column = name.split("/")[1]
        assert list(zip(live[name]["step"], live[name][column])) == rows, name
    assert live[f"train/{TIMING}"]["step"].tolist() == [1, 2, 3]
    assert (live[f"train/{TIMING}"][TIMING] > 0).all()
    summary = json.loads((out / DVCLIVE_DIR / DVCLIVE_METRICS_FILE).read_text())
    assert summary["step"] == 3 and summary["val"]["mAP"] == log["val_mAP"].iloc[-1]

    board = tensorboard_scalars(out / TENSORBOARD_DIR)
    assert sorted(board) == sorted(live)
    for name, rows in expected.items():
        assert [step for step, _ in board[name]] == [step for step, _ in rows], name
        assert [v for _, v in board[name]] == pytest.approx([v for _, v in rows], rel=1e-6)
    assert not (out / "checkpoints" / "logs").exists(), "the live folders were moved into place"


@pytest.mark.slow
def test_two_dvc_experiments_show_their_val_metrics_and_curves_and_snakemake_agrees(tmp_path):
    """Two `dvc exp run -S model.feat_dim=...` of the train stage (one arch, two short epochs),
    read back; then Snakemake reruns the second one's training job: the same files but the
    throughput."""
    small = copy.deepcopy(SMALL)
    small["pipeline"] = {"archs": ["resnet_demo"]}
    small["train"]["max_steps_per_epoch"] = 2
    repo = make_repo(tmp_path, small)
    live = Path("models") / "resnet_demo" / DVCLIVE_DIR
    dims = {"narrow": 16, "wide": 24}
    for name, dim in dims.items():
        run(repo, *dvc("exp", "run", "-n", name, "-S", f"model.feat_dim={dim}", "train"))

    shown = json.loads(run(repo, *dvc("exp", "show", "--json")).stdout)
    experiments = {
        rev["name"]: rev["data"]
        for row in shown
        for exp in row.get("experiments") or []
        for rev in exp["revs"]
    }
    assert set(dims) <= set(experiments)
    finals = {}
    for name, dim in dims.items():
        data = experiments[name]
        assert data["params"]["params.yaml"]["data"]["model"]["feat_dim"] == dim
        found = data["metrics"][str(live / DVCLIVE_METRICS_FILE)]
        assert "data" in found, f"{name}: the experiment holds no training metrics: {found}"
        summary = found["data"]
        assert summary["step"] == small["train"]["num_epochs"]
        assert 0 < summary["val"]["mAP"] <= 1 and 0 <= summary["val"]["rank1"] <= 1
        finals[name] = summary["val"]

    plots = json.loads(run(repo, *dvc("plots", "diff", "--json", *dims)).stdout)["data"]
    val_map = plots[str(live / DVCLIVE_PLOTS_DIR / "val" / "mAP.tsv")][0]
    assert set(val_map["revisions"]) == set(dims)
    points = val_map["content"]["data"]["values"]
    for name in dims:
        steps = [int(p["step"]) for p in points if p["rev"] == name]
        assert steps == list(range(small["train"]["num_epochs"] + 1))  # epoch 0: untrained
        last = next(p for p in points if p["rev"] == name and int(p["step"]) == steps[-1])
        assert float(last["mAP"]) == pytest.approx(finals[name]["mAP"])
    for curve in ("loss", "lr", TIMING):
        revisions = plots[str(live / DVCLIVE_PLOTS_DIR / "train" / f"{curve}.tsv")][0]["revisions"]
        assert set(revisions) == set(dims), curve

    by_dvc = curves(repo / live)  # the workspace holds the last experiment's outputs
    shutil.rmtree(repo / live.parent / "checkpoints")  # Snakemake trains afresh
    run(repo, *snakemake("--forcerun", "train", str(live / DVCLIVE_METRICS_FILE)))
    by_snakemake = curves(repo / live)
    by_dvc.pop(f"train/{TIMING}")
    by_snakemake.pop(f"train/{TIMING}")
    assert by_dvc.keys() == by_snakemake.keys()
    for name, frame in by_dvc.items():
        pd.testing.assert_frame_equal(frame, by_snakemake[name], check_exact=True, obj=name)
