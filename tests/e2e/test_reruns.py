"""Reruns follow exactly what changed, in both tools, after a demo-sized Snakemake run recorded
with DVC by the README's record step (params.yaml stays as cloned; the demo's values are a second
params file). The jobs each edit reruns are written here by hand and asked of the tools: Snakemake
(`snakemake -n`) and DVC (`dvc status` and its graph, once the tracked_params stage has written
the new values). Outputs carry their provenance, so each tool rebuilds what the other built from
other values; and `dvc checkout` or `dvc pull` followed by the README's `snakemake --touch`
leaves nothing to do."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from support import deep_merge
from support.repo_copy import ROOT, SMALL, copy_working_tree, dvc, run, snakemake

pytestmark = pytest.mark.slow

ARCHS = ["resnet_demo"]  # every stage kind still runs, in half the time of two archs
OVERLAY = "overlay.yaml"
FILES = ("params.yaml", OVERLAY)
# The jobs, by hand: what a model key or the training code reaches, and every stage.
MODEL_DOWNSTREAM = {"train", "extract", "evaluate", "export_onnx", "build_trt", "package", "report"}
EVERY_STAGE = {"tracked_params", "download", "validate", "split", "combine"} | MODEL_DOWNSTREAM


def record(repo: Path) -> None:
    """The README's record step: dvc.yaml for the run's params files, then `dvc commit`."""
    run(repo, "reidpipe", "stages", "--dvc-yaml", "--params", *FILES, "--out", "dvc.yaml")
    run(repo, *dvc("commit", "--force"))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """The project as cloned, the demo's values (demo-sized, one arch) in overlay.yaml, run as
    `make demo` runs it (`--configfile params.yaml overlay.yaml`), recorded, committed."""
    repo = copy_working_tree(tmp_path_factory.mktemp("reruns") / "repo")
    demo = yaml.safe_load((repo / "config" / "demo.yaml").read_text())
    overlay = deep_merge(demo, deep_merge(SMALL, {"pipeline": {"archs": ARCHS}}))
    (repo / OVERLAY).write_text(yaml.safe_dump(overlay, sort_keys=False))
    run(repo, "git", "init", "-q", "-b", "main")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-q", "-m", "project")
    run(repo, *snakemake("--configfile", *FILES))
    record(repo)
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-q", "-m", "recorded run")
    return repo


def planned_jobs(repo: Path, *configfiles: str) -> dict[str, int]:
    """Rule -> job count of a Snakemake dry run (empty when there is nothing to do)."""
    out = run(repo, *snakemake("-n", "--configfile", *(configfiles or (OVERLAY,)))).stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:", 1)[1].split("total", 1)[0]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", table, re.M))
    return {rule: int(n) for rule, n in jobs.items() if rule != "all"}


def dvc_up_to_date(repo: Path) -> bool:
    return "Data and pipelines are up to date" in run(repo, *dvc("status")).stdout


def dvc_changed(repo: Path) -> set[str]:
    """Stage names (without @arch) whose recorded deps, params or outs changed, together with
    every stage downstream of them in DVC's graph: what `dvc repro` reruns."""
    status = json.loads(run(repo, *dvc("status", "--json")).stdout or "{}")
    code = (
        "import json, sys, networkx as nx\n"
        "from dvc.repo import Repo\n"
        "with Repo('.') as r:\n"
        "    g = r.index.graph\n"
        "    by = {s.addressing: s for s in g}\n"
        "    changed = set(json.loads(sys.argv[1]))\n"
        "    down = set(changed)\n"
        "    for name in changed:\n"
        "        down |= {s.addressing for s in nx.ancestors(g, by[name])}\n"
        "    print(json.dumps(sorted(down)))\n"
    )
    names = json.loads(run(repo, sys.executable, "-c", code, json.dumps(sorted(status))).stdout)
    return {name.partition("@")[0] for name in names}


