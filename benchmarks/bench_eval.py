"""Evaluation and k-reciprocal re-ranking at Market-1501 and MSMT17 scale.

Each case (scale x feature dimension x task) runs in its own subprocess so that its peak RSS is
its own. Features are random but clustered by identity (centre + noise), so rankings are neither
trivial nor random. Tasks:

* ``evaluate``: ``evaluate_embeddings`` without re-ranking (plain cosine CMC/mAP/mINP);
* ``rerank``: ``evaluate_embeddings`` with re-ranking, i.e. what ``reidpipe evaluate`` computes
  (the plain and the re-ranked evaluation);
* ``cli``: the whole ``reidpipe evaluate`` command in a fresh interpreter (imports, reading the
  embeddings folder, writing metrics/CMC/per-query files), Market scale only;
* ``dense``: the dense oracle of the test suite (N x N arrays) and the ranking of its output,
  Market scale at 512-d only (about 9 GB).

Wall and CPU seconds are both recorded (the CPU seconds are less sensitive to other work on the
machine, whose load average is recorded too), and at Market scale the speed-up of ``rerank`` and
``cli`` over ``dense`` measured in the same run. Results are printed and written as JSON.

    python benchmarks/bench_eval.py                       # everything
    python benchmarks/bench_eval.py --scales market --dims 512 --tasks rerank dense --repeat 3

``--repeat N`` runs every case but the dense oracle N times and reports the run with the median
wall time (all runs are listed with it).

A partial run replaces its own cases in an existing results file and keeps the others.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from reidpipe.atomic import write_json

ROOT = Path(__file__).resolve().parents[1]
SCALES = {  # (queries, gallery, identities, cameras)
    "market": (3368, 15913, 750, 6),
    "msmt17": (11659, 82161, 3060, 15),
}
DENSE_SCALES = ("market",)
DENSE_DIM = 512
CLI_SCALES = ("market",)
TASKS = ("evaluate", "rerank", "cli", "dense")
# The test suite's dense re-ranking, written from the paper's definition
DENSE_ORACLE = ROOT / "tests" / "support" / "references.py"


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def _data(scale: str, dim: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    num_query, num_gallery, ids, cams = SCALES[scale]
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((ids, dim), dtype=np.float32)
    pids = np.concatenate([np.arange(num_query) % ids, rng.integers(0, ids, num_gallery)])
    feats = centres[pids]
    # Noise grows as dim ** 0.25 so that every dimension gives a similar, mid-range mAP.
    feats += 1.8 * (dim / 256) ** 0.25 * rng.standard_normal(feats.shape, dtype=np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    camids = rng.integers(1, cams + 1, len(pids))
    return (
        feats[:num_query],
        feats[num_query:],
        pids[:num_query],
        camids[:num_query],
        pids[num_query:],
        camids[num_query:],
    )


def _cpu_s(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _embeddings(scale: str, dim: int) -> object:
    import pandas as pd

    from reidpipe.evaluation.embeddings import Embeddings, EmbeddingSet

    query, gallery, q_pids, q_cams, g_pids, g_cams = _data(scale, dim)

    def subset(feats: np.ndarray, pids: np.ndarray, cams: np.ndarray, name: str) -> EmbeddingSet:
        paths = [f"{name}/{i:06d}.jpg" for i in range(len(pids))]
        return EmbeddingSet(feats, pd.DataFrame({"path": paths, "pid": pids, "camid": cams}))

    return Embeddings(
        query=subset(query, q_pids, q_cams, "query"),
        gallery=subset(gallery, g_pids, g_cams, "bounding_box_test"),
    )


def run_case(scale: str, dim: int, task: str) -> dict[str, object]:
    # Loaded before the baseline RSS is read, so that the baseline counts the evaluation code.
    import reidpipe.evaluation.evaluate  # noqa: F401

    embeddings = _embeddings(scale, dim)
    ids = _ids(embeddings)
    result: dict[str, object] = {"baseline_rss_gb": round(_peak_rss_gb(), 3)}
    if task == "cli":
        return {**result, **_run_cli(embeddings)}
    started, cpu = time.perf_counter(), _cpu_s()
    if task == "dense":
        summaries = _dense_summaries(embeddings, ids)
    else:
        summaries = _evaluate_summaries(embeddings, re_ranking=task == "rerank")
    result["wall_s"] = round(time.perf_counter() - started, 2)
    result["cpu_s"] = round(_cpu_s() - cpu, 2)
    result["peak_rss_gb"] = round(_peak_rss_gb(), 3)
    return {**result, **_headline_metrics(summaries)}


def _ids(embeddings: object) -> tuple[np.ndarray, ...]:
    """Query pids and camids, then gallery pids and camids, as ``rank_queries`` takes them."""
    q, g = embeddings.query, embeddings.gallery
    return (
        q.meta["pid"].to_numpy(),
        q.meta["camid"].to_numpy(),
        g.meta["pid"].to_numpy(),
        g.meta["camid"].to_numpy(),
    )


def _run_cli(embeddings: object) -> dict[str, object]:
    """``reidpipe evaluate`` on ``embeddings`` in a fresh interpreter: its wall and CPU seconds,
    its peak RSS and the metrics it wrote."""
    from reidpipe.evaluation.embeddings import write_embeddings

    with tempfile.TemporaryDirectory() as tmp:
        write_embeddings(Path(tmp) / "emb", embeddings)
        command = [
            sys.executable,
            "-m",
            "reidpipe",
            "evaluate",
            "--embeddings",
            f"{tmp}/emb",
            "--out",
            f"{tmp}/metrics.json",
            "--cmc",
            f"{tmp}/cmc.csv",
            "--per-query",
            f"{tmp}/per_query.csv",
            "--device",
            "cpu",
        ]
        started = time.perf_counter()
        subprocess.run(command, check=True, cwd=ROOT, capture_output=True)
        result: dict[str, object] = {
            "wall_s": round(time.perf_counter() - started, 2),
            "cpu_s": round(_cpu_s(resource.RUSAGE_CHILDREN), 2),
            "peak_rss_gb": round(
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2, 3
            ),
        }
        metrics = json.loads((Path(tmp) / "metrics.json").read_text(encoding="utf-8"))
    return {**result, **_headline_metrics(metrics)}


def _dense_summaries(embeddings: object, ids: tuple[np.ndarray, ...]) -> dict[str, dict]:
    """The re-ranked summary from the test suite's dense oracle."""
    from reidpipe.evaluation.evaluate import rank_queries, summarise

    spec = importlib.util.spec_from_file_location("oracle", DENSE_ORACLE)
    oracle = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(oracle)
    q, g = embeddings.query, embeddings.gallery
    final = oracle.dense_re_ranking(q.features, g.features, 20, 6, 0.3, dtype=np.float32)
    return {"reranked": summarise(rank_queries(lambda s, e: final[s:e], len(final), *ids))}


