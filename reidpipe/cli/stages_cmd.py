"""``reidpipe stages [--dvc-yaml | --tracked] [--params FILES] [--out FILE]``: show the stage
table, generate dvc.yaml for the params files, or write every job's tracked values."""

from __future__ import annotations

import argparse
import json
import sys

from reidpipe import atomic
from reidpipe.cli import default_params_file, params_dict_from_args
from reidpipe.errors import ReidpipeError


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "stages", parents=[common], help="show the stage table or generate dvc.yaml"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--dvc-yaml",
        action="store_true",
        help="emit dvc.yaml for the params files instead: its stages run with "
        "the same --params as Snakemake run with the same --configfiles",
    )
    mode.add_argument(
        "--tracked",
        action="store_true",
        help="emit every job's tracked values under the params (JSON; the "
        "tracked_params stage, which DVC's params read)",
    )
    parser.add_argument("--out", help="write to this file instead of standard output")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from reidpipe.stages import dvc_file, table, tracked

    if args.dvc_yaml:
        if args.overrides:
            raise ReidpipeError(
                "--dvc-yaml: DVC's stages read params files only; put the "
                "--set values in a file and give it with --params"
            )
        text = dvc_file.dvc_yaml(args.params or [default_params_file()])
    elif args.tracked:
        values = tracked.all_tracked_values(params_dict_from_args(args))
        text = json.dumps(values, indent=2, sort_keys=True) + "\n"
    else:
        text = table.describe()
    if args.out:
        atomic.write_text(args.out, text)
    else:
        sys.stdout.write(text)
    return 0
