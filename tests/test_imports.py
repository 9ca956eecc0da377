"""The package's import graph: no cycle (function-level imports included), messages through
``logging``, and each stage's code dependencies cover what it runs."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "reidpipe"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str) -> set[str]:
    """Every reidpipe module ``name`` imports, at module level or inside a function."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + [node.module] if node.module else anchor)
            else:
                base = node.module
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m in MODULES and m != name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_function_level_cycle(tmp_path):
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    graph = {name: imported(name) for name in MODULES}
    assert sum(map(len, graph.values())) > len(MODULES), "the walker found too few imports"
    assert cycles(graph) == []


def test_messages_go_through_logging():
    """No ``print`` and no writes to ``sys.stderr``: one logging format for every message."""
    offenders = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                offenders.append(f"{name}:{node.lineno} print()")
            if isinstance(node, ast.Attribute) and node.attr == "stderr" \
                    and isinstance(node.value, ast.Name) and node.value.id == "sys":
                offenders.append(f"{name}:{node.lineno} sys.stderr")
    assert offenders == []


def test_no_comment_cites_a_document_the_repository_lacks():
    """Comments and docstrings may point to files of the repository, not to outside notes."""
    offenders = [f"{path.relative_to(ROOT)}" for path in [*PACKAGE.rglob("*.py"),
                                                           *(ROOT / "workflow").rglob("*")]
                 if path.is_file() and "GUIDE" in path.read_text(encoding="utf-8", errors="ignore")]
    assert offenders == []


def test_code_deps_follow_function_level_imports_and_package_initialisers(tmp_path):
    from reidpipe import code_deps

    files = {
        "reidpipe/cli/__init__.py": "from reidpipe import errors\n",
        "reidpipe/cli/train.py": "def run():\n    from reidpipe.training.train import go\n",
        "reidpipe/errors.py": "",
        "reidpipe/training/__init__.py": "",
        "reidpipe/training/train.py": "from . import losses\nfrom .model import Net\n",
        "reidpipe/training/losses.py": "import torch\n",
        "reidpipe/training/model.py": "from ..params import Params\n",
        "reidpipe/params/__init__.py": "from reidpipe.params.schema import Params\n",
        "reidpipe/params/schema.py": "",
        "reidpipe/report/__init__.py": "",
        "reidpipe/report/build.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    entries = ["reidpipe.cli", "reidpipe.cli.train"]
    assert code_deps.code_files(entries, tmp_path) == sorted(
        name for name in files if not name.startswith("reidpipe/report"))
    assert code_deps.code_packages(entries, tmp_path) == [
        "reidpipe/cli/__init__.py", "reidpipe/cli/train.py", "reidpipe/errors.py",
        "reidpipe/params", "reidpipe/training"]
