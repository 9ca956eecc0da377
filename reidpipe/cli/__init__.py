"""``reidpipe`` command line: one subcommand per stage, each a thin wrapper over its module.

Each ``reidpipe/cli/<stage>.py`` defines ``register(subparsers, common)``; ``common`` is the parent
parser that gives every stage ``--params FILE [FILE ...]`` and repeatable ``--set key.path=value``.
A subcommand flag with a params key behind it is declared with ``add_param_flag``; the one
precedence rule is ``params_dict_from_args``'s.
Each ``run`` imports its stage module itself, so building the parser (and running a light stage)
does not pay for importing torch and Lightning.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reidpipe import environment, logs, output_lock
from reidpipe.errors import ReidpipeError
from reidpipe.interrupt import Interrupted, signals_interrupt
from reidpipe.params import (
    DEFAULT_PARAMS_FILE,
    DataParams,
    Params,
    SourceParams,
    merged_params_dict,
    params_from_dict,
)
from reidpipe.params.merge import apply_override

log = logging.getLogger(__name__)


def command_modules() -> list[str]:
    """The subcommands: every module of this package registers one. Found on disk rather than
    listed here, so that a new stage's command is a new module and this file, which every stage
    runs (its code, for reruns), stays the same."""
    return sorted(module.name for module in pkgutil.iter_modules(__path__))


def common_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--params",
        nargs="+",
        metavar="FILE",
        help=f"parameter files, deep-merged in order (default: "
        f"{DEFAULT_PARAMS_FILE}, for the commands that need parameters)",
    )
    common.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override one parameter (repeatable)",
    )
    common.add_argument(
        "--provenance",
        metavar="FILE",
        help="after success, write there the params and code the outputs were "
        "built from (the workflows give each stage its own; README)",
    )
    return common


@dataclass(frozen=True)
class ParamFlag:
    """A subcommand flag with a params key behind it: given, its value is that key's value."""

    option: str  # as typed, e.g. --strict (a BooleanOptionalAction also has --no-strict)
    dest: str  # its attribute on the parsed arguments
    key: str  # the params key, e.g. data.strict
    per_source: bool  # key is a field of data: data.sources.NAME.<field> with --source NAME


def add_param_flag(
    parser: argparse.ArgumentParser,
    option: str,
    *,
    key: str,
    per_source: bool = False,
    help: str,  # noqa: A002 - argparse's name, passed on to add_argument
    **kwargs: Any,
) -> None:
    """Add ``option`` to ``parser`` as the command-line value of params ``key``.

    Left out, the params decide; given, it wins over the params files and ``--set``
    (``params_dict_from_args``). ``per_source``: ``key`` is ``data.<field>`` and ``--source NAME``
    moves it to ``data.sources.NAME.<field>``. The parser keeps its flags in its
    ``param_flags`` default, where the precedence rule (and its test) find them."""
    where = f"data.sources.NAME.{key.split('.', 1)[1]} with --source NAME" if per_source else ""
    action = parser.add_argument(
        option,
        default=None,
        help=f"{help} [params: {key}{', or ' + where if where else ''}; the flag wins]",
        **kwargs,
    )
    flags = parser.get_default("param_flags") or []
    parser.set_defaults(param_flags=[*flags, ParamFlag(option, action.dest, key, per_source)])


def _flag_key(flag: ParamFlag, args: argparse.Namespace, data: dict[str, Any]) -> str:
    """The params key ``flag`` sets: for a per-source flag, the block ``--source`` names."""
    name = getattr(args, "source", None)
    section = data.get("data") if isinstance(data.get("data"), dict) else {}
    main_source = section.get("source", DataParams().source)
    if not flag.per_source or name in (None, main_source):
        return flag.key
    sources = section.get("sources") if isinstance(section.get("sources"), dict) else {}
    if name not in sources:
        raise ReidpipeError(
            f"--source {name!r}: not data.source ({main_source!r}) nor a key of "
            f"data.sources ({sorted(sources)})"
        )
    return f"data.sources.{name}.{flag.key.split('.', 1)[1]}"


