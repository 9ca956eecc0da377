"""benchmarks/bench_eval.py on a tiny scale: every task runs, and the dense oracle's re-ranked
figures equal what ``reidpipe evaluate`` computes (a benchmark comparing the two must compare
the same thing)."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from support import ROOT

SCRIPT = ROOT / "benchmarks" / "bench_eval.py"


@pytest.fixture(scope="module")
def bench_eval():
    spec = importlib.util.spec_from_file_location("bench_eval", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_eval"] = module
    spec.loader.exec_module(module)
    module.SCALES["tiny"] = (30, 120, 12, 3)  # queries, gallery, identities, cameras
    yield module
    del sys.modules["bench_eval"]


def test_every_task_runs_and_the_oracle_agrees_with_evaluate(bench_eval) -> None:
    runs = {task: bench_eval.run_case("tiny", 16, task) for task in bench_eval.TASKS}
    assert runs["dense"]["reranked"] == runs["rerank"]["reranked"]
    assert runs["cli"]["plain"] == runs["rerank"]["plain"] == runs["evaluate"]["plain"]
    assert 0 < runs["rerank"]["reranked"]["mAP"] < 1
    for task in ("evaluate", "rerank", "dense"):
        assert runs[task]["wall_s"] >= 0 and runs[task]["peak_rss_gb"] > 0
