"""Interrupted training always recovers (issue 13): a run killed with SIGKILL at each point of its
life leaves no declared output behind, and a rerun ends with exactly the outputs of an
uninterrupted run (same weights bit for bit, same log but for the timings, only the newest
checkpoint kept). Unreadable checkpoints fall back to the newest readable older one.

The kills are exact: the run is a forked copy of this process (torch is imported once) whose
functions are wrapped to SIGKILL it at the chosen point. SIGINT and SIGTERM stop it with exit
130/143 and one line, and leave it as recoverable as a kill."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from support import ROOT
from support.forked import kill_self, run_forked
from support.market_fixtures import make_tiny_market
from support.tiny_run import EPOCHS, TINY, tiny_arch

from reidpipe.cli import main
from reidpipe.data.split import make_split
from reidpipe.errors import ReidpipeError
from reidpipe.filenames import (
    DVCLIVE_DIR,
    MODEL_FILE,
    OUTPUT_MARKER_FILE,
    TRAIN_CONFIG_FILE,
    TRAIN_LOG_FILE,
)
from reidpipe.params import load_params
from reidpipe.training import checkpoints, train
from reidpipe.training.lightning_module import ReidModule
from reidpipe.training.sampler import IdentityBatchSampler
from reidpipe.training.train import Runtime, train_arch

STEPS_PER_EPOCH = 2
OUTPUTS = {TRAIN_LOG_FILE, TRAIN_CONFIG_FILE, MODEL_FILE, DVCLIVE_DIR}
CPU = Runtime("cpu", 1, "32", "test")


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("recovery")
    make_tiny_market(root / "market", train_ids=8)
    make_split(root / "market", root / "splits", val_ids=2, seed=0)
    return root / "splits"


@pytest.fixture(scope="module")
def reference(splits, tmp_path_factory) -> Path:
    """The outputs of an uninterrupted run."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("reference") / "model"
    train_arch(tiny_arch(out.parent, TINY), splits, out, CPU)
    return out


def visible(folder: Path) -> set[str]:
    """Entries of ``folder`` other than the dot-named temporaries a kill can leave mid-write."""
    return {p.name for p in folder.iterdir() if not p.name.startswith(".")}


def assert_same_outputs(out: Path, reference: Path) -> None:
    assert visible(out) == OUTPUTS | {train.CHECKPOINT_DIR}
    assert {p.name for p in (out / train.CHECKPOINT_DIR).iterdir()} == {
        train.FINGERPRINT_FILE,
        f"epoch{EPOCHS - 1:03d}.ckpt",
    }, "only the newest checkpoint stays"
    got = torch.load(out / MODEL_FILE, weights_only=True)
    want = torch.load(reference / MODEL_FILE, weights_only=True)
    assert got["epochs"] == want["epochs"] == EPOCHS
    assert got["state_dict"].keys() == want["state_dict"].keys()
    for key, value in want["state_dict"].items():
        assert torch.equal(got["state_dict"][key], value), key
    logs = [pd.read_csv(d / TRAIN_LOG_FILE).drop(columns="seconds") for d in (out, reference)]
    pd.testing.assert_frame_equal(*logs)
    assert (out / TRAIN_CONFIG_FILE).read_text() == (reference / TRAIN_CONFIG_FILE).read_text()
    assert live_curves(out) == live_curves(reference), "the loggers go on from the checkpoint"


def live_curves(model_dir: Path) -> dict[str, object]:
    """DVCLive's files by path, the throughput (a timing) left out."""
    live = model_dir / DVCLIVE_DIR
    curves: dict[str, object] = {
        str(p.relative_to(live)): p.read_text()
        for p in sorted(live.rglob("*.tsv"))
        if p.stem != "images_per_s"
    }
    summary = json.loads((live / "metrics.json").read_text())
    del summary["train"]["images_per_s"]
    return {**curves, "metrics.json": summary}


def run_killed(cfg, splits: Path, out: Path, arm: Callable[[], None]) -> None:
    """Train in a forked child that ``arm`` set up to SIGKILL itself; assert it died that way."""

    def child() -> None:
        arm()
        train_arch(cfg, splits, out, CPU)

    code = run_forked(child, out.parent / "stderr.txt")
    assert code == -signal.SIGKILL, f"the run was not killed (exit {code})"


