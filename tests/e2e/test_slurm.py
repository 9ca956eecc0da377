"""The demo's data stages through a real Slurm cluster with the workflow/profiles/slurm profile.

Needs a reachable Slurm cluster with an idle node (CI starts a two-node one with
``.ci/start_slurm.sh``) and snakemake-executor-plugin-slurm (the ``slurm`` extra).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.repo_copy import copy_working_tree, pipeline_env
from support.slurm_cluster import PROFILE, SUBMITTED, job_record, slurm_unavailable

TARGETS = ["results/validation.json", "results/splits"]
RULES = ["download", "validate", "split"]
# A smaller synthetic dataset than the demo's, so that each stage takes seconds.
TINY = "data:\n  synthetic_ids: 8\n  dataset_dir: data/tiny-synthetic\nsplit:\n  val_ids: 2\n"


@pytest.mark.slow
def test_data_stages_run_as_slurm_jobs(tmp_path: Path) -> None:
    reason = slurm_unavailable()
    if reason is not None:
        pytest.skip(reason)
    repo = tmp_path / "repo"
    copy_working_tree(repo)
    (repo / "tiny.yaml").write_text(TINY)
    env = pipeline_env(repo)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            *TARGETS,
            "--executor",
            "slurm",
            "--workflow-profile",
            PROFILE,
            "--configfile",
            "params.yaml",
            "config/demo.yaml",
            "tiny.yaml",
        ],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=200,
    )
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
        assert job_record(job_id)["JobState"] == "COMPLETED"