def _evaluate_summaries(embeddings: object, re_ranking: bool) -> dict[str, dict]:
    """``evaluate_embeddings``'s summaries, with or without re-ranking."""
    from reidpipe.evaluation.evaluate import evaluate_embeddings
    from reidpipe.params import EvaluateParams, ReRankingParams

    evaluation = evaluate_embeddings(
        embeddings,
        EvaluateParams(),
        ReRankingParams(re_ranking=re_ranking, k1=20, k2=6, lambda_value=0.3),
        device="cpu",
    )
    return evaluation.metrics


def _headline_metrics(summaries: dict[str, dict]) -> dict[str, dict[str, float]]:
    """mAP and rank-1 of each summary, rounded."""
    return {
        name: {"mAP": round(block["mAP"], 4), "rank1": round(block["rank1"], 4)}
        for name, block in summaries.items()
    }


def _speedups(cases: list[dict[str, object]]) -> dict[str, dict[str, float]]:
    """Wall and CPU time of the dense oracle over ``rerank`` and ``cli`` at the same scale and
    dimension (Market, DENSE_DIM), when the results hold both."""
    found = {(c["scale"], c["dim"], c["task"]): c for c in cases if "wall_s" in c}
    out = {}
    for scale in DENSE_SCALES:
        dense = found.get((scale, DENSE_DIM, "dense"))
        for task in ("rerank", "cli"):
            fast = found.get((scale, DENSE_DIM, task))
            if dense and fast:
                out[f"{scale} {DENSE_DIM}-d {task}"] = {
                    "wall": round(dense["wall_s"] / fast["wall_s"], 1),
                    "cpu": round(dense["cpu_s"] / fast["cpu_s"], 1),
                }
    return out


