"""A temporary copy of the repository for end-to-end runs (Snakemake, DVC, Slurm)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def copy_working_tree(dest: Path) -> Path:
    """The working tree without git-ignored paths (data, results, venv): tracked files and new
    ones not yet committed, so that the copy runs the same package as the checkout."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def pipeline_env(repo: Path, **extra: str) -> dict[str, str]:
    """The venv's commands on PATH and the copy's package first on the import path."""
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=str(repo))
    env.update(extra)
    return env
