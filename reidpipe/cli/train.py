"""``reidpipe train --arch NAME --splits DIR --out DIR``."""

from __future__ import annotations

import argparse

from reidpipe.cli import params_from_args


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "train", parents=[common], help="train one architecture on the split manifests"
    )
    parser.add_argument("--arch", required=True, metavar="NAME", help="a key of params 'archs'")
    parser.add_argument("--splits", required=True, metavar="DIR", help="manifest folder")
    parser.add_argument("--out", required=True, metavar="DIR", help="model folder to write")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from reidpipe.training.train import train_stage

    train_stage(params_from_args(args), args.arch, args.splits, args.out)
    return 0
