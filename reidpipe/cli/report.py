"""``reidpipe report [--results DIR] [--models DIR] [--out DIR]``."""

from __future__ import annotations

import argparse
import logging

from reidpipe.cli import params_from_args

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "report",
        parents=[common],
        help="reports/ (Markdown, self-contained HTML, metrics.json, "
        "figures) from the stage outputs",
    )
    parser.add_argument(
        "--results",
        default="results",
        metavar="DIR",
        help="stage outputs: validation.json and <arch>/ (default: results)",
    )
    parser.add_argument(
        "--models",
        default="models",
        metavar="DIR",
        help="trained models: <arch>/train_log.csv, config.yaml, model.pt (the "
        "attention maps) (default: models)",
    )
    parser.add_argument(
        "--out", default="reports", metavar="DIR", help="report folder (default: reports)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from reidpipe.report.build import build_report

    result = build_report(params_from_args(args), args.results, args.models, args.out)
    log.info(f"wrote {', '.join(result.files)} to {args.out}")
    log.info(result.baseline)
    return 0
