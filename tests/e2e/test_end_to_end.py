"""End to end in a temporary copy of the repository: the demo DAG through Snakemake, the outputs
recorded by DVC, a DVC experiment, and a parameter typo stopping the run. (Killed and concurrent
runs: test_snakemake_recovery.py; several sources and test sets: test_datasets_e2e.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from support.repo_copy import SMALL, copy_working_tree, dvc, make_repo, run, snakemake

pytestmark = pytest.mark.slow

ARCHS = ["resnet_demo", "swin_demo"]
DATA_STAGES = ["download", "validate", "split"]


@pytest.fixture(scope="module")
def demo_repo(tmp_path_factory) -> Path:
    repo = make_repo(tmp_path_factory.mktemp("e2e"), SMALL)
    run(repo, *snakemake())
    return repo


def test_snakemake_runs_the_whole_dag(demo_repo: Path) -> None:
    report = json.loads((demo_repo / "reports" / "metrics.json").read_text())
    assert sorted(report) == sorted(ARCHS)
    for arch in ARCHS:
        metrics = json.loads((demo_repo / "results" / arch / "metrics.json").read_text())
        assert report[arch] == metrics
        assert 0 < metrics["plain"]["mAP"] <= 1 and metrics["plain"]["num_queries"] > 0
        parity = json.loads((demo_repo / "results" / arch / "onnx" / "parity.json").read_text())
        assert abs(parity["retrieval"]["delta_points"]["mAP"]) <= 0.1
        status = json.loads((demo_repo / "results" / arch / "tensorrt" / "status.json").read_text())
        assert status["status"] == "skipped" and status["reason"]
        # the INT8 copy, or the reason its gate left it out
        int8 = parity["int8"]
        assert (demo_repo / "results" / arch / "onnx" / "model_int8.onnx").is_file() == (
            int8["status"] == "passed"
        ) and (int8["status"] == "passed" or int8["reason"])
        package = json.loads((demo_repo / "results" / arch / "deploy" / "package.json").read_text())
        assert package["triton"]["platform"] == "onnxruntime_onnx"
        assert (
            demo_repo / "results" / arch / "deploy" / "deepstream" / "deepstream_reid.yml"
        ).is_file()
        assert (demo_repo / "logs" / f"train_{arch}.log").is_file()
    html = (demo_repo / "reports" / "index.html").read_text()
    assert "TensorRT" in html and "skipped" in html
    # Nothing left to do: a second run is a no-op.
    again = run(demo_repo, *snakemake())
    assert "Nothing to be done" in again.stdout + again.stderr


def test_dvc_records_snakemake_outputs_and_runs_an_experiment(demo_repo: Path) -> None:
    run(demo_repo, *dvc("commit", "--force"))
    status = run(demo_repo, *dvc("status")).stdout
    assert "Data and pipelines are up to date" in status, status
    run(demo_repo, "git", "add", "-A")
    run(demo_repo, "git", "commit", "-q", "-m", "pipeline outputs")

    # A shared model key reaches every arch: DVC finds both archs' training changed (and reruns
    # what reads their outputs, as the experiment below shows for evaluate -> report; running it
    # here would retrain both archs).
    params = yaml.safe_load((demo_repo / "params.yaml").read_text())
    params["model"]["feat_dim"] = 64
    (demo_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = set(json.loads(run(demo_repo, *dvc("status", "--json")).stdout))
    assert changed == {"tracked_params"}, changed  # first, the values each stage reads
    run(demo_repo, *dvc("repro", "--single-item", "tracked_params"))
    changed = set(json.loads(run(demo_repo, *dvc("status", "--json")).stdout))
    assert changed == {f"train@{arch}" for arch in ARCHS}, changed
    run(demo_repo, "git", "checkout", "params.yaml")

    # A real experiment on an evaluation key: exactly the stages that read it (evaluate, and the
    # package, whose model card shows the metrics) and the report run.
    before = json.loads((demo_repo / "reports" / "metrics.json").read_text())
    exp = run(demo_repo, *dvc("exp", "run", "-S", "re_ranking.lambda_value=0.6"))
    ran = set(re.findall(r"Running stage '([^']+)'", exp.stdout + exp.stderr))
    assert ran == {f"{stage}@{arch}" for stage in ("evaluate", "package") for arch in ARCHS} | {
        "report",
        "tracked_params",
    }, ran
    after = json.loads((demo_repo / "reports" / "metrics.json").read_text())
    for arch in ARCHS:
        assert after[arch]["plain"] == before[arch]["plain"]
        assert after[arch]["reranked"]["lambda_value"] == 0.6
    # DVC's metrics diff reports exactly what moved: the re-ranked results themselves, not only
    # the lambda_value they echo (a lambda that never reached the re-ranker would move nothing
    # else), and nothing of the plain ranking.
    diff = json.loads(run(demo_repo, *dvc("metrics", "diff", "--json")).stdout)
    for arch in ARCHS:
        old, new = before[arch]["reranked"], after[arch]["reranked"]
        moved = {
            f"reranked.{key}": (old[key], value) for key, value in new.items() if value != old[key]
        }
        reported = {
            key: (change["old"], change["new"])
            for key, change in diff[f"results/{arch}/metrics.json"].items()
        }
        assert reported == moved, diff
        assert set(moved) > {"reranked.lambda_value"}, moved
    params_diff = json.loads(run(demo_repo, *dvc("params", "diff", "--json")).stdout)
    change = params_diff["params.yaml"]["re_ranking.lambda_value"]
    assert (change["old"], change["new"]) == (0.3, 0.6)


def test_params_typo_stops_before_any_job(tmp_path: Path) -> None:
    repo = copy_working_tree(tmp_path / "repo")
    (repo / "typo.yaml").write_text("model:\n  feat_dimm: 256\n")
    proc = run(repo, *snakemake("--configfile", "params.yaml", "typo.yaml"), check=False)
    assert proc.returncode != 0
    assert "feat_dimm" in proc.stdout + proc.stderr
    assert not (repo / "logs").exists() and not (repo / "data" / "Market-1501-v15.09.15").exists()
