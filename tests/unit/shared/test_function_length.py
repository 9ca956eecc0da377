"""No function of the package, the benchmarks, the CI scripts or the tests' shared helpers runs
over 60 lines, unless its docstring says why it is kept whole (a sentence starting "Long
because"): a longer one usually holds several ideas, which read better as functions with names.
Test functions themselves are scenarios, read top to bottom, and are not held to it."""

from __future__ import annotations

import ast
from pathlib import Path

from support import ROOT, write_tree

MAX_LINES = 60
REASON = "Long because"
CHECKED = ("reidpipe", "benchmarks", ".ci", "tests/support")


def long_functions(root: Path, folders: tuple[str, ...] = CHECKED) -> list[str]:
    """``path:line name (N lines)`` of each function over ``MAX_LINES`` lines, from its ``def``
    to its last line, whose docstring gives no reason."""
    found = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES and REASON not in (ast.get_docstring(node) or ""):
                    where = path.relative_to(root)
                    found.append(f"{where}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_runs_over_the_limit_without_a_reason() -> None:
    found = long_functions(ROOT)
    assert not found, (
        f"functions over {MAX_LINES} lines whose docstring gives no reason ('{REASON} ...'): "
        "split them, or say why they are kept whole:\n" + "\n".join(found)
    )


def _function(name: str, body_lines: int, docstring: str = "") -> str:
    doc = f'    """{docstring}"""\n' if docstring else ""
    return f"def {name}():\n{doc}" + "    x = 1\n" * body_lines


def test_the_check_finds_a_long_function_and_accepts_a_stated_reason(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "reidpipe/a.py": _function("short", MAX_LINES - 1)
            + _function("too_long", MAX_LINES)
            + "class C:\n"
            + "\n".join("    " + line for line in _function("method", MAX_LINES).splitlines()),
            "reidpipe/b.py": _function("kept", MAX_LINES, "Long because: one table."),
        },
    )
    assert long_functions(tmp_path, ("reidpipe",)) == [
        f"reidpipe/a.py:{MAX_LINES + 1} too_long ({MAX_LINES + 1} lines)",
        f"reidpipe/a.py:{2 * MAX_LINES + 3} method ({MAX_LINES + 1} lines)",
    ]
