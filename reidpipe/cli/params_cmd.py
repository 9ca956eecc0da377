"""``reidpipe params``: print or write the effective parameters, the JSON schema, or the
overrides converted from a TAO experiment spec (``--from-tao``). Only the first needs a params
file (default params.yaml); the schema and a conversion read only the files ``--params`` names."""

from __future__ import annotations

import argparse
import json
import logging
import sys

import yaml

from reidpipe import atomic
from reidpipe.cli import params_dict_from_args, params_from_args
from reidpipe.errors import ReidpipeError
from reidpipe.params import json_schema, params_to_dict

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "params", parents=[common], help="validate and show the effective parameters"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--schema", action="store_true", help="emit the JSON schema instead")
    mode.add_argument(
        "--from-tao",
        metavar="SPEC",
        help="convert a TAO ReIdentificationNet experiment spec into overrides "
        "(validated on top of --params, when given) and print the key table",
    )
    parser.add_argument(
        "--arch",
        help="with --from-tao: name of the arch the spec becomes "
        "(default: after its backbone, e.g. resnet50, swin_tiny)",
    )
    parser.add_argument("--out", help="write to this file instead of standard output")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.arch and not args.from_tao:
        raise ReidpipeError("--arch names the arch of a converted TAO spec: use it with --from-tao")
    table = ""
    if args.schema:
        text = json.dumps(json_schema(), indent=2) + "\n"
    elif args.from_tao:
        from reidpipe.params.tao import convert_tao_spec, validate_conversion

        conversion = convert_tao_spec(args.from_tao, args.arch)
        validate_conversion(
            conversion, args.from_tao, params_dict_from_args(args, needs_file=False)
        )
        text, table = conversion.yaml_text(args.from_tao), conversion.table()
    else:
        text = yaml.safe_dump(params_to_dict(params_from_args(args)), sort_keys=False)
    if args.out:
        atomic.write_text(args.out, text)
    else:
        sys.stdout.write(text)
    if table:
        log.info("%s -> %s\n%s", args.from_tao, args.out or "standard output", table.rstrip())
    return 0
