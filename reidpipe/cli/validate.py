"""``reidpipe validate DATASET_DIR --report FILE [--source NAME] [--strict]``."""

from __future__ import annotations

import argparse
import logging

from reidpipe.cli import add_param_flag, add_source_argument, params_from_args, source_from_args

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "validate", parents=[common], help="decode and check a dataset in its source's layout"
    )
    parser.add_argument("dataset_dir", metavar="DATASET_DIR")
    parser.add_argument("--report", required=True, metavar="FILE", help="JSON report to write")
    add_param_flag(
        parser,
        "--strict",
        key="data.strict",
        per_source=True,
        action=argparse.BooleanOptionalAction,
        help="check the dataset's official statistics (or not)",
    )
    add_source_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from reidpipe.data.validate import run_validation

    block = source_from_args(args, params_from_args(args))
    report = run_validation(
        args.dataset_dir, args.report, strict=block.strict, source=block.dataset_source()
    )
    counts = ", ".join(
        f"{split} {info['images']} images / {info['ids']} ids"
        for split, info in report.splits.items()
    )
    log.info(f"{args.dataset_dir}: valid ({counts}); {len(report.warnings)} warning(s)")
    return 0