def kill_at_training_step(n: int, signum: int = signal.SIGKILL) -> Callable[[], None]:
    def arm() -> None:
        original = ReidModule.training_step
        calls = []

        def step(self, batch, batch_idx):
            calls.append(batch_idx)
            if len(calls) == n:
                kill_self(signum)
            return original(self, batch, batch_idx)

        ReidModule.training_step = step

    return arm


def kill_after_checkpoint(epoch: int) -> Callable[[], None]:
    def arm() -> None:
        original = checkpoints.AtomicCheckpointIO.save_checkpoint

        def save(self, checkpoint, path, storage_options=None):
            original(self, checkpoint, path, storage_options)
            if checkpoint["epoch"] == epoch:
                kill_self()

        checkpoints.AtomicCheckpointIO.save_checkpoint = save

    return arm


def half_written(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def kill_while_writing_checkpoint(epoch: int) -> Callable[[], None]:
    """SIGKILL once half of the checkpoint of ``epoch`` is on disk."""

    def arm() -> None:
        original = TorchCheckpointIO.save_checkpoint

        def save(self, checkpoint, path, storage_options=None):
            original(self, checkpoint, path, storage_options)
            if checkpoint["epoch"] == epoch:
                half_written(Path(path))
                kill_self()

        TorchCheckpointIO.save_checkpoint = save

    return arm


def kill_while_writing_model() -> None:
    """SIGKILL once half of the final model file is on disk."""
    original = torch.save

    def save(obj, f, *args, **kwargs):
        original(obj, f, *args, **kwargs)
        if isinstance(f, (str, os.PathLike)) and "model.pt" in Path(f).name:
            half_written(Path(f))
            kill_self()

    torch.save = save


KILL_POINTS = {
    "before the first checkpoint": kill_at_training_step(STEPS_PER_EPOCH),
    "between checkpoints": kill_at_training_step(STEPS_PER_EPOCH + 1),
    "while a checkpoint is written": kill_while_writing_checkpoint(1),
    "after the last checkpoint": kill_after_checkpoint(EPOCHS - 1),
    "while the model is written": kill_while_writing_model,
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_killed_run_leaves_no_output_and_a_rerun_matches_an_uninterrupted_one(
    point, tmp_path, splits, reference
):
    cfg = tiny_arch(tmp_path, TINY)
    out = tmp_path / "model"
    run_killed(cfg, splits, out, KILL_POINTS[point])
    assert not OUTPUTS & visible(out), f"killed {point}, a declared output was left behind"
    train_arch(cfg, splits, out, CPU)
    assert_same_outputs(out, reference)
    assert not [p for p in out.rglob(".*") if p.name != OUTPUT_MARKER_FILE], (
        "temporaries of the killed run are cleared"
    )


def test_a_truncated_newest_checkpoint_falls_back_to_the_older_one(
    tmp_path, splits, reference, caplog
):
    cfg = tiny_arch(tmp_path, TINY)
    out = tmp_path / "model"
    run_killed(cfg, splits, out, kill_after_checkpoint(0))
    ckpt_dir = out / train.CHECKPOINT_DIR
    older = ckpt_dir / "epoch000.ckpt"
    newest = ckpt_dir / "epoch001.ckpt"
    newest.write_bytes(older.read_bytes()[: older.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="reidpipe"):
        train_arch(cfg, splits, out, CPU)
    text = caplog.text
    assert f"{newest} cannot be resumed from" in text and "truncated" in text
    assert f"resuming from {older}, the newest readable older checkpoint" in text
    assert_same_outputs(out, reference)


def test_a_corrupt_only_checkpoint_means_training_afresh(tmp_path, splits, reference, caplog):
    cfg = tiny_arch(tmp_path, TINY)
    out = tmp_path / "model"
    run_killed(cfg, splits, out, kill_after_checkpoint(0))
    only = out / train.CHECKPOINT_DIR / "epoch000.ckpt"
    data = bytearray(only.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(
        b ^ 0xFF for b in data[middle : middle + 64]
    )  # loads, bad CRC
    only.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="reidpipe"):
        train_arch(cfg, splits, out, CPU)
    assert f"{only} cannot be resumed from" in caplog.text and "CRC" in caplog.text
    assert "training starts afresh" in caplog.text
    assert_same_outputs(out, reference)


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"", "empty (0 bytes)"),
        (b"not a checkpoint at all", "truncated or not a checkpoint"),
        (None, "does not exist"),
    ],
)
def test_an_unusable_configured_checkpoint_is_one_clear_error(tmp_path, splits, content, fragment):
    path = tmp_path / "start.ckpt"
    if content is not None:
        path.write_bytes(content)
    cfg = tiny_arch(tmp_path, TINY, resume_training_checkpoint_path=str(path))
    with pytest.raises(ReidpipeError, match="resume_training_checkpoint_path") as error:
        train_arch(cfg, splits, tmp_path / "model", CPU)
    assert str(path) in str(error.value) and fragment in str(error.value)
    assert not OUTPUTS & visible(tmp_path / "model")


