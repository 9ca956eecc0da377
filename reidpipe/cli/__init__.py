"""``reidpipe`` command line: one subcommand per stage, each a thin wrapper over its module.

Each ``reidpipe/cli/<stage>.py`` defines ``register(subparsers, common)``; ``common`` is the parent
parser that gives every stage ``--params FILE [FILE ...]`` and repeatable ``--set key.path=value``.
Each ``run`` imports its stage module itself, so building the parser (and running a light stage)
does not pay for importing torch and Lightning.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
from typing import Sequence

from reidpipe import logs
from reidpipe.errors import ReidpipeError
from reidpipe.interrupt import Interrupted, signals_interrupt
from reidpipe.params import DEFAULT_PARAMS_FILE, Params, SourceParams, load_params

log = logging.getLogger(__name__)

STAGE_COMMANDS = [
    "params_cmd",
    "stages_cmd",
    "download",
    "synth",
    "validate",
    "split",
    "combine",
    "train",
    "extract",
    "evaluate",
    "export_onnx",
    "build_trt",
    "package",
    "report",
]


def common_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", nargs="+", default=[DEFAULT_PARAMS_FILE], metavar="FILE",
                        help="parameter files, deep-merged in order (default: params.yaml)")
    common.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY.PATH=VALUE", help="override one parameter (repeatable)")
    return common


def params_from_args(args: argparse.Namespace) -> Params:
    return load_params(args.params, args.overrides)


def add_source_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", metavar="NAME",
                        help="dataset source: data.source (the default) or a key of data.sources")


def source_from_args(args: argparse.Namespace, params: Params) -> SourceParams:
    """The block of the source ``--source`` names (default: data.source)."""
    return params.source(args.source or params.data.source)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reidpipe", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="STAGE")
    common = common_parser()
    for name in STAGE_COMMANDS:
        importlib.import_module(f"reidpipe.cli.{name}").register(subparsers, common)
    return parser


def _run_on_one_gpu(args: argparse.Namespace) -> int:
    """Stages that declare ``single_gpu`` hold one GPU lock (or none with ``--device cpu``)
    while they run; CUDA_VISIBLE_DEVICES is set before the stage imports torch."""
    from reidpipe.devices import stage_gpu

    with stage_gpu(getattr(args, "device", "auto")) as lease:
        log.info(lease.note)
        return int(args.run(args) or 0)


# A ReidpipeError raised in a DataLoader worker comes back as the worker's whole traceback.
_WORKER_TRACEBACK = re.compile(r"Caught \w+ in DataLoader worker process \d+\.\n"
                               r"Original Traceback.*\n(?:[\w.]+\.)?\w+: (?P<message>.*)$",
                               re.DOTALL)


def error_message(exc: ReidpipeError) -> str:
    """The message of ``exc``, without the traceback a worker process wrapped it in."""
    text = str(exc)
    worker = _WORKER_TRACEBACK.match(text)
    return worker.group("message").strip() if worker else text


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.command.replace("_", "-"))
    try:
        with signals_interrupt():
            if getattr(args, "single_gpu", False):
                return _run_on_one_gpu(args)
            return int(args.run(args) or 0)
    except ReidpipeError as exc:
        log.error(error_message(exc))
        return 2
    except OSError as exc:  # a file or folder the stage could not read or write
        log.error(str(exc))
        return 2
    except Interrupted as exc:
        log.info(f"interrupted by {exc}")  # the signal is the message, not an error
        return exc.exit_code
    except KeyboardInterrupt:  # before the handlers were installed
        log.info("interrupted by SIGINT")
        return 130


if __name__ == "__main__":
    sys.exit(main())
