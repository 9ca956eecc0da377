"""Parse one README command line with its tool's own argument parser, running nothing.

    python tests/e2e/readme_parse.py reidpipe|dvc|pip ARGS...
    python tests/e2e/readme_parse.py script PATH ARGS...

Exit 0 when the tool accepts the subcommand and every flag, 1 (with the parser's message) when
not. ``tests/e2e/test_readme.py`` calls it in place of the real command for the README blocks that
are too long to run. A script's flags are looked up in its ``--help``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path


def parse_reidpipe(args: list[str]) -> None:
    from reidpipe.cli import build_parser

    build_parser().parse_args(args)


def parse_dvc(args: list[str]) -> None:
    from dvc.cli import DvcParserError
    from dvc.cli.parser import get_main_parser

    try:
        get_main_parser().parse_args(args)
    except DvcParserError as exc:  # raised after printing the reason, where argparse exits 2
        raise SystemExit(2) from exc


def parse_pip(args: list[str]) -> None:
    """pip's own option parser for the subcommand, and every ``.[extra]`` an extra of
    pyproject.toml."""
    from pip._internal.commands import create_command

    options, targets = create_command(args[0]).parse_args(args[1:])
    extras = tomllib.loads(Path("pyproject.toml").read_text())["project"]["optional-dependencies"]
    for target in [*targets, *getattr(options, "editables", [])]:
        named = re.fullmatch(r"\.\[(.*)\]", target)
        for extra in named.group(1).split(",") if named else []:
            if extra not in extras:
                raise SystemExit(f"pip: no extra {extra!r} in pyproject.toml ({sorted(extras)})")


def script_usage(path: str) -> str:
    """The script's --help, kept in $READMETEST_CACHE when set (a benchmark's --help imports
    torch: seconds each time the README names it)."""
    cache = os.environ.get("READMETEST_CACHE")
    kept = Path(cache, re.sub(r"\W", "_", path)) if cache else None
    if kept is not None and kept.is_file():
        return kept.read_text()
    usage = subprocess.run(
        [sys.executable, path, "--help"], capture_output=True, text=True, check=True
    ).stdout
    if kept is not None:
        kept.write_text(usage)
    return usage


def parse_script(args: list[str]) -> None:
    path, *rest = args
    usage = script_usage(path)
    for flag in (token.split("=", 1)[0] for token in rest if token.startswith("-")):
        if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", usage):
            raise SystemExit(f"{path}: no option {flag} in its --help")


PARSERS = {"reidpipe": parse_reidpipe, "dvc": parse_dvc, "pip": parse_pip, "script": parse_script}


def main(argv: list[str]) -> int:
    tool, *args = argv
    try:
        PARSERS[tool](args)
    except SystemExit as exc:  # argparse and optparse exit 2 after printing the reason
        if exc.code not in (0, None):
            print(f"refused: {tool} {' '.join(args)}: {exc.code}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
