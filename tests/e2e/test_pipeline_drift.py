"""The Snakefile and dvc.yaml describe one DAG: same commands, inputs and outputs, each DVC stage
reads its own job's tracked values, and dvc.yaml is what the stage table generates. (Which jobs a
change reruns, asked of both tools after real runs: test_reruns.py.)"""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support import ROOT
from support.repo_copy import copy_working_tree, pipeline_env

from reidpipe.stages.dvc_file import dvc_yaml

# Further sources: two trained on, one more test set (cross-domain), all synthetic.
CROSS_DOMAIN = {
    "data": {
        "train_sources": ["synthetic", "duke"],
        "sources": {
            "duke": {"source": "synthetic", "synthetic_layout": "dukemtmc"},
            "cuhk": {"source": "synthetic", "synthetic_layout": "cuhk03"},
        },
    },
    "pipeline": {"eval_sources": ["synthetic", "duke", "cuhk"]},
}
LOG_REDIRECT = re.compile(r"\s*>\s*logs/\S+\s+2>&1\s*$")


def snakemake_jobs(root: Path, *configfiles: str) -> dict[frozenset, dict]:
    """Planned jobs of a forced dry run, keyed by their output set."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "-p",
            "--forceall",
            "--cores",
            "1",
            "--workflow-profile",
            "none",
            *(["--configfile", *configfiles] if configfiles else []),
        ],
        cwd=root,
        env=pipeline_env(root),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    jobs, job = {}, None
    for line in out.splitlines():
        if line.startswith("rule ") or line.startswith("localrule "):
            job = {"rule": line.split()[1].rstrip(":"), "input": [], "output": [], "cmd": None}
        elif job is not None and line.startswith("    input: "):
            job["input"] = line.split(": ", 1)[1].split(", ")
        elif job is not None and line.startswith("    output: "):
            job["output"] = line.split(": ", 1)[1].split(", ")
        elif job is not None and line.startswith("    wildcards: "):
            job["wildcards"] = dict(w.split("=") for w in line.split(": ", 1)[1].split(", "))
        elif job is not None and line.startswith("Shell command: "):
            job["cmd"] = LOG_REDIRECT.sub("", line.split(": ", 1)[1]).strip()
        if job is not None and job["output"] and job["rule"] != "all" and job["cmd"]:
            jobs[frozenset(job["output"])] = job
            job = None
    return jobs


def dvc_stages(root: Path) -> list:
    """DVC's stages, with the params values DVC reads for each (so the values file exists)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        stages = []
        for stage in repo.index.stages:
            params = {
                dep.def_path: dep.read_params() for dep in stage.deps if hasattr(dep, "params")
            }
            deps = [dep.def_path for dep in stage.deps if not hasattr(dep, "params")]
            stages.append(
                {
                    "name": stage.name,
                    "cmd": stage.cmd.strip(),
                    "deps": deps,
                    "outs": [out.def_path for out in stage.outs],
                    "params": params,
                }
            )
        return stages


def assert_inputs_covered(inputs: list[str], deps: list[str], name: str) -> None:
    """Each Snakemake input is a DVC dep or lies inside one, and each dep covers an input.

    Equal lists pass; a DVC dep may be a folder standing for per-arch inputs, because dvc.yaml
    cannot expand a list over ``pipeline.archs`` outside ``foreach``."""

    def covers(dep: str, path: str) -> bool:
        return path == dep or path.startswith(dep.rstrip("/") + "/")

    uncovered = [i for i in inputs if not any(covers(d, i) for d in deps)]
    unused = [d for d in deps if not any(covers(d, i) for i in inputs)]
    assert not uncovered and not unused, f"{name}: inputs {uncovered} vs deps {unused} differ"


def reidpipe(repo: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "reidpipe", *args],
        cwd=repo,
        env=pipeline_env(repo),
        check=True,
        capture_output=True,
    )


def tracked_values_written(repo: Path) -> Path:
    """``repo`` with the values file its tracked_params job writes, as DVC's stages read it."""
    command = next(
        s["cmd"]
        for s in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"].values()
        if "cmd" in s and s["cmd"].startswith("reidpipe stages --tracked")
    )
    reidpipe(repo, *command.split()[1:])
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    return repo


