"""``reidpipe split DATASET_DIR --out DIR [--source NAME]``."""

from __future__ import annotations

import argparse
import logging

from reidpipe.cli import add_source_argument, params_from_args, source_from_args

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "split", parents=[common], help="write train/val/query/gallery manifests"
    )
    parser.add_argument("dataset_dir", metavar="DATASET_DIR")
    parser.add_argument("--out", required=True, metavar="DIR", help="manifest folder to write")
    add_source_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from reidpipe.data.split import make_split

    params = params_from_args(args)
    source = source_from_args(args, params).dataset_source()
    counts = make_split(args.dataset_dir, args.out, params.split.val_ids, params.split.seed, source)
    log.info(f"{args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0
