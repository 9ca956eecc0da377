"""The Slurm cluster the Slurm tests run on (``.ci/start_slurm.sh``: two nodes, two fake GPUs
each), and what they read back from it: why it cannot be used, a job's record, the profile."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from support import ROOT

PROFILE = "workflow/profiles/slurm"
# Where .ci/start_slurm.sh leaves the reason it could not start the cluster.
START_FAILURE = Path("/var/tmp/reidpipe-start-slurm.reason")
SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+)", re.IGNORECASE)


def slurm_unavailable(nodes: int = 1, gpus_per_node: int = 0) -> str | None:
    """Why a test needing ``nodes`` idle nodes with ``gpus_per_node`` GPUs each cannot run here,
    or None."""
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')"
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return (
            "Slurm client commands (sinfo, sbatch) are not on PATH; start one: .ci/start_slurm.sh"
        )
    start = (
        f" (.ci/start_slurm.sh: {START_FAILURE.read_text().strip()})"
        if START_FAILURE.is_file()
        else ""
    )
    try:
        info = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N %T %G"], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 20 s" + start
    if info.returncode != 0:
        return f"Slurm is not reachable (sinfo: {info.stderr.strip()}){start}; start .ci/start_slurm.sh"
    usable = [
        line.split() for line in info.stdout.splitlines() if line.split()[1] in ("idle", "mixed")
    ]
    with_gpus = [node for node, _, gres in usable if _gpu_count(gres) >= gpus_per_node]
    if len(with_gpus) < nodes:
        return (
            f"needs {nodes} idle Slurm node(s) with {gpus_per_node} GPU(s) each, sinfo says "
            f"{info.stdout.split()}{start}"
        )
    return None


def _gpu_count(gres: str) -> int:
    match = re.search(r"gpu(?::[^:,()]+)?:(\d+)", gres)
    return int(match.group(1)) if match else 0


def job_record(job_id: str) -> dict[str, str]:
    """``scontrol show job``'s fields (slurmctld keeps a finished job MinJobAge seconds)."""
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=20
    ).stdout
    fields = dict(re.findall(r"(\S+?)=(\S*)", out))
    return fields or {"JobState": f"unknown ({out.strip() or 'no record'})"}


def profile_with(dest: Path, train: dict[str, Any]) -> Path:
    """The Slurm profile with ``train`` written into ``set-resources: train:``, as a user edits it."""
    config = yaml.safe_load((ROOT / PROFILE / "config.yaml").read_text())
    config["set-resources"]["train"] = {**config["set-resources"].get("train", {}), **train}
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return dest