def cross_domain_repo(tmp_path: Path) -> Path:
    """A copy of the project with the demo and further sources in a second params file, and
    dvc.yaml generated for both files."""
    repo = copy_working_tree(tmp_path / "repo")
    demo = yaml.safe_load((repo / "config" / "demo.yaml").read_text())
    demo["data"].update(CROSS_DOMAIN["data"])
    demo["pipeline"].update(CROSS_DOMAIN["pipeline"])
    (repo / "cross.yaml").write_text(yaml.safe_dump(demo))
    reidpipe(
        repo, "stages", "--dvc-yaml", "--params", "params.yaml", "cross.yaml", "--out", "dvc.yaml"
    )
    return tracked_values_written(repo)


@pytest.fixture(scope="module", params=["params.yaml", "cross-domain"])
def both(request, tmp_path_factory):
    if request.param == "params.yaml":
        root = tracked_values_written(copy_working_tree(tmp_path_factory.mktemp("copy")))
        return snakemake_jobs(root), dvc_stages(root)
    root = cross_domain_repo(tmp_path_factory.mktemp("cross"))
    return snakemake_jobs(root, "params.yaml", "cross.yaml"), dvc_stages(root)


def test_same_outputs(both):
    jobs, stages = both
    assert {o for job in jobs for o in job} == {o for s in stages for o in s["outs"]}


def test_same_commands_inputs_and_params(both):
    jobs, stages = both
    for stage in stages:
        job = jobs[frozenset(stage["outs"])]
        base = stage["name"].partition("@")[0]
        assert job["rule"] == base, stage["name"]
        assert job["cmd"] == stage["cmd"], f"{stage['name']}: commands differ"
        assert_inputs_covered(job["input"], stage["deps"], stage["name"])
        if base == "tracked_params":  # the params files, whole, as Snakemake merged them
            files = job["cmd"].split(" --params ")[1].split(" --provenance ")[0].split()
            assert list(stage["params"]) == files, stage["params"]
            continue
        # The entry of this very job (as Snakemake names its wildcards) in the values file,
        # which DVC found there
        key = ".".join([base, *job.get("wildcards", {}).values()])
        (values,) = stage["params"].values()
        assert list(values) == [key] and values[key], f"{stage['name']}: params {values}"


def test_every_rule_has_its_dvc_stage(both):
    jobs, stages = both
    assert {s["name"].partition("@")[0] for s in stages} == {j["rule"] for j in jobs.values()}


def test_cross_domain_jobs_cover_every_arch_and_test_set(tmp_path_factory):
    jobs = snakemake_jobs(
        cross_domain_repo(tmp_path_factory.mktemp("jobs")), "params.yaml", "cross.yaml"
    )
    evaluated = {
        tuple(sorted(j["wildcards"].items()))
        for j in jobs.values()
        if j["rule"] == "evaluate_cross"
    }
    assert evaluated == {
        (("arch", a), ("test_set", t))
        for a in ("resnet_demo", "swin_demo")
        for t in ("duke", "cuhk")
    }
    prepared = {j["wildcards"]["source"] for j in jobs.values() if j["rule"] == "split_source"}
    assert prepared == {"duke", "cuhk"}
    combine = next(j for j in jobs.values() if j["rule"] == "combine")
    assert "results/sources/duke/splits" in combine["input"]
    assert "results/sources/cuhk/splits" not in combine["input"]  # a test set only


def test_committed_dvc_yaml_is_generated_from_the_stage_table():
    assert (ROOT / "dvc.yaml").read_text() == dvc_yaml(), (
        "dvc.yaml is stale: run `reidpipe stages --dvc-yaml --out dvc.yaml`"
    )


def test_lint_finds_only_missing_software_environments():
    """Snakemake's linter may only ask for conda/container directives: reidpipe installs into one
    virtual environment (README, "Snakemake lint")."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint", "--workflow-profile", "none"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    findings = {
        line.strip()
        for line in (proc.stdout + proc.stderr).splitlines()
        if line.startswith("    * ")
    }
    assert findings <= {"* Specify a conda environment or container for each rule.:"}, findings


def test_config_values_that_would_not_reach_the_stages_are_refused():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "--cores",
            "1",
            "--workflow-profile",
            "none",
            "--config",
            "split={val_ids: 3}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "do not reach the stages" in proc.stdout + proc.stderr
