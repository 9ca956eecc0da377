"""The demo's data stages through a real Slurm cluster with the workflow/profiles/slurm profile.

Needs a reachable Slurm cluster with an idle node (CI starts a single-node one with
``.ci/start_slurm.sh``) and snakemake-executor-plugin-slurm (the ``slurm`` extra).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from repo_copy import copy_working_tree, pipeline_env

ROOT = Path(__file__).resolve().parents[1]
PROFILE = "workflow/profiles/slurm"
TARGETS = ["results/validation.json", "results/splits"]
RULES = ["download", "validate", "split"]
# A smaller synthetic dataset than the demo's, so that each stage takes seconds.
TINY = "data:\n  synthetic_ids: 8\n  dataset_dir: data/tiny-synthetic\nsplit:\n  val_ids: 2\n"
SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+)", re.IGNORECASE)


def _slurm_unavailable() -> str | None:
    """Why this test cannot run here, or None."""
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')"
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "Slurm client commands (sinfo, sbatch) are not on PATH; start one: .ci/start_slurm.sh"
    try:
        states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                                timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 20 s"
    if states.returncode != 0:
        return f"Slurm is not reachable (sinfo: {states.stderr.strip()}); start .ci/start_slurm.sh"
    if not {"idle", "mixed"} & set(states.stdout.split()):
        return f"no idle Slurm node (sinfo states: {states.stdout.split()})"
    return None


def _job_state(job_id: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True,
                         timeout=20).stdout
    match = re.search(r"JobState=(\S+)", out)
    return match.group(1) if match else f"unknown ({out.strip() or 'no record'})"


@pytest.mark.slow
def test_data_stages_run_as_slurm_jobs(tmp_path: Path) -> None:
    reason = _slurm_unavailable()
    if reason is not None:
        pytest.skip(reason)
    repo = tmp_path / "repo"
    copy_working_tree(repo)
    (repo / "tiny.yaml").write_text(TINY)
    env = pipeline_env(repo)
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", *TARGETS, "--executor", "slurm",
         "--workflow-profile", PROFILE, "--configfile", "params.yaml", "config/demo.yaml",
         "tiny.yaml"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=200)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]

    assert (repo / "data/tiny-synthetic/bounding_box_train").is_dir()
    assert (repo / "results/validation.json").is_file()
    assert sorted(p.name for p in (repo / "results/splits").glob("*.csv")), output[-2000:]

    # One Slurm job per stage: submitted by sbatch, logged by the plugin, known to slurmctld.
    job_ids = SUBMITTED.findall(output)
    assert len(job_ids) == len(RULES), output[-4000:]
    logs = repo / ".snakemake/slurm_logs"
    for rule in RULES:
        assert list((logs / f"rule_{rule}").rglob("*.log")), f"no Slurm log for rule {rule}"
    logged_ids = {p.stem for p in logs.rglob("*.log")}
    assert set(job_ids) <= logged_ids
    for job_id in job_ids:
        assert _job_state(job_id) == "COMPLETED"
