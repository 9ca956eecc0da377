"""The package's import graph: layered (a package imports only the layers below it), no cycle
(function-level imports included), messages through ``logging``, and each stage's code
dependencies cover what it runs. The graph is ``reidpipe.code_deps``' walker, the one that finds
each stage's code."""

from __future__ import annotations

import ast
from pathlib import Path

from support import ROOT, write_tree

from reidpipe import code_deps

PACKAGE = ROOT / "reidpipe"

# The layer contract, lowest first: a module may import its own layer and those before it, never
# one after. ``shared`` is the top-level modules (reidpipe/*.py); each other layer is the package
# of that name; ``reidpipe/__main__.py`` is the CLI's entry point. Evaluation sits below training:
# training validates with evaluation's ranking (one definition of mAP), and extraction gets a
# trained model from its caller instead of importing training.
LAYERS = ("shared", "params", "data", "evaluation", "training", "deploy", "report", "stages", "cli")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def import_graph(root: Path = ROOT) -> dict[str, frozenset[str]]:
    return {
        name: code_deps.imports(name, root)
        for name in (module_name(p, root) for p in sorted((root / "reidpipe").rglob("*.py")))
    }


def layer(name: str, root: Path = ROOT) -> str:
    parts = name.split(".")
    if parts[1] == "__main__":
        return "cli"
    return parts[1] if (root / parts[0] / parts[1]).is_dir() else "shared"


def upward_imports(graph: dict[str, frozenset[str]], root: Path = ROOT) -> list[str]:
    """Each import of a later layer, as ``importer (layer) -> imported (layer)``."""
    found = []
    for name, targets in sorted(graph.items()):
        for target in sorted(targets):
            below, above = layer(name, root), layer(target, root)
            assert below in LAYERS and above in LAYERS, f"{name} or {target}: no layer"
            if LAYERS.index(above) > LAYERS.index(below):
                found.append(f"{name} ({below}) -> {target} ({above})")
    return found


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
    graph = {name: set(targets) for name, targets in import_graph().items()}
    assert sum(map(len, graph.values())) > len(MODULES), "the walker found too few imports"
    assert cycles(graph) == []


def test_each_package_imports_only_the_layers_below_it():
    graph = import_graph()
    assert {layer(name) for name in graph} == set(LAYERS), (
        "a package without a layer, or a layer without a package"
    )
    assert upward_imports(graph) == []


def test_the_layer_check_sees_a_function_level_upward_import(tmp_path):
    files = {
        "reidpipe/errors.py": "",
        "reidpipe/params/__init__.py": "",
        "reidpipe/params/schema.py": (
            "from typing import TYPE_CHECKING\n"
            "from reidpipe import errors\n"
            "if TYPE_CHECKING:\n    from reidpipe.cli import main\n"
            "def lookup():\n    from ..training import model\n"
        ),
        "reidpipe/training/__init__.py": "",
        "reidpipe/training/model.py": "from reidpipe.params.schema import lookup\n",
        "reidpipe/cli/__init__.py": "def main():\n    pass\n",
    }
    write_tree(tmp_path, files)
    # The type-only import of the CLI never runs; the one inside a function does.
    assert upward_imports(import_graph(tmp_path), tmp_path) == [
        "reidpipe.params.schema (params) -> reidpipe.training (training)",
        "reidpipe.params.schema (params) -> reidpipe.training.model (training)",
    ]


def test_messages_go_through_logging():
    """No ``print`` and no writes to ``sys.stderr``: one logging format for every message."""
    offenders = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                offenders.append(f"{name}:{node.lineno} print()")
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "stderr"
                and isinstance(node.value, ast.Name)
                and node.value.id == "sys"
            ):
                offenders.append(f"{name}:{node.lineno} sys.stderr")
    assert offenders == []


def test_no_comment_cites_a_document_the_repository_lacks():
    """Comments and docstrings may point to files of the repository, not to outside notes."""
    offenders = [
        f"{path.relative_to(ROOT)}"
        for path in [*PACKAGE.rglob("*.py"), *(ROOT / "workflow").rglob("*")]
        if path.is_file() and "GUIDE" in path.read_text(encoding="utf-8", errors="ignore")
    ]
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
    write_tree(tmp_path, files)
    entries = ["reidpipe.cli", "reidpipe.cli.train"]
    assert code_deps.code_files(entries, tmp_path) == sorted(
        name for name in files if not name.startswith("reidpipe/report")
    )
    assert code_deps.code_packages(entries, tmp_path) == [
        "reidpipe/cli/__init__.py",
        "reidpipe/cli/train.py",
        "reidpipe/errors.py",
        "reidpipe/params",
        "reidpipe/training",
    ]
