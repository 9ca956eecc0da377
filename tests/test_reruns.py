"""Reruns follow exactly what changed, in both tools, in a temporary repository after a demo-sized
Snakemake run: code edits rerun the stages that run that code and everything downstream; the
short ``--configfile`` form and ``dvc commit`` leave nothing to do, and so does ``dvc checkout``
or ``dvc pull`` followed by the README's ``snakemake --touch``."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from repo_copy import SMALL, dvc, make_repo, run, snakemake

pytestmark = pytest.mark.slow

ARCH = "resnet_demo"
# One arch: every stage kind still runs, in half the time.
ONE_ARCH = {**SMALL, "pipeline": {"archs": [ARCH]}}
OVERLAY = "overlay.yaml"


def deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """params.yaml holds the effective parameters (DVC reads only it); overlay.yaml the demo's
    overrides, given to Snakemake as `make demo` gives config/demo.yaml: `--configfile
    params.yaml overlay.yaml`. Then `dvc commit` records the outputs."""
    repo = make_repo(tmp_path_factory.mktemp("reruns"), ONE_ARCH)
    demo = yaml.safe_load((repo / "config" / "demo.yaml").read_text())
    (repo / OVERLAY).write_text(yaml.safe_dump(deep_merge(demo, ONE_ARCH), sort_keys=False))
    run(repo, "git", "add", OVERLAY)
    run(repo, "git", "commit", "-q", "-m", "overlay")
    run(repo, *snakemake("--configfile", "params.yaml", OVERLAY))
    run(repo, *dvc("commit", "--force"))
    return repo


def downstream(names: set[str], repo: Path) -> set[str]:
    """``names`` and every stage that reads, directly or not, what they write (from the stage
    table's paths: an input equal to an output or inside it), among the stages that have jobs
    under the repo's params (a stage over a wildcard without values, such as the cross-domain
    ones when no further test set is listed, has none)."""
    from reidpipe.stages import STAGES, AllOf, wildcard_values

    config = yaml.safe_load((repo / "params.yaml").read_text())
    active = [st for st in STAGES if all(wildcard_values(config, w) for w in st.wildcards)]
    found = set(names)
    grew = True
    while grew:
        outputs = [o.path for st in active if st.name in found for o in st.outputs.values()]
        grew = False
        for st in active:
            inputs = [v.path if isinstance(v, AllOf) else v for v in st.inputs.values()]
            if st.name not in found and any(i == o or i.startswith(o + "/")
                                            for i in inputs for o in outputs):
                found.add(st.name)
                grew = True
    return found


def planned_jobs(repo: Path, *configfiles: str) -> dict[str, int]:
    """Rule -> job count of a Snakemake dry run (empty when there is nothing to do)."""
    out = run(repo, *snakemake("-n", "--configfile", *(configfiles or (OVERLAY,)))).stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:", 1)[1].split("total", 1)[0]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", table, re.M))
    return {rule: int(n) for rule, n in jobs.items() if rule != "all"}


def dvc_changed(repo: Path) -> set[str]:
    """Stage names (without @arch) whose recorded deps, params or outs changed, together with
    every stage downstream of them in DVC's graph: what `dvc repro` reruns."""
    status = json.loads(run(repo, *dvc("status", "--json")).stdout or "{}")
    code = ("import json, sys, networkx as nx\n"
            "from dvc.repo import Repo\n"
            "with Repo('.') as r:\n"
            "    g = r.index.graph\n"
            "    by = {s.addressing: s for s in g}\n"
            "    changed = set(json.loads(sys.argv[1]))\n"
            "    down = set(changed)\n"
            "    for name in changed:\n"
            "        down |= {s.addressing for s in nx.ancestors(g, by[name])}\n"
            "    print(json.dumps(sorted(down)))\n")
    names = json.loads(run(repo, sys.executable, "-c", code, json.dumps(sorted(status))).stdout)
    return {name.partition("@")[0] for name in names}


