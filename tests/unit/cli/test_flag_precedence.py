"""One precedence rule for every command (issue 24, items 3 and 4).

built-in defaults < params files (in order) < ``--set`` < the subcommand's own flags, and the
validation of the params sees the final values. The flags with a params key behind them are
found in the parser (``add_param_flag``), so a new one is covered without touching this file.
A params file is read only where one is named or the command needs it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import ROOT

from reidpipe.cli import ParamFlag, build_parser, main, params_from_args
from reidpipe.errors import ReidpipeError
from reidpipe.params import Params

PARAMS = ROOT / "params.yaml"
TAO_SPEC = ROOT / "tests" / "fixtures" / "tao" / "resnet50_market.yaml"
REIDPIPE = Path(sys.executable).parent / "reidpipe"
FURTHER = "extra"  # a further source, for the flags that follow --source
# Commands that take --params but need no params file (params --schema/--from-tao: below).
NEEDS_NO_PARAMS = {"synth", "stages"}  # stages: the table; --dvc-yaml/--tracked read params


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (choices,) = [a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(choices)


def param_flags() -> list[tuple[str, ParamFlag]]:
    return [
        (command, flag)
        for command, sub in subcommands().items()
        for flag in sub.get_default("param_flags") or []
    ]


FLAGS = param_flags()


def required_argv(sub: argparse.ArgumentParser) -> list[str]:
    """Placeholder values for the arguments ``sub`` requires."""
    argv: list[str] = []
    chosen = [group._group_actions[0] for group in sub._mutually_exclusive_groups if group.required]
    for action in sub._actions:
        if action.option_strings and (action.required or action in chosen):
            argv += [action.option_strings[0], "x"]
        elif not action.option_strings:  # a positional argument
            argv.append("x")
    return argv


def field_of(key: str) -> tuple[Any, dict[str, Any]]:
    """The type and the range metadata of the params field ``key`` (e.g. data.strict)."""
    cls: Any = Params
    for part in key.split("."):
        field = {f.name: f for f in dataclasses.fields(cls)}[part]
        cls = typing.get_type_hints(cls)[part]
    return cls, dict(field.metadata)


def two_values(key: str) -> tuple[Any, Any]:
    """Two different valid values of ``key``."""
    tp, meta = field_of(key)
    if tp is bool:
        return True, False
    if tp is int:
        low = meta.get("ge", 0)
        return low, low + 1
    if typing.get_origin(tp) is typing.Literal:
        return typing.get_args(tp)[:2]
    if tp is str:
        return "/from/params", "/from/flag"
    if tp == list[str]:
        return ["http://params.invalid/a.zip"], ["http://flag.invalid/b.zip", "http://c.invalid/"]
    raise AssertionError(f"{key}: teach two_values the type {tp}")


def flag_argv(sub: argparse.ArgumentParser, flag: ParamFlag, value: Any) -> list[str]:
    (action,) = [a for a in sub._actions if a.dest == flag.dest]
    if isinstance(action, argparse.BooleanOptionalAction):
        return [flag.option if value else "--no-" + flag.option[2:]]
    if isinstance(action, argparse._AppendAction):
        return [arg for item in value for arg in (flag.option, item)]
    return [flag.option, str(value)]


def nested(key: str, value: Any) -> dict[str, Any]:
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def effective(command: str, argv: list[str]) -> Params:
    args = build_parser().parse_args([command, *required_argv(subcommands()[command]), *argv])
    return params_from_args(args)


def value_at(params: Any, key: str) -> Any:
    for part in key.split("."):
        params = getattr(params, part)
    return params


def test_the_flags_are_found() -> None:
    found = {(command, flag.option, flag.key) for command, flag in FLAGS}
    assert ("validate", "--strict", "data.strict") in found
    assert ("synth", "--ids", "data.synthetic_ids") in found


@pytest.mark.parametrize("command, flag", FLAGS, ids=[f"{c} {f.option}" for c, f in FLAGS])
@pytest.mark.parametrize("flipped", [False, True], ids=["a-b", "b-a"])
def test_flag_wins_over_params_file_and_set(
    command: str, flag: ParamFlag, flipped: bool, tmp_path: Path
) -> None:
    file_value, flag_value = two_values(flag.key)[::-1] if flipped else two_values(flag.key)
    opposite = tmp_path / "opposite.yaml"
    opposite.write_text(yaml.safe_dump(nested(flag.key, file_value)))
    files = ["--params", str(PARAMS), str(opposite)]
    given = flag_argv(subcommands()[command], flag, flag_value)
    assert value_at(effective(command, files), flag.key) == file_value
    assert value_at(effective(command, [*files, *given]), flag.key) == flag_value
    same_set = ["--set", f"{flag.key}={json.dumps(file_value)}"]
    assert value_at(effective(command, [*files, *same_set]), flag.key) == file_value
    assert value_at(effective(command, [*files, *same_set, *given]), flag.key) == flag_value
    assert value_at(effective(command, [*given, *files, *same_set]), flag.key) == flag_value
    if flag.per_source:  # --source NAME: the flag sets NAME's block, not data.source's
        field = flag.key.split(".", 1)[1]
        further = {"source": "market1501", field: file_value}
        opposite.write_text(
            yaml.safe_dump({"data": {field: file_value, "sources": {FURTHER: further}}})
        )
        params = effective(command, [*files, "--source", FURTHER, *given])
        assert getattr(params.source(FURTHER), field) == flag_value
        assert value_at(params, flag.key) == file_value


def test_validation_sees_the_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's example end to end: --no-strict on a custom source (which has no official
    statistics, so strict is refused) passes; --strict over data.strict=false is refused."""
    data = tmp_path / "ds"
    assert main(["synth", "--out", str(data), "--ids", "6", "--workers", "1"]) == 0
    monkeypatch.chdir(ROOT)  # the default params.yaml, which says data.strict: true
    report = tmp_path / "r.json"
    assert (
        main(
            [
                "validate",
                str(data),
                "--report",
                str(report),
                "--no-strict",
                "--set",
                "data.source=custom",
            ]
        )
        == 0
    )
    assert json.loads(report.read_text())["strict"] is False
    report.unlink()
    for argv in (
        ["--strict", "--set", "data.strict=false", "--set", "data.source=custom"],
        [
            "--source",
            FURTHER,
            "--strict",
            "--set",
            f"data.sources.{FURTHER}.source=custom",
            "--set",
            f"data.sources.{FURTHER}.strict=false",
        ],
    ):
        with pytest.raises(ReidpipeError, match="strict is true but custom has no official"):
            effective("validate", argv)
    assert (
        main(
            [
                "validate",
                str(data),
                "--report",
                str(report),
                "--source",
                FURTHER,
                "--no-strict",
                "--set",
                f"data.sources.{FURTHER}.source=custom",
                "--set",
                f"data.sources.{FURTHER}.strict=true",
            ]
        )
        == 0
    )
    with pytest.raises(ReidpipeError, match=r"data.synthetic_ids = 2 is out of range"):
        effective("synth", ["--ids", "2"])
    with pytest.raises(ReidpipeError, match=r"--source 'nope': not data.source"):
        effective("validate", ["--source", "nope", "--no-strict"])


