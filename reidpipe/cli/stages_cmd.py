"""``reidpipe stages [--dvc-yaml] [--out FILE]``: show the stage table, or generate dvc.yaml."""

from __future__ import annotations

import argparse
import sys

from reidpipe import atomic


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("stages", help="show the stage table or generate dvc.yaml")
    parser.add_argument("--dvc-yaml", action="store_true",
                        help="emit dvc.yaml (generated from the table) instead")
    parser.add_argument("--out", help="write to this file instead of standard output")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from reidpipe import stages

    text = stages.dvc_yaml() if args.dvc_yaml else stages.describe()
    if args.out:
        atomic.write_text(args.out, text)
    else:
        sys.stdout.write(text)
    return 0
