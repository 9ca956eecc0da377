"""``reidpipe seed-spread [--results DIR] --out FILE``."""

from __future__ import annotations

import argparse
import logging

from reidpipe.cli import params_from_args

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "seed-spread",
        parents=[common],
        help="each metric's mean, std, min and max over the "
        "pipeline.seeds runs, next to the single run's",
    )
    parser.add_argument(
        "--results",
        default="results",
        metavar="DIR",
        help="stage outputs: <arch>/ and seeds/<arch>/seed<N>/ (default: results)",
    )
    parser.add_argument("--out", required=True, metavar="FILE", help="the spread (JSON)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from reidpipe.report.spread import seed_spread_stage

    spread = seed_spread_stage(params_from_args(args), args.results, args.out)
    for arch, rankings in spread["archs"].items():
        plain = rankings["plain"]["mAP"]
        log.info(
            f"{arch}: plain mAP {plain['mean']:.4f} ± {plain['std']:.4f} over seeds "
            f"{spread['seeds']} (min {plain['min']:.4f}, max {plain['max']:.4f})"
        )
    log.info(f"wrote {args.out}")
    return 0