def reidpipe(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(REIDPIPE), *argv], cwd=cwd, capture_output=True, text=True, check=False, timeout=120
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["params", "--from-tao", str(TAO_SPEC), "--out", "tao.yaml"],
        ["synth", "--out", "ds", "--ids", "4", "--workers", "1"],
        ["params", "--schema"],
        ["stages"],
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_commands_without_params_run_anywhere(argv: list[str], tmp_path: Path) -> None:
    done = reidpipe(tmp_path, *argv)
    assert done.returncode == 0, done.stderr


def test_a_command_needing_params_says_so_in_one_line(tmp_path: Path) -> None:
    done = reidpipe(tmp_path, "validate", "ds", "--report", "r.json")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"reidpipe validate: error: no params file: params.yaml (the "
        f"default) does not exist in {tmp_path}; run in the project "
        "folder or give --params FILE"
    )


def test_every_command_reads_a_params_file_only_where_it_needs_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each command with --params, run in an empty folder: those that need parameters stop at
    the missing params.yaml; the rest (NEEDS_NO_PARAMS) are checked above."""
    monkeypatch.chdir(tmp_path)
    commands = {
        name: sub
        for name, sub in subcommands().items()
        if any("--params" in a.option_strings for a in sub._actions)
    }
    assert set(commands) >= NEEDS_NO_PARAMS
    for name, sub in commands.items():
        if name in NEEDS_NO_PARAMS:
            continue
        args = build_parser().parse_args([name, *required_argv(sub)])
        with pytest.raises(ReidpipeError, match="^no params file: params.yaml") as info:
            args.run(args)
        assert "\n" not in str(info.value), name
    assert sorted(tmp_path.iterdir()) == []
