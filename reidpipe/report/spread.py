"""``reidpipe seed-spread``: how far each metric moves when only the training seed changes.

Reads the seed-spread runs (``results/seeds/<arch>/seed<N>/metrics.json``, pipeline.seeds) and the
single run (``results/<arch>/metrics.json``) and writes, per arch, ranking and metric, the mean,
sample standard deviation, minimum and maximum over the seeds, each seed's value and the single
run's. Another CPU, thread count or GPU changes a run the way another seed does (README,
"Reproducibility"), so this spread is also what the CI gate's bands are made of.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from reidpipe import atomic
from reidpipe.errors import ReidpipeError
from reidpipe.filenames import METRICS_FILE, SEEDS_DIR
from reidpipe.json_files import read_json_file
from reidpipe.params import Params
from reidpipe.report.readers import METRIC_COLUMNS, RANKINGS, read_metrics


def seed_run_dir(results_dir: Path, arch: str, seed: str) -> Path:
    return results_dir / SEEDS_DIR / arch / f"seed{seed}"


def summary(by_seed: dict[str, float], single: float | None) -> dict[str, Any]:
    values = list(by_seed.values())
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values),
        "min": min(values),
        "max": max(values),
        "by_seed": {f"seed{seed}": value for seed, value in by_seed.items()},
        **({"single": single} if single is not None else {}),
    }


def seed_spread(params: Params, results_dir: str | Path) -> dict[str, Any]:
    """``{"seeds": [...], "archs": {arch: {ranking: {metric: summary}}}}``."""
    results_dir = Path(results_dir)
    seeds = params.spread_seeds()
    if len(seeds) < 2:
        raise ReidpipeError(
            f"params: pipeline.seeds = {params.pipeline.seeds}: a spread needs at "
            "least 2 different seeds"
        )
    archs: dict[str, Any] = {}
    for arch in params.pipeline.archs:
        runs = {
            seed: read_metrics(seed_run_dir(results_dir, arch, seed) / METRICS_FILE)
            for seed in seeds
        }
        single = read_metrics(results_dir / arch / METRICS_FILE)
        archs[arch] = {
            ranking: {
                key: summary(
                    {seed: runs[seed][ranking][key] for seed in seeds},
                    single.get(ranking, {}).get(key),
                )
                for key, _ in METRIC_COLUMNS
            }
            for ranking in RANKINGS
            if all(ranking in run for run in runs.values())
        }
    return {"seeds": [int(seed) for seed in seeds], "archs": archs}


def read_spread(path: Path) -> dict[str, Any]:
    """A spread file written by :func:`seed_spread_stage`, checked for the parts readers use."""
    data = read_json_file(path)
    archs = data.get("archs") if isinstance(data, dict) else None
    if not isinstance(archs, dict) or not isinstance(data.get("seeds"), list):
        raise ReidpipeError(
            f"{path}: expected 'seeds' and 'archs' (written by `reidpipe seed-spread`)"
        )
    for arch, rankings in archs.items():
        for ranking, metrics in (rankings or {}).items():
            for key, stats in (metrics or {}).items():
                by_seed = stats.get("by_seed") if isinstance(stats, dict) else None
                if (
                    not isinstance(stats, dict)
                    or not all(
                        isinstance(stats.get(k), (int, float))
                        for k in ("mean", "std", "min", "max")
                    )
                    or not isinstance(by_seed, dict)
                    or not all(isinstance(v, (int, float)) for v in by_seed.values())
                ):
                    raise ReidpipeError(
                        f"{path}: {arch}.{ranking}.{key} needs numbers mean, std, "
                        "min, max and by_seed"
                    )
    return data


def seed_spread_stage(params: Params, results_dir: str | Path, out: str | Path) -> dict[str, Any]:
    spread = seed_spread(params, results_dir)
    atomic.write_text(out, json.dumps(spread, indent=2, allow_nan=False) + "\n")
    return spread
