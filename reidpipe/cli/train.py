"""``reidpipe train --arch NAME --splits DIR --out DIR``."""

from __future__ import annotations

import argparse

from reidpipe.cli import add_arch_argument, add_folder_arguments, params_from_args


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "train", parents=[common], help="train one architecture on the split manifests"
    )
    add_arch_argument(parser)
    add_folder_arguments(parser, splits="manifest folder", out="model folder to write")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from reidpipe.training.train import train_stage

    train_stage(params_from_args(args), args.arch, args.splits, args.out)
    return 0