def test_a_configured_checkpoint_of_another_network_is_named_as_such(tmp_path, splits, reference):
    shutil.copy(
        reference / train.CHECKPOINT_DIR / f"epoch{EPOCHS - 1:03d}.ckpt", tmp_path / "other.ckpt"
    )
    cfg = tiny_arch(tmp_path, TINY, resume_training_checkpoint_path=str(tmp_path / "other.ckpt"))
    cfg.model.feat_dim = 16  # another embedding width: the checkpoint's tensors do not fit
    with pytest.raises(ReidpipeError, match="another network than this arch's model"):
        train_arch(cfg, splits, tmp_path / "model", CPU)


@pytest.mark.parametrize(
    "signum, workers",
    [(signal.SIGINT, 0), (signal.SIGTERM, 1)],
    ids=["SIGINT", "SIGTERM with a worker process"],
)
def test_sigint_and_sigterm_stop_with_one_line_and_stay_recoverable(
    signum, workers, tmp_path, splits, reference, monkeypatch
):
    """Ctrl-C reaches the whole process group (DataLoader workers too); SIGTERM is what Slurm and
    Snakemake send. Exit 128 + signal, one line, no output, and the rerun finishes the run."""
    cfg_file = tmp_path / "tiny.yaml"
    tiny_arch(tmp_path, TINY)  # writes cfg_file
    out = tmp_path / "model"
    argv = [
        "train",
        "--params",
        str(ROOT / "params.yaml"),
        str(cfg_file),
        "--set",
        f"dataset.num_workers={workers}",
        "--arch",
        "tiny",
        "--splits",
        str(splits),
        "--out",
        str(out),
    ]

    def child() -> int:
        kill_at_training_step(STEPS_PER_EPOCH + 1, signum)()
        return main(argv)

    code = run_forked(child, tmp_path / "stderr.txt", own_group=True)
    err = (tmp_path / "stderr.txt").read_text()
    assert code == 128 + signum, err
    assert (
        err.strip().splitlines()[-1]
        == f"reidpipe train: interrupted by {signal.Signals(signum).name}"
    ), err
    assert "Traceback" not in err
    assert not OUTPUTS & visible(out)

    seen = []  # the identities of each batch the rerun trains on
    original = ReidModule.training_step
    monkeypatch.setattr(
        ReidModule,
        "training_step",
        lambda self, batch, index: (seen.append(batch[1].tolist()), original(self, batch, index))[
            1
        ],
    )
    assert main(argv) == 0
    labels = pd.read_csv(splits / "train.csv")["label"].tolist()
    expected = []
    for epoch in range(1, EPOCHS):  # resumed from the checkpoint of epoch 0
        sampler = IdentityBatchSampler(
            labels, 4, 2, seed=load_params([ROOT / "params.yaml", cfg_file]).arch("tiny").train.seed
        )
        sampler.set_epoch(epoch)
        expected += [[labels[i] for i in batch] for batch in sampler][:STEPS_PER_EPOCH]
    assert seen == expected, "the resumed epochs draw the sampler's batches of their own epoch"
    if workers == 0:
        assert_same_outputs(out, reference)
    else:  # worker processes' augmentation draws depend on their scheduling: not bit-exact
        assert pd.read_csv(out / TRAIN_LOG_FILE)["epoch"].tolist() == list(range(EPOCHS + 1))