@contextmanager
def edited(repo: Path, relative: str) -> Iterator[None]:
    """A comment appended to a source file; the content and times are restored afterwards."""
    path = repo / relative
    text, stat = path.read_text(), path.stat()
    path.write_text(text + "\n# an edit\n")
    try:
        yield
    finally:
        path.write_text(text)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_short_configfile_form_has_nothing_to_do(repo: Path) -> None:
    """After `--configfile params.yaml overlay.yaml`, `--configfile overlay.yaml` merges the same
    values in another key order: the tracked values are canonical, so nothing reruns."""
    assert planned_jobs(repo, "params.yaml", OVERLAY) == {}
    assert planned_jobs(repo, OVERLAY) == {}


def test_dvc_commit_leaves_snakemake_nothing_to_do(repo: Path) -> None:
    assert "Data and pipelines are up to date" in run(repo, *dvc("status")).stdout
    assert planned_jobs(repo) == {}
    # DVC links its cache (.dvc/config cache.type hardlink): same file, same modification time.
    assert (repo / "models" / ARCH / "model.pt").stat().st_nlink == 2


def test_training_code_edit_reruns_train_and_downstream(repo: Path) -> None:
    expected = downstream({"train"}, repo)
    assert {"extract", "evaluate", "export_onnx", "report"} <= expected
    assert not expected & {"download", "validate", "split"}
    with edited(repo, "reidpipe/training/losses.py"):
        assert set(planned_jobs(repo)) == expected
        assert dvc_changed(repo) == expected
    assert planned_jobs(repo) == {} and dvc_changed(repo) == set()


def test_report_code_edit_reruns_only_the_report(repo: Path) -> None:
    with edited(repo, "reidpipe/report/sections.py"):
        assert planned_jobs(repo) == {"report": 1}
        assert dvc_changed(repo) == {"report"}


def test_shared_module_edit_reruns_every_stage_that_imports_it(repo: Path) -> None:
    with edited(repo, "reidpipe/errors.py"):
        every = downstream({"download"}, repo)
        assert set(planned_jobs(repo)) == every
        assert dvc_changed(repo) == every


def test_dvc_checkout_then_snakemake_touch_leaves_nothing_to_do(repo: Path) -> None:
    """Checked-out files keep their times (hard links to the cache), but the folders are new and
    lack Snakemake's timestamp marker: `snakemake --touch`, once `dvc status` is clean."""
    for path in ["results/splits", f"models/{ARCH}/model.pt", f"results/{ARCH}/embeddings",
                 f"results/{ARCH}/onnx", "reports/index.html"]:
        target = repo / path
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    run(repo, *dvc("checkout"))
    assert "Data and pipelines are up to date" in run(repo, *dvc("status")).stdout
    run(repo, *snakemake("--touch", "--configfile", OVERLAY))
    assert planned_jobs(repo) == {}


def test_dvc_pull_then_snakemake_touch_leaves_nothing_to_do(repo: Path, tmp_path: Path) -> None:
    """A pull into an empty cache gives every file the download time: the same one command."""
    run(repo, *dvc("remote", "add", "--local", "-d", "store", str(tmp_path / "store")))
    run(repo, *dvc("push"))
    for path in [SMALL["data"]["dataset_dir"], "results/splits", ".dvc/cache",
                 f"results/{ARCH}/embeddings", f"results/{ARCH}/onnx", f"results/{ARCH}/tensorrt"]:
        shutil.rmtree(repo / path)
    for name in ["model.pt", "config.yaml", "train_log.csv"]:
        (repo / "models" / ARCH / name).unlink()
    run(repo, *dvc("pull"))
    assert "Data and pipelines are up to date" in run(repo, *dvc("status")).stdout
    run(repo, *snakemake("--touch", "--configfile", OVERLAY))
    assert planned_jobs(repo) == {}
    assert "Data and pipelines are up to date" in run(repo, *dvc("status")).stdout
