"""``reidpipe stages [--dvc-yaml] [--out FILE]``: show the stage table, or generate dvc.yaml."""

from __future__ import annotations

import argparse
import sys

from reidpipe import atomic
from reidpipe.cli import default_params_file


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("stages", help="show the stage table or generate dvc.yaml")
    parser.add_argument("--dvc-yaml", action="store_true",
                        help="emit dvc.yaml (generated from the table and params.yaml) instead")
    parser.add_argument("--out", help="write to this file instead of standard output")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from reidpipe import stages

    if args.dvc_yaml:
        default_params_file(takes_params=False)  # dvc.yaml lists params.yaml's sources, archs
        text = stages.dvc_yaml()
    else:
        text = stages.describe()
    if args.out:
        atomic.write_text(args.out, text)
    else:
        sys.stdout.write(text)
    return 0
