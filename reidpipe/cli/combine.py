"""``reidpipe combine --main DIR [--sources DIR] --out DIR``: the training set of
``data.train_sources``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from reidpipe.cli import params_from_args
from reidpipe.filenames import SPLITS_DIR

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "combine",
        parents=[common],
        help="merge the train/val manifests of the training sources (pid/camera offsets)",
    )
    parser.add_argument("--main", required=True, metavar="DIR", help="split folder of data.source")
    parser.add_argument(
        "--sources",
        metavar="DIR",
        help=f"folder holding <name>/{SPLITS_DIR}/ of each further source",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="manifest folder to write")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from reidpipe.data.combine import combine_splits
    from reidpipe.errors import ReidpipeError

    params = params_from_args(args)
    folders = {}
    for name in params.train_sources():
        if name == params.data.source:
            folders[name] = Path(args.main)
        elif args.sources is None:
            raise ReidpipeError(
                f"data.train_sources names {name!r}: give --sources DIR (the "
                f"folder holding {name}/{SPLITS_DIR}/)"
            )
        else:
            folders[name] = Path(args.sources) / name / SPLITS_DIR
    offsets = combine_splits(folders, args.out)
    log.info(
        f"{args.out}: "
        + ", ".join(
            f"{name} {o.train_ids} ids / {o.train_images} images (pid +{o.pid_offset}, "
            f"camera +{o.camid_offset})"
            for name, o in offsets.items()
        )
    )
    return 0
