"""Verification figures (``reidpipe.evaluation.verification``) at Market-1501 and MSMT17 scale.

The features are bench_eval's (random, clustered by identity; pids shifted by one so that none is
the distractor pid 0). A seeded tenth of the query ids is held out of the gallery
(``hold_out_identities``), so there are open-set queries as a deployment meets them. Each case
runs in its own subprocess so that its peak RSS is its own; wall and CPU seconds, the load
average, the figures at each FAR and the block height are recorded and written as JSON.

    python benchmarks/bench_verification.py --scales market --dims 512 --queries 500
    python benchmarks/bench_verification.py --scales msmt17 --dims 2048 --device cuda

``--queries N`` keeps the first N queries (a short run). A partial run replaces its own cases in
an existing results file and keeps the others.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from bench_eval import SCALES, _cpu_s, _data, _peak_rss_gb

from reidpipe.atomic import write_json

ROOT = Path(__file__).resolve().parents[1]
HELD_OUT_FRACTION = 0.1


def run_case(scale: str, dim: int, num_queries: int | None, device: str) -> dict[str, object]:
    from reidpipe.evaluation.verification import hold_out_identities, verification_figures

    query, gallery, q_pids, q_cams, g_pids, g_cams = _data(scale, dim)
    q_pids, g_pids = q_pids + 1, g_pids + 1
    if num_queries is not None:
        query, q_pids, q_cams = query[:num_queries], q_pids[:num_queries], q_cams[:num_queries]
    split = hold_out_identities(q_pids, g_pids, HELD_OUT_FRACTION, seed=0)
    gallery, g_pids, g_cams = (a[split.gallery_kept] for a in (gallery, g_pids, g_cams))
    result: dict[str, object] = {
        "num_query": len(query),
        "num_gallery": len(gallery),
        "baseline_rss_gb": round(_peak_rss_gb(), 3),
    }
    started, cpu = time.perf_counter(), _cpu_s()
    figures = verification_figures(
        query, gallery, q_pids, q_cams, g_pids, g_cams, distance="cosine", device=device
    ).to_json()
    result["wall_s"] = round(time.perf_counter() - started, 2)
    result["cpu_s"] = round(_cpu_s() - cpu, 2)
    result["peak_rss_gb"] = round(_peak_rss_gb(), 3)
    for key in ("genuine_histogram", "impostor_histogram", "histogram_edges"):
        figures.pop(key)
    return {**result, **figures}


def _child(scale: str, dim: int, num_queries: int | None, device: str) -> dict[str, object]:
    load = os.getloadavg()[0]  # other work on the machine inflates wall times
    command = [sys.executable, __file__, "--child", scale, str(dim), str(num_queries or 0), device]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]}
    return {
        "load_avg_1m_before": round(load, 2),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
        **json.loads(proc.stdout.strip().splitlines()[-1]),
    }


def _case_key(case: dict[str, object]) -> tuple[str, int, int, str]:
    return (case["scale"], case["dim"], case["num_query"], case["device"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="+", choices=sorted(SCALES), default=list(SCALES))
    parser.add_argument("--dims", nargs="+", type=int, default=[256, 2048])
    parser.add_argument(
        "--queries", type=int, default=None, help="keep the first N queries (a short run)"
    )
    parser.add_argument("--device", default="cpu", help="where the feature products run")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "verification.json"))
    parser.add_argument(
        "--child", nargs=4, metavar=("SCALE", "DIM", "QUERIES", "DEVICE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        scale, dim, queries, device = args.child
        print(json.dumps(run_case(scale, int(dim), int(queries) or None, device)))
        return 0
    cases = []
    for scale in args.scales:
        for dim in args.dims:
            print(f"{scale} {dim}-d ...", flush=True)
            case = {
                "scale": scale,
                "dim": dim,
                "device": args.device,
                **_child(scale, dim, args.queries, args.device),
            }
            case.setdefault("num_query", args.queries or SCALES[scale][0])
            print("   ", json.dumps(case), flush=True)
            cases.append(case)
    out = Path(args.out)
    if out.is_file():
        fresh = {_case_key(c) for c in cases}
        cases = [
            c
            for c in json.loads(out.read_text(encoding="utf-8"))["cases"]
            if _case_key(c) not in fresh
        ] + cases
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(
        out,
        {
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "numpy": np.__version__,
            },
            "held_out_fraction": HELD_OUT_FRACTION,
            "cases": cases,
        },
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
