"""A temporary copy of the repository for end-to-end runs (Snakemake, DVC, Slurm), and the
commands that drive it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from support import ROOT


def copy_working_tree(dest: Path) -> Path:
    """The working tree without git-ignored paths (data, results, venv): tracked files and new
    ones not yet committed, so that the copy runs the same package as the checkout."""
    names = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def pipeline_env(repo: Path, **extra: str) -> dict[str, str]:
    """The venv's commands on PATH and the copy's package first on the import path."""
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(repo))
    env.update(extra)
    return env


# The demo, shrunk so that the whole DAG runs in a few minutes of test time.
SMALL = {
    "data": {"synthetic_ids": 12, "dataset_dir": "data/e2e-synthetic"},
    "split": {"val_ids": 2},
    "dataset": {"batch_size": 16, "val_batch_size": 32},
    "train": {
        "num_epochs": 2,
        "checkpoint_interval": 1,
        "validation_interval": 1,
        "max_steps_per_epoch": 3,
    },
    "export": {"parity_batch_sizes": [1, 3], "int8_calibration_images": 16},
    "report": {"sampled_queries": 2},
    "archs": {"swin_demo": {"train": {"num_epochs": 2}}},
}
GIT_ENV = {
    "GIT_AUTHOR_NAME": "reidpipe tests",
    "GIT_AUTHOR_EMAIL": "tests@reidpipe.invalid",
    "GIT_COMMITTER_NAME": "reidpipe tests",
    "GIT_COMMITTER_EMAIL": "tests@reidpipe.invalid",
}


def run(
    repo: Path, *args: str, timeout: float = 900, check: bool = True
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        list(args),
        cwd=repo,
        env=pipeline_env(repo, **GIT_ENV),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n"
            f"{proc.stderr[-4000:]}"
        )
    return proc


def snakemake(*args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--cores", "2", "--workflow-profile", "none", *args]


def dvc(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "dvc"), *args]


def make_repo(tmp_path: Path, overrides: dict) -> Path:
    """A git repository holding the project, with the demo parameters written into params.yaml
    and dvc.yaml generated for it (so both tools run the same commands on them)."""
    repo = copy_working_tree(tmp_path / "repo")
    (repo / "small.yaml").write_text(yaml.safe_dump(overrides))
    run(
        repo,
        sys.executable,
        "-m",
        "reidpipe",
        "params",
        "--params",
        "params.yaml",
        "config/demo.yaml",
        "small.yaml",
        "--out",
        "params.yaml",
    )
    run(repo, sys.executable, "-m", "reidpipe", "stages", "--dvc-yaml", "--out", "dvc.yaml")
    run(repo, "git", "init", "-q", "-b", "main")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-q", "-m", "project")
    return repo