def dvc_reaches(repo: Path) -> set[str]:
    """The stages `dvc repro` reruns after an edit, without running them all: tracked_params
    first (it writes the values each stage reads, in a second), then those `dvc status` finds
    changed and all downstream of them."""
    ran = ran_stages(run(repo, *dvc("repro", "--single-item", "tracked_params")).stdout)
    return {name.partition("@")[0] for name in ran} | dvc_changed(repo)


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@contextmanager
def restored(repo: Path, *relatives: str) -> Iterator[None]:
    """The files' content and times are put back afterwards, and DVC's tracked values with
    them (the tracked_params stage reruns only when it sees a change)."""
    saved = {rel: ((repo / rel).read_bytes(), (repo / rel).stat()) for rel in relatives}
    try:
        yield
    finally:
        for rel, (content, stat) in saved.items():
            (repo / rel).write_bytes(content)
            os.utime(repo / rel, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        run(repo, *dvc("repro", "--single-item", "tracked_params"))


@contextmanager
def overlay_edited(repo: Path, change: dict) -> Iterator[None]:
    with restored(repo, OVERLAY):
        overlay = yaml.safe_load((repo / OVERLAY).read_text())
        (repo / OVERLAY).write_text(yaml.safe_dump(deep_merge(overlay, change), sort_keys=False))
        yield


@contextmanager
def edited(repo: Path, relative: str) -> Iterator[None]:
    """A comment appended to a source file."""
    with restored(repo, relative):
        path = repo / relative
        path.write_text(path.read_text() + "\n# an edit\n")
        yield


def test_record_step_keeps_params_yaml_and_leaves_both_tools_nothing_to_do(repo: Path) -> None:
    assert (repo / "params.yaml").read_text() == (ROOT / "params.yaml").read_text()
    assert dvc_up_to_date(repo)
    assert planned_jobs(repo, *FILES) == {}
    # DVC links its cache (.dvc/config cache.type hardlink): same file, same modification time.
    assert (repo / "models" / ARCHS[0] / "model.pt").stat().st_nlink == 2


def test_short_configfile_form_and_a_file_of_the_same_values_have_nothing_to_do(repo: Path) -> None:
    """`--configfile overlay.yaml` merges the same values as `--configfile params.yaml
    overlay.yaml`, in another key order; a further file may repeat values."""
    assert planned_jobs(repo, OVERLAY) == {}
    overlay = yaml.safe_load((repo / OVERLAY).read_text())
    (repo / "same.yaml").write_text(yaml.safe_dump({"model": overlay["model"]}))
    assert planned_jobs(repo, *FILES, "same.yaml") == {}


def test_reordered_params_files_rerun_nothing(repo: Path) -> None:
    with restored(repo, *FILES):
        for name in FILES:
            data = yaml.safe_load((repo / name).read_text())
            reordered = {key: data[key] for key in reversed(list(data))}
            (repo / name).write_text(yaml.safe_dump(reordered, sort_keys=True))
        assert planned_jobs(repo) == {}
        assert dvc_up_to_date(repo)


def test_empty_sections_and_written_out_defaults_rerun_nothing(repo: Path) -> None:
    """The values a job reads are the validated ones: `archs.<name>.dataset: {}` (what the old
    record step wrote) or a default written out leave every job's values as they were. DVC
    sees its params files changed and rewrites the values, nothing else."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    change = {
        "archs": {ARCHS[0]: {"dataset": {}, "train": {}}},
        "re_ranking": {"k2": params["re_ranking"]["k2"]},
        "evaluate": {},
    }
    with overlay_edited(repo, change):
        assert planned_jobs(repo) == {}
        assert ran_stages(run(repo, *dvc("repro")).stdout) == {"tracked_params"}
        assert dvc_up_to_date(repo)


def job_counts(stages: set[str]) -> dict[str, int]:
    """Jobs per stage: one per arch, one for the others."""
    return {name: len(ARCHS) if name in MODEL_DOWNSTREAM - {"report"} else 1 for name in stages}


# Every value change rewrites the tracked values (tracked_params), then reruns its readers.
@pytest.mark.parametrize(
    "change, stages",
    [
        # the package's model card shows the metrics
        ({"re_ranking": {"k1": 10}}, {"tracked_params", "evaluate", "package", "report"}),
        ({"report": {"sampled_queries": 3}}, {"tracked_params", "report"}),
        ({"model": {"feat_dim": 64}}, {"tracked_params"} | MODEL_DOWNSTREAM),
    ],
    ids=["re_ranking.k1", "report.sampled_queries", "model.feat_dim"],
)
def test_a_value_reruns_exactly_the_jobs_that_read_it(
    repo: Path, change: dict, stages: set
) -> None:
    with overlay_edited(repo, change):
        assert planned_jobs(repo) == job_counts(stages)
        assert dvc_reaches(repo) == stages
    assert planned_jobs(repo) == {} and dvc_up_to_date(repo)


@pytest.mark.parametrize(
    "relative, stages",
    [
        ("reidpipe/training/losses.py", MODEL_DOWNSTREAM),
        ("reidpipe/report/sections.py", {"report"}),
        ("reidpipe/errors.py", EVERY_STAGE),
        ("reidpipe/stages/table.py", {"tracked_params"}),  # what writes the tracked values
    ],
    ids=["training", "report", "shared", "stage-table"],
)
def test_a_code_edit_reruns_exactly_the_jobs_that_run_it(
    repo: Path, relative: str, stages: set
) -> None:
    with edited(repo, relative):
        assert planned_jobs(repo) == job_counts(stages)
        assert dvc_reaches(repo) == stages
    assert planned_jobs(repo) == {} and dvc_up_to_date(repo)


def test_outputs_snakemake_built_from_other_values_are_not_current(repo: Path) -> None:
    """Snakemake run with a further params file: DVC reports the jobs it rebuilt as changed,
    and the run with the recorded files rebuilds them (their provenance says other values,
    whatever Snakemake's own record of its last run says)."""
    (repo / "other.yaml").write_text("re_ranking: {k1: 10}\n")
    run(repo, *snakemake("--configfile", *FILES, "other.yaml"))
    changed = set(json.loads(run(repo, *dvc("status", "--json")).stdout))
    assert {f"evaluate@{arch}" for arch in ARCHS} | {"report"} <= changed, changed
    # the package's model card shows the metrics
    assert set(planned_jobs(repo)) == {"tracked_params", "evaluate", "package", "report"}
    run(repo, *snakemake("--configfile", *FILES))
    record(repo)
    # DVC links the rebuilt package folder's files to its cache: the folder is then newer than
    # the report that read it (README: one `snakemake --touch` after recording again)
    assert planned_jobs(repo) == {"report": 1}
    run(repo, *snakemake("--touch", "--configfile", OVERLAY))
    assert planned_jobs(repo) == {} and dvc_up_to_date(repo)


def test_dvc_checkout_then_snakemake_touch_leaves_nothing_to_do(repo: Path) -> None:
    """Checked-out files keep their times (hard links to the cache), but the folders are new and
    lack Snakemake's timestamp marker: `snakemake --touch`, once `dvc status` is clean."""
    arch = ARCHS[0]
    for path in [
        "results/splits",
        f"models/{arch}/model.pt",
        f"results/{arch}/embeddings",
        f"results/{arch}/onnx",
        "reports/index.html",
        f"models/{arch}/model.pt.provenance.json",
    ]:
        target = repo / path
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    run(repo, *dvc("checkout"))
    assert dvc_up_to_date(repo)
    run(repo, *snakemake("--touch", "--configfile", OVERLAY))
    assert planned_jobs(repo) == {}


def test_dvc_pull_then_snakemake_touch_leaves_nothing_to_do(repo: Path, tmp_path: Path) -> None:
    """A pull into an empty cache gives every file, provenance included, the download time:
    the same one command."""
    arch = ARCHS[0]
    run(repo, *dvc("remote", "add", "--local", "-d", "store", str(tmp_path / "store")))
    run(repo, *dvc("push"))
    for path in [
        SMALL["data"]["dataset_dir"],
        "results/splits",
        ".dvc/cache",
        f"results/{arch}/embeddings",
        f"results/{arch}/onnx",
        f"results/{arch}/tensorrt",
    ]:
        shutil.rmtree(repo / path)
    for name in ["model.pt", "config.yaml", "train_log.csv", "model.pt.provenance.json"]:
        (repo / "models" / arch / name).unlink()
    run(repo, *dvc("pull"))
    assert dvc_up_to_date(repo)
    run(repo, *snakemake("--touch", "--configfile", OVERLAY))
    assert planned_jobs(repo) == {}
    assert dvc_up_to_date(repo)


def test_dvc_experiment_then_snakemake_with_the_recorded_values_retrains(repo: Path) -> None:
    """`dvc exp run -S` retrains with another feat_dim; Snakemake, given the recorded values,
    plans training again for every arch (and what reads it), from the models' provenance."""
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-q", "--allow-empty", "-m", "before the experiment")
    exp = run(repo, *dvc("exp", "run", "-S", f"{OVERLAY}:model.feat_dim=64", "train"))
    assert ran_stages(exp.stdout + exp.stderr) == {"tracked_params"} | {
        f"train@{arch}" for arch in ARCHS
    }
    run(repo, "git", "checkout", OVERLAY)
    for arch in ARCHS:
        assert (
            yaml.safe_load((repo / "models" / arch / "config.yaml").read_text())["model"][
                "feat_dim"
            ]
            == 64
        )
    planned = planned_jobs(repo)
    assert planned["train"] == len(ARCHS)
    assert set(planned) == {"tracked_params"} | MODEL_DOWNSTREAM


def test_one_archs_export_setting_reruns_only_that_archs_export(tmp_path: Path) -> None:
    """archs.<name>.export is read by that arch's export alone. Of every job's tracked values
    (`reidpipe stages --tracked`: what Snakemake's params, DVC's params and each provenance
    hold) only export_onnx's for swin_demo change, and DVC, reading the generated dvc.yaml,
    sees no other key of the tracked values file change. No pipeline run needed."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copy(ROOT / "config" / "demo.yaml", tmp_path / OVERLAY)  # resnet_demo and swin_demo
    tracked = (
        "reidpipe",
        "stages",
        "--tracked",
        "--params",
        *FILES,
        "--out",
        "params.tracked.json",
    )
    run(tmp_path, "git", "init", "-q", "-b", "main")
    run(tmp_path, *dvc("init", "-q"))
    run(tmp_path, "reidpipe", "stages", "--dvc-yaml", "--params", *FILES, "--out", "dvc.yaml")
    run(tmp_path, *tracked)
    run(tmp_path, "git", "add", "-A")
    run(tmp_path, "git", "commit", "-q", "-m", "recorded values")
    before = json.loads((tmp_path / "params.tracked.json").read_text())

    overlay = yaml.safe_load((tmp_path / OVERLAY).read_text())
    (tmp_path / OVERLAY).write_text(
        yaml.safe_dump(
            deep_merge(
                overlay, {"archs": {"swin_demo": {"export": {"int8_calibration_percentile": 99.9}}}}
            )
        )
    )
    run(tmp_path, *tracked)
    after = json.loads((tmp_path / "params.tracked.json").read_text())
    assert after["export_onnx"].pop("swin_demo") != before["export_onnx"].pop("swin_demo")
    assert after == before  # train, extract, build_trt and resnet_demo's export: as they were

    seen = json.loads(run(tmp_path, *dvc("params", "diff", "--json")).stdout)
    assert list(seen["params.tracked.json"]) == [
        "export_onnx.swin_demo.archs.swin_demo.export.int8_calibration_percentile"
    ]
