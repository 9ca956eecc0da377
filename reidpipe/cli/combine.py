"""``reidpipe combine --split NAME=DIR [--split NAME=DIR ...] --out DIR``."""

from __future__ import annotations

import argparse
import logging

from reidpipe.errors import ReidpipeError

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "combine", parents=[common],
        help="merge the train/val manifests of the training sources (pid/camera offsets)")
    parser.add_argument("--split", dest="splits", action="append", required=True,
                        metavar="NAME=DIR", help="a source's split folder, in order (repeatable)")
    parser.add_argument("--out", required=True, metavar="DIR", help="manifest folder to write")
    parser.set_defaults(run=run)


def parse_pairs(pairs: list[str]) -> dict[str, str]:
    named: dict[str, str] = {}
    for pair in pairs:
        name, sep, folder = pair.partition("=")
        if not sep or not name or not folder or name in named:
            raise ReidpipeError(f"--split {pair!r}: expected NAME=DIR, each NAME once")
        named[name] = folder
    return named


def run(args: argparse.Namespace) -> int:
    from reidpipe.data.combine import combine_splits
    offsets = combine_splits(parse_pairs(args.splits), args.out)
    log.info(f"{args.out}: " + ", ".join(
        f"{name} {o.train_ids} ids / {o.train_images} images (pid +{o.pid_offset}, "
        f"camera +{o.camid_offset})" for name, o in offsets.items()))
    return 0
