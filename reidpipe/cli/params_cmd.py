"""``reidpipe params``: print or write the effective parameters, or the JSON schema."""

from __future__ import annotations

import argparse
import json

import yaml

from reidpipe import atomic
from reidpipe.cli import params_from_args
from reidpipe.params import json_schema, params_to_dict


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("params", parents=[common],
                                   help="validate and show the effective parameters")
    parser.add_argument("--schema", action="store_true", help="emit the JSON schema instead")
    parser.add_argument("--out", help="write to this file instead of standard output")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.schema:
        text = json.dumps(json_schema(), indent=2) + "\n"
    else:
        text = yaml.safe_dump(params_to_dict(params_from_args(args)), sort_keys=False)
    if args.out:
        atomic.write_text(args.out, text)
    else:
        print(text, end="")
    return 0