def default_params_file(takes_params: bool = True) -> str:
    """params.yaml, for a command that needs parameters and was given no ``--params``
    (``takes_params``: the command has that option to offer instead)."""
    if not Path(DEFAULT_PARAMS_FILE).exists():
        instead = " or give --params FILE" if takes_params else ""
        raise ReidpipeError(
            f"no params file: {DEFAULT_PARAMS_FILE} (the default) does not exist "
            f"in {Path.cwd()}; run in the project folder{instead}"
        )
    return DEFAULT_PARAMS_FILE


def params_dict_from_args(args: argparse.Namespace, *, needs_file: bool = True) -> dict[str, Any]:
    """The parameters of one command, merged but not yet validated, by the one precedence rule:

        built-in defaults < params files (``--params``, in order) < ``--set`` < the
        subcommand's own flags (``add_param_flag``)

    (the defaults join at validation, which therefore sees the final values). A command that
    ``needs_file`` reads ``--params``, else ``params.yaml``, which must then exist; any other
    reads only the files ``--params`` names."""
    files = args.params
    if files is None and needs_file:
        files = [default_params_file()]
    data = merged_params_dict(files or [], args.overrides)
    for flag in getattr(args, "param_flags", None) or []:
        value = getattr(args, flag.dest)
        if value is not None:
            apply_override(data, _flag_key(flag, args, data).split("."), value)
    return data


def params_from_args(args: argparse.Namespace, *, needs_file: bool = True) -> Params:
    """The validated parameters of one command (``params_dict_from_args``), with the CPU
    kernels pinned as ``pipeline.cpu_isa`` says before the stage computes anything."""
    params = params_from_dict(params_dict_from_args(args, needs_file=needs_file))
    note = environment.pin_cpu_isa(params.pipeline.cpu_isa)
    if note.startswith("warning: "):
        log.warning(note.removeprefix("warning: "))
    elif note:
        log.info(note)
    return params


def add_source_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        metavar="NAME",
        help="dataset source: data.source (the default) or a key of data.sources",
    )


def add_arch_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--arch", required=True, metavar="NAME", help="architecture name (keys of archs)"
    )


# The --splits of the stages that check a model's retrieval against another's
PARITY_SPLITS_HELP = "split manifests; query/gallery give the retrieval parity check"


def add_folder_arguments(parser: argparse.ArgumentParser, **helps: str) -> None:
    """A required ``--NAME DIR`` for each keyword (``onnx_dir``: ``--onnx-dir``), in order."""
    for name, text in helps.items():
        parser.add_argument(f"--{name.replace('_', '-')}", required=True, metavar="DIR", help=text)


def source_from_args(args: argparse.Namespace, params: Params) -> SourceParams:
    """The block of the source ``--source`` names (default: data.source)."""
    return params.source(args.source or params.data.source)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reidpipe", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="STAGE")
    common = common_parser()
    for name in command_modules():
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
_WORKER_TRACEBACK = re.compile(
    r"Caught \w+ in DataLoader worker process \d+\.\n"
    r"Original Traceback.*\n(?:[\w.]+\.)?\w+: (?P<message>.*)$",
    re.DOTALL,
)


def error_message(exc: ReidpipeError) -> str:
    """The message of ``exc``, without the traceback a worker process wrapped it in."""
    text = str(exc)
    worker = _WORKER_TRACEBACK.match(text)
    return worker.group("message").strip() if worker else text


def _provenance_recorder(args: argparse.Namespace) -> Any:
    """What writes the run's provenance once it has succeeded (None without ``--provenance``).
    The stage table is imported by name: it is the workflows' bookkeeping, not something a
    stage computes, so it stays out of every stage's code dependencies (reidpipe.code_deps)."""
    if not getattr(args, "provenance", None):
        return None
    records = importlib.import_module("reidpipe.stages.records")
    return records.provenance_recorder(args.provenance, params_dict_from_args(args))


# The arguments that name a command's outputs: each is locked while the command runs.
OUTPUT_ARGUMENTS = ("out", "report", "cmc", "per_query")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.command.replace("_", "-"))
    outputs = [value for name in OUTPUT_ARGUMENTS if (value := getattr(args, name, None))]
    try:
        with signals_interrupt(), output_lock.locked(outputs):
            record_provenance = _provenance_recorder(args)
            if getattr(args, "single_gpu", False):
                code = _run_on_one_gpu(args)
            else:
                code = int(args.run(args) or 0)
            if code == 0 and record_provenance is not None:
                record_provenance()
            return code
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
