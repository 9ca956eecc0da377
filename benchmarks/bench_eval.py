"""Evaluation and k-reciprocal re-ranking at Market-1501 and MSMT17 scale.

Each case (scale x feature dimension x task) runs in its own subprocess so that its peak RSS is
its own. Features are random but clustered by identity (centre + noise), so rankings are neither
trivial nor random. Tasks: ``evaluate`` (plain cosine ranking, CMC/mAP/mINP), ``rerank``
(re-ranking + the re-ranked evaluation) and ``dense`` (the plain dense algorithm of the test suite,
holding N x N arrays; Market scale only). Results are printed and written as JSON.

    python benchmarks/bench_eval.py                       # everything
    python benchmarks/bench_eval.py --scales market --dims 256 --tasks evaluate rerank

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
TASKS = ("evaluate", "rerank", "dense")


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
    return (feats[:num_query], feats[num_query:], pids[:num_query], camids[:num_query],
            pids[num_query:], camids[num_query:])


def run_case(scale: str, dim: int, task: str) -> dict[str, object]:
    import torch

    from reidpipe.evaluation.evaluate import (
        plain_distance_rows,
        rank_queries,
        summarise,
    )
    from reidpipe.evaluation.rerank import KReciprocalReRanker

    query, gallery, q_pids, q_cams, g_pids, g_cams = _data(scale, dim)
    ids = (q_pids, q_cams, g_pids, g_cams)
    result: dict[str, object] = {"baseline_rss_gb": round(_peak_rss_gb(), 3)}
    started = time.perf_counter()
    if task == "evaluate":
        rows = plain_distance_rows(query, gallery, "cosine", torch.device("cpu"))
        ranking = rank_queries(rows, len(query), *ids)
    elif task == "rerank":
        ranker = KReciprocalReRanker(query, gallery, 20, 6, 0.3, device="cpu")
        ranking = rank_queries(ranker.distances, len(query), *ids)
        result["phases_s"] = {k: round(v, 2) for k, v in ranker.timings.items()}
    else:
        spec = importlib.util.spec_from_file_location("oracle", ROOT / "tests" / "test_rerank.py")
        oracle = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(oracle)
        final = oracle.dense_re_ranking(query, gallery, 20, 6, 0.3, dtype=np.float32)
        ranking = rank_queries(lambda s, e: final[s:e], len(query), *ids)
    result["wall_s"] = round(time.perf_counter() - started, 2)
    result["peak_rss_gb"] = round(_peak_rss_gb(), 3)
    summary = summarise(ranking)
    result["mAP"], result["rank1"] = round(summary["mAP"], 4), round(summary["rank1"], 4)
    return result


def _case_key(case: dict[str, object]) -> tuple[int, int, int]:
    return (list(SCALES).index(case["scale"]), case["dim"], TASKS.index(case["task"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="+", choices=sorted(SCALES), default=list(SCALES))
    parser.add_argument("--dims", nargs="+", type=int, default=[256, 512, 2048])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "eval.json"))
    parser.add_argument("--child", nargs=3, metavar=("SCALE", "DIM", "TASK"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        scale, dim, task = args.child
        print(json.dumps(run_case(scale, int(dim), task)))
        return 0
    cases = []
    for scale in args.scales:
        for dim in args.dims:
            for task in args.tasks:
                if task == "dense" and (scale not in DENSE_SCALES or dim != min(args.dims)):
                    continue  # dense N x N arrays do not fit beyond Market scale; one dim suffices
                q, g = SCALES[scale][:2]
                print(f"{scale} ({q} x {g}) {dim}-d {task} ...", flush=True)
                load = os.getloadavg()[0]  # other work on the machine inflates wall times
                proc = subprocess.run([sys.executable, __file__, "--child", scale, str(dim), task],
                                      capture_output=True, text=True, cwd=ROOT)
                if proc.returncode != 0:
                    case = {"error": proc.stderr.strip().splitlines()[-1:] or
                            [f"exit code {proc.returncode}"]}
                else:
                    case = json.loads(proc.stdout.strip().splitlines()[-1])
                case = {"scale": scale, "num_query": q, "num_gallery": g, "dim": dim,
                        "task": task, "load_avg_1m_before": round(load, 2), **case}
                print("   ", json.dumps(case), flush=True)
                cases.append(case)
    import torch

    # A partial run (--scales/--dims/--tasks) updates its cases in an existing results file.
    out = Path(args.out)
    if out.is_file():
        fresh = {_case_key(c) for c in cases}
        kept = [c for c in json.loads(out.read_text(encoding="utf-8"))["cases"]
                if _case_key(c) not in fresh]
        cases = sorted(kept + cases, key=_case_key)
    report = {"machine": {"cpus": torch.get_num_threads(), "platform": platform.platform(),
                          "torch": torch.__version__, "numpy": np.__version__},
              "re_ranking": {"k1": 20, "k2": 6, "lambda_value": 0.3}, "cases": cases}
    write_json(out, report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
