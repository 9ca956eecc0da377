"""``reidpipe split DATASET_DIR --out DIR``."""

from __future__ import annotations

import argparse

from reidpipe.cli import params_from_args


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("split", parents=[common],
                                   help="write train/val/query/gallery manifests")
    parser.add_argument("dataset_dir", metavar="DATASET_DIR")
    parser.add_argument("--out", required=True, metavar="DIR", help="manifest folder to write")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from reidpipe.data.split import make_split
    params = params_from_args(args)
    counts = make_split(args.dataset_dir, args.out, params.split.val_ids, params.split.seed)
    print(f"{args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0
