"""The recovery procedure the README gives, through Snakemake itself: after ``kill -9`` of the
whole run mid-training, ``snakemake --unlock`` and ``snakemake --rerun-incomplete`` finish with
the outputs of an uninterrupted run (same weights, same log but for the timings); a second run
while one is training is refused without touching it, and a run stopped by SIGTERM resumes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from support.repo_copy import SMALL, make_repo, pipeline_env, run, snakemake

from reidpipe.filenames import MODEL_FILE, OUTPUT_MARKER_FILE, TRAIN_CONFIG_FILE, TRAIN_LOG_FILE

pytestmark = pytest.mark.slow

ARCH = "resnet_demo"
EPOCHS = 3
TARGET = f"models/{ARCH}/{MODEL_FILE}"


def test_kill_9_then_rerun_incomplete_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    # No DataLoader worker processes: their augmentation draws depend on their scheduling, so
    # only without them is any run (interrupted or not) reproducible bit for bit.
    overrides = dict(
        SMALL,
        pipeline={"archs": [ARCH]},
        dataset=dict(SMALL["dataset"], num_workers=0),
        train={
            "num_epochs": EPOCHS,
            "checkpoint_interval": 1,
            "validation_interval": 1,
            "max_steps_per_epoch": 3,
        },
        archs={ARCH: {"model": {"backbone": "test_resnet", "last_stride": 2}}},
    )
    repo = make_repo(tmp_path, overrides)
    models = repo / "models" / ARCH
    output = tmp_path / "snakemake.txt"
    with open(output, "w") as handle:
        first = subprocess.Popen(
            snakemake(TARGET),
            cwd=repo,
            env=pipeline_env(repo),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 600
    while not list((models / "checkpoints").glob("epoch*.ckpt")):  # not a temporary mid-write
        assert first.poll() is None, output.read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=60)
    assert not {TRAIN_LOG_FILE, TRAIN_CONFIG_FILE, MODEL_FILE} & {p.name for p in models.iterdir()}

    refused = run(repo, *snakemake(TARGET), check=False)
    assert refused.returncode != 0  # a stale lock or incomplete outputs: the README's procedure
    run(repo, *snakemake("--unlock"))
    run(repo, *snakemake(TARGET, "--rerun-incomplete"))
    assert "resuming from" in (repo / "logs" / f"train_{ARCH}.log").read_text()
    assert [p.name for p in (models / "checkpoints").glob("*.ckpt")] == [
        f"epoch{EPOCHS - 1:03d}.ckpt"
    ]
    # dot-named: a temporary, but for the markers of a finished output folder (reidpipe's, and
    # Snakemake's in a directory output)
    finished = {OUTPUT_MARKER_FILE, ".snakemake_timestamp"}
    assert not [p for p in models.rglob(".*") if p.name not in finished], "temporaries left behind"

    # The uninterrupted run: the same job, in the same environment, from nothing.
    shutil.move(models, repo / "models" / "recovered")
    run(repo, *snakemake(TARGET))
    recovered = repo / "models" / "recovered"
    got = torch.load(recovered / MODEL_FILE, weights_only=True)
    want = torch.load(models / MODEL_FILE, weights_only=True)
    assert got["epochs"] == want["epochs"] == EPOCHS
    for key, value in want["state_dict"].items():
        assert torch.equal(got["state_dict"][key], value), key
    pd.testing.assert_frame_equal(
        *(pd.read_csv(d / TRAIN_LOG_FILE).drop(columns="seconds") for d in (recovered, models))
    )


def group_processes(group: int) -> list[tuple[str, str]]:
    """State letter (T: stopped) and command line of each live process in a process group."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):  # the process ended meanwhile
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            found.append((fields[0], command))
    return found


def test_kill_during_training_resumes_and_concurrent_runs_are_refused(tmp_path: Path) -> None:
    slow = dict(
        SMALL,
        train={
            "num_epochs": 4,
            "checkpoint_interval": 1,
            "validation_interval": 4,
            "max_steps_per_epoch": 4,
        },
        pipeline={"archs": [ARCH]},
    )
    repo = make_repo(tmp_path, slow)
    first = subprocess.Popen(
        snakemake(TARGET),
        cwd=repo,
        env=pipeline_env(repo),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    checkpoints = repo / "models" / ARCH / "checkpoints"
    deadline = time.monotonic() + 600
    while not list(checkpoints.glob("epoch*.ckpt")):  # not a dot-named temporary mid-write
        assert first.poll() is None, first.stdout.read()
        assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.05)
    # The first run is frozen (SIGSTOP to its whole process group) while the others try: it is
    # mid-training however fast this machine trains, and holds its lock and incomplete outputs.
    os.killpg(first.pid, signal.SIGSTOP)
    try:
        assert not (repo / TARGET).exists(), "training ended before it could be stopped"
        deadline = time.monotonic() + 30
        while {state for state, _ in group_processes(first.pid)} != {"T"}:
            assert time.monotonic() < deadline, group_processes(first.pid)
            time.sleep(0.05)
        assert any(" train " in command for _, command in group_processes(first.pid))
        # A plain second run stops at the running job's incomplete outputs or at Snakemake's
        # lock (which one it meets first depends on Snakemake's version); one that insists on
        # rerunning them is stopped by the lock. Neither touches the running job.
        second = run(repo, *snakemake(TARGET), check=False)
        refusal = second.stdout + second.stderr
        assert second.returncode != 0 and ("incomplete" in refusal or "cannot be locked" in refusal)
        forced = run(repo, *snakemake(TARGET, "--rerun-incomplete"), check=False)
        assert forced.returncode != 0 and "cannot be locked" in forced.stdout + forced.stderr
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    assert first.poll() is None

    os.killpg(first.pid, signal.SIGTERM)
    first.wait(timeout=120)
    assert not (repo / TARGET).exists(), "a killed training left a model behind"

    run(repo, *snakemake(TARGET))
    log = (repo / "logs" / f"train_{ARCH}.log").read_text()
    assert "resuming from" in log
    with open(repo / "models" / ARCH / TRAIN_LOG_FILE) as handle:
        epochs = [line.split(",")[0] for line in handle.read().splitlines()[1:]]
    assert epochs[-1] == "4"
