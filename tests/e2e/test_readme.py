"""The README's command blocks, run in a scratch copy of the repository, so the README cannot
drift from the code.

Every ```bash and ```yaml block of README.md follows a marker comment saying how it is tested:

    <!-- readme-test: run -->     runs as written (it must take seconds)
    <!-- readme-test: check -->   runs with the long commands replaced: `snakemake` and `make`
                                  as dry runs (-n); `reidpipe` (but its quick `params` and
                                  `stages`), `dvc` and `pip` command lines parsed by the tool's
                                  own argument parser (tests/e2e/readme_parse.py); a
                                  `python SCRIPT.py` command's flags looked up in its --help;
                                  `pytest` collecting only
    <!-- readme-test: params -->  (yaml) a params overrides file: `reidpipe params --params
                                  params.yaml BLOCK` must accept it
    <!-- readme-test: skip (REASON) -->

A marker may list `given:` lines: shell run before the block, unchanged, standing for what the
text around it assumes (a TAO spec of yours). The blocks run in README order in one scratch copy
(a file one block writes is there for the next), each in a new bash with `set -euo pipefail` and
the venv activated, as "First hour" says to.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from textwrap import dedent

import pytest
from support.repo_copy import ROOT, copy_working_tree

README = ROOT / "README.md"
MODES = {"bash": ("run", "check", "skip"), "yaml": ("params", "skip")}

FENCE = re.compile(r"^( *)```(bash|yaml)\n(.*?)^\1```$", re.MULTILINE | re.DOTALL)
MARKER = re.compile(r"<!-- readme-test: (\w+)((?:(?!-->).)*)-->\n\Z", re.DOTALL)
HEADING = re.compile(r"^#{2,4} (.+)$", re.MULTILINE)

# check mode: the long commands become their dry or parsed forms (functions win over PATH,
# also after the block activates the venv itself)
CHECK_SHIMS = r"""
readme_parse() { "$READMETEST_PYTHON" "$READMETEST_PARSER" "$@"; }
reidpipe() {
  case "${1:-}" in
    params|stages) command reidpipe "$@" ;;   # seconds: they run
    *) readme_parse reidpipe "$@" ;;
  esac
}
dvc() { readme_parse dvc "$@"; }
pip() { readme_parse pip "$@"; }
snakemake() { command snakemake "$@" --dry-run --quiet rules; }
make() { command make --dry-run "$@"; }
pytest() { command pytest --collect-only -q "$@"; }
python() {
  if [[ "${1:-}" == *.py ]]; then readme_parse script "$@"; else command python "$@"; fi
}
"""


@dataclass(frozen=True)
class Block:
    section: str
    line: int
    language: str
    mode: str
    given: tuple[str, ...]
    script: str

    @property
    def name(self) -> str:
        return f"{self.section} (README.md:{self.line})"

    @property
    def slug(self) -> str:
        return re.sub(r"\W+", "-", self.section.lower()).strip("-")


def readme_blocks(text: str) -> list[Block]:
    """Every ```bash and ```yaml block with its marker; a block without one is an error, so a new
    block cannot escape the test."""
    blocks = []
    for fence in FENCE.finditer(text):
        line = text.count("\n", 0, fence.start()) + 1
        headings = HEADING.findall(text, 0, fence.start())
        section = headings[-1] if headings else "top"
        marker = MARKER.search(text, 0, fence.start())
        language = fence.group(2)
        modes = "|".join(MODES[language])
        if marker is None or marker.end() != fence.start():
            raise AssertionError(
                f"README.md:{line} ({section}): a ```{language} block without a "
                f"<!-- readme-test: {modes} --> line before it (skip: with "
                f"its reason)"
            )
        mode, rest = marker.group(1), marker.group(2)
        if mode not in MODES[language] or (mode == "skip" and not rest.strip()):
            raise AssertionError(
                f"README.md:{line}: marker {marker.group(0).strip()!r} on a "
                f"```{language} block: expected {modes} (skip with its reason)"
            )
        given = tuple(g.strip() for g in re.findall(r"^\s*given: (.*)$", rest, re.MULTILINE))
        blocks.append(Block(section, line, language, mode, given, dedent(fence.group(3))))
    return blocks


BLOCKS = readme_blocks(README.read_text())


def test_the_quick_start_blocks_are_tested():
    """Set-up and First hour: every block runs or is checked, none merely skipped but the
    CPU-only venv (which needs an index the test machines cannot reach)."""
    quick = [
        b
        for b in BLOCKS
        if b.section in ("Set-up: two commands", "First hour") and b.language == "bash"
    ]
    assert len(quick) >= 6
    assert [b.name for b in quick if b.mode == "skip"] == [
        next(b.name for b in quick if "download.pytorch.org/whl/cpu" in b.script)
    ]


def test_every_reidpipe_flag_in_the_text_exists():
    """The inline `reidpipe SUBCOMMAND …` spans (the stage table's usage lines, commands in the
    prose): each subcommand exists and has each flag named. Fenced blocks are left out: the
    command blocks are run or checked below, and the "Adding a stage" diff adds a subcommand
    that exists only in its example."""
    from reidpipe.cli import build_parser

    subcommands = next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ).choices
    prose = re.sub(r"^```.*?^```", "", README.read_text(), flags=re.S | re.M)
    spans = set(re.findall(r"`(reidpipe [a-z][a-z-]*[^`]*)`", prose))
    unknown = []
    for span in sorted(spans):
        name = span.split()[1].rstrip(":")
        if name not in subcommands:
            unknown.append(f"{span!r}: no subcommand {name}")
            continue
        options = subcommands[name]._option_string_actions
        unknown += [
            f"{span!r}: no {flag}"
            for flag in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", span)
            if flag not in options
        ]
    assert len(spans) > 30 and not unknown, unknown


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """The working tree without ignored files, with the checkout's venv linked in as .venv."""
    repo = copy_working_tree(tmp_path_factory.mktemp("readme") / "repo")
    (repo / ".venv").symlink_to(Path(sys.prefix))
    return repo


def block_env(repo: Path) -> dict[str, str]:
    """A shell as a newcomer's: the venv not on PATH until activated; the copy's package first
    on the import path (the venv's editable install points at the checkout)."""
    venv_bin = str(Path(sys.prefix) / "bin")
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    env.update(
        PATH=path,
        PYTHONPATH=str(repo),
        READMETEST_PYTHON=sys.executable,
        READMETEST_PARSER=str(repo / "tests" / "e2e" / "readme_parse.py"),
        READMETEST_CACHE=str(repo.parent),
    )
    return env


def block_script(block: Block, repo: Path) -> str:
    if block.mode == "params":
        overrides = repo.parent / f"readme-{block.line}.yaml"
        overrides.write_text(block.script)
        return f"reidpipe params --params params.yaml {overrides} > /dev/null"
    return "\n".join([*block.given, CHECK_SHIMS if block.mode == "check" else "", block.script])


@pytest.mark.parametrize(
    "block", [b for b in BLOCKS if b.mode != "skip"], ids=lambda b: f"{b.slug}-{b.mode}-{b.line}"
)
def test_readme_block(block: Block, scratch: Path):
    script = "\n".join(
        ["set -euo pipefail", "source .venv/bin/activate", block_script(block, scratch)]
    )
    proc = subprocess.run(
        ["bash", "-c", script],
        cwd=scratch,
        env=block_env(scratch),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (
        f"{block.name}, {block.mode}: exit {proc.returncode}\n"
        f"{block.script}\n--- stdout\n{proc.stdout[-3000:]}\n"
        f"--- stderr\n{proc.stderr[-3000:]}"
    )