def _child(scale: str, dim: int, task: str) -> dict[str, object]:
    """One case in a fresh subprocess, with the load average before and after it."""
    load = os.getloadavg()[0]  # other work on the machine inflates wall times
    proc = subprocess.run(
        [sys.executable, __file__, "--child", scale, str(dim), task],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]}
    return {
        "load_avg_1m_before": round(load, 2),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
        **json.loads(proc.stdout.strip().splitlines()[-1]),
    }


def _measured(scale: str, dim: int, task: str, repeat: int) -> dict[str, object]:
    """The run with the median wall time of ``repeat`` runs (on a shared machine one run can
    land in a burst of other work), with every run's wall and CPU seconds and load."""
    runs = [_child(scale, dim, task) for _ in range(repeat)]
    failed = [run for run in runs if "error" in run]
    if failed or repeat == 1:
        return (failed or runs)[0]
    median = sorted(runs, key=lambda run: run["wall_s"])[repeat // 2]
    return {
        **median,
        "runs": [
            {key: run[key] for key in ("wall_s", "cpu_s", "load_avg_1m_before")} for run in runs
        ],
    }


def _case_key(case: dict[str, object]) -> tuple[int, int, int]:
    return (list(SCALES).index(case["scale"]), case["dim"], TASKS.index(case["task"]))


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.child:
        scale, dim, task = args.child
        print(json.dumps(run_case(scale, int(dim), task)))
        return 0
    cases = _run_cases(args.scales, args.dims, args.tasks, args.repeat)
    # A partial run (--scales/--dims/--tasks) updates its cases in an existing results file.
    out = Path(args.out)
    if out.is_file():
        cases = _merged_with(out, cases)
    write_json(out, _report(cases))
    print(f"wrote {out}")
    return 0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="+", choices=sorted(SCALES), default=list(SCALES))
    parser.add_argument("--dims", nargs="+", type=int, default=[256, 512, 2048])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each case but the dense oracle; the median is reported",
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "eval.json"))
    parser.add_argument(
        "--child", nargs=3, metavar=("SCALE", "DIM", "TASK"), help=argparse.SUPPRESS
    )
    return parser.parse_args(argv)


def _runs(scale: str, dim: int, task: str) -> bool:
    """Whether the case is run at all."""
    if task == "dense" and (scale not in DENSE_SCALES or dim != DENSE_DIM):
        return False  # dense N x N arrays do not fit beyond Market scale; one dim suffices
    return not (task == "cli" and scale not in CLI_SCALES)


def _run_cases(
    scales: list[str], dims: list[int], tasks: list[str], repeat: int
) -> list[dict[str, object]]:
    """Each case in turn, printed as it starts and as it ends."""
    cases = []
    for scale in scales:
        for dim in dims:
            for task in tasks:
                if not _runs(scale, dim, task):
                    continue
                q, g = SCALES[scale][:2]
                print(f"{scale} ({q} x {g}) {dim}-d {task} ...", flush=True)
                case = _measured(scale, dim, task, 1 if task == "dense" else repeat)
                case = {
                    "scale": scale,
                    "num_query": q,
                    "num_gallery": g,
                    "dim": dim,
                    "task": task,
                    **case,
                }
                print("   ", json.dumps(case), flush=True)
                cases.append(case)
    return cases


def _merged_with(out: Path, cases: list[dict[str, object]]) -> list[dict[str, object]]:
    """The cases of the results file ``out`` that this run did not measure, and this run's,
    in the file's order."""
    fresh = {_case_key(c) for c in cases}
    kept = [
        c for c in json.loads(out.read_text(encoding="utf-8"))["cases"] if _case_key(c) not in fresh
    ]
    return sorted(kept + cases, key=_case_key)


def _report(cases: list[dict[str, object]]) -> dict[str, object]:
    import torch

    return {
        "machine": {
            "cpus": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
        "re_ranking": {"k1": 20, "k2": 6, "lambda_value": 0.3},
        "cases": cases,
        "speedup_over_dense": _speedups(cases),
    }


if __name__ == "__main__":
    sys.exit(main())
