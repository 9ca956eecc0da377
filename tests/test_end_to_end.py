"""End to end in a temporary copy of the repository: the demo DAG through Snakemake, the outputs
recorded by DVC, a DVC experiment on model.feat_dim, and the pipeline's behaviour when killed,
run twice at once or given a parameter typo."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from repo_copy import SMALL, copy_working_tree, dvc, make_repo, pipeline_env, run, snakemake

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
            int8["status"] == "passed") and (int8["status"] == "passed" or int8["reason"])
        package = json.loads((demo_repo / "results" / arch / "deploy" / "package.json").read_text())
        assert package["triton"]["platform"] == "onnxruntime_onnx"
        assert (demo_repo / "results" / arch / "deploy" / "deepstream" / "deepstream_reid.yml").is_file()
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

    before = json.loads((demo_repo / "reports" / "metrics.json").read_text())
    exp = run(demo_repo, *dvc("exp", "run", "-S", "model.feat_dim=64"))
    ran = set(re.findall(r"Running stage '([^']+)'", exp.stdout + exp.stderr))
    expected = {f"{stage}@{arch}" for arch in ARCHS
                for stage in ("train", "extract", "evaluate", "export_onnx", "build_trt", "package")}
    assert ran == expected | {"report"}, ran
    assert not ran & set(DATA_STAGES)
    after = json.loads((demo_repo / "reports" / "metrics.json").read_text())
    assert after != before
    diff = json.loads(run(demo_repo, *dvc("metrics", "diff", "--json")).stdout)
    assert any(diff.values()), diff
    params = json.loads(run(demo_repo, *dvc("params", "diff", "--json")).stdout)
    change = params["params.yaml"]["model.feat_dim"]
    assert (change["old"], change["new"]) == (128, 64)


def test_kill_during_training_resumes_and_concurrent_runs_are_refused(tmp_path: Path) -> None:
    slow = dict(SMALL, train={"num_epochs": 4, "checkpoint_interval": 1, "validation_interval": 4,
                              "max_steps_per_epoch": 4}, pipeline={"archs": ["resnet_demo"]})
    repo = make_repo(tmp_path, slow)
    target = "models/resnet_demo/model.pt"
    first = subprocess.Popen(snakemake(target), cwd=repo, env=pipeline_env(repo),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    checkpoints = repo / "models" / "resnet_demo" / "checkpoints"
    deadline = time.monotonic() + 600
    while not list(checkpoints.glob("epoch*.ckpt")):  # not a dot-named temporary mid-write
        assert first.poll() is None, first.stdout.read()
        assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
        time.sleep(1)

    # A plain second run stops at the running job's incomplete outputs or at Snakemake's lock
    # (which one it meets first depends on Snakemake's version); one that insists on rerunning
    # them is stopped by the lock. Neither touches the running job.
    second = run(repo, *snakemake(target), check=False)
    refusal = second.stdout + second.stderr
    assert second.returncode != 0 and ("incomplete" in refusal or "cannot be locked" in refusal)
    forced = run(repo, *snakemake(target, "--rerun-incomplete"), check=False)
    assert forced.returncode != 0 and "cannot be locked" in forced.stdout + forced.stderr
    assert first.poll() is None

    os.killpg(first.pid, signal.SIGTERM)
    first.wait(timeout=120)
    assert not (repo / target).exists(), "a killed training left a model behind"

    run(repo, *snakemake(target))
    log = (repo / "logs" / "train_resnet_demo.log").read_text()
    assert "resuming from" in log
    with open(repo / "models" / "resnet_demo" / "train_log.csv") as handle:
        epochs = [line.split(",")[0] for line in handle.read().splitlines()[1:]]
    assert epochs[-1] == "4"


def test_params_typo_stops_before_any_job(tmp_path: Path) -> None:
    repo = copy_working_tree(tmp_path / "repo")
    (repo / "typo.yaml").write_text("model:\n  feat_dimm: 256\n")
    proc = run(repo, *snakemake("--configfile", "params.yaml", "typo.yaml"), check=False)
    assert proc.returncode != 0
    assert "feat_dimm" in proc.stdout + proc.stderr
    assert not (repo / "logs").exists() and not (repo / "data" / "Market-1501-v15.09.15").exists()


def test_two_sources_train_and_every_test_set_is_reported(tmp_path: Path) -> None:
    """Snakemake end to end with a further training source and a further test set."""
    cross = dict(SMALL, pipeline={"archs": ["resnet_demo"],
                                  "eval_sources": ["synthetic", "duke", "cuhk"]},
                 train={"num_epochs": 1, "checkpoint_interval": 1, "validation_interval": 1,
                        "max_steps_per_epoch": 2},
                 export={"parity_batch_sizes": [1]})
    cross["data"] = dict(SMALL["data"], train_sources=["synthetic", "duke"], sources={
        "duke": {"source": "synthetic", "synthetic_layout": "dukemtmc", "synthetic_ids": 12,
                 "synthetic_seed": 1},
        "cuhk": {"source": "synthetic", "synthetic_layout": "cuhk03", "synthetic_ids": 12,
                 "synthetic_seed": 2}})
    repo = make_repo(tmp_path, cross)
    run(repo, *snakemake())
    combined = json.loads((repo / "results" / "train_set" / "sources.json").read_text())
    assert list(combined["sources"]) == ["synthetic", "duke"]
    assert combined["sources"]["duke"]["pid_offset"] > 0
    assert (repo / "data" / "cuhk" / "labeled" / "query").is_dir()
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    assert sorted(metrics) == ["resnet_demo", "resnet_demo@cuhk", "resnet_demo@duke"]
    md = (repo / "reports" / "index.md").read_text()
    for test_set in ("synthetic", "duke", "cuhk"):
        for label in ("plain", "re-ranked"):
            assert f"| {test_set} | resnet_demo | {label} |" in md
    on_duke = json.loads((repo / "results" / "resnet_demo" / "cross" / "duke" /
                          "metrics.json").read_text())
    assert metrics["resnet_demo@duke"] == on_duke and on_duke["plain"]["num_queries"] > 0
