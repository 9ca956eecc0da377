"""The code a stage runs: reidpipe's import graph, read from the sources with ``ast``.

Imports inside functions count, because the CLI imports each stage module inside its ``run``
function (so that building the parser stays light); imports under ``if TYPE_CHECKING:`` do not,
since they never run. A stage's code is the closure of its CLI
module; importing ``reidpipe.a.b`` also runs the package ``reidpipe/a/__init__.py``, so package
initialisers of every module in the closure are part of it. A module that reads files of its own
at run time (a template) names them, relative to its folder, in a module-level tuple
``CODE_DATA_FILES``; they are part of the code of every stage whose closure holds the module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from functools import cache
from pathlib import Path

PACKAGE = "reidpipe"
DATA_FILES_NAME = "CODE_DATA_FILES"
# The folder holding the reidpipe package: paths below are relative to it (the repository root).
ROOT = Path(__file__).resolve().parents[1]


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The source file of module ``name`` (a package's ``__init__.py``), or None."""
    base = root.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    anchor = parts if is_package else parts[:-1]
    anchor = anchor[: len(anchor) - (node.level - 1)]
    return ".".join(anchor + ([node.module] if node.module else []))


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """The ids of every node in the body of an ``if TYPE_CHECKING:`` (its ``else`` runs)."""
    nodes: set[int] = set()
    for node in ast.walk(tree):
        test = node.test if isinstance(node, ast.If) else None
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        ):
            nodes.update(id(sub) for child in node.body for sub in ast.walk(child))
    return nodes


@cache
def _imports(name: str, root: Path, stamp: float) -> frozenset[str]:
    path = module_file(name, root)
    assert path is not None, name
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    type_only = _type_checking_nodes(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, name, path.name == "__init__.py")
            # `from pkg import x` imports pkg and, when x is a module, pkg.x.
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(
            t for t in targets if t.split(".")[0] == PACKAGE and module_file(t, root) is not None
        )
    found.discard(name)
    return frozenset(found)


def _module_strings(tree: ast.Module) -> dict[str, str]:
    """The module-level ``NAME = "text"`` assignments."""
    return {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }


@cache
def _data_files(name: str, root: Path, stamp: float) -> tuple[Path, ...]:
    path = module_file(name, root)
    assert path is not None, name
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    listed = next(
        (
            node.value
            for node in tree.body
            if isinstance(node, ast.Assign)
            and any(getattr(t, "id", None) == DATA_FILES_NAME for t in node.targets)
        ),
        None,
    )
    if listed is None:
        return ()
    strings = _module_strings(tree)
    elements = listed.elts if isinstance(listed, (ast.Tuple, ast.List)) else [listed]
    names = [
        strings.get(e.id) if isinstance(e, ast.Name) else getattr(e, "value", None)
        for e in elements
    ]
    if not all(isinstance(n, str) for n in names):
        raise ValueError(
            f"{path}: {DATA_FILES_NAME} must list strings or names of module-level strings"
        )
    return tuple(path.parent / n for n in names)


def data_files(name: str, root: Path = ROOT) -> tuple[Path, ...]:
    """The files module ``name`` lists in ``CODE_DATA_FILES`` (none when it has no such tuple)."""
    path = module_file(name, root)
    if path is None:
        raise ValueError(f"no module {name!r} under {root}")
    files = _data_files(name, root, path.stat().st_mtime)
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ValueError(f"{path}: {DATA_FILES_NAME} names missing files {missing}")
    return files


def imports(name: str, root: Path = ROOT) -> frozenset[str]:
    """The reidpipe modules ``name`` imports anywhere in its source (functions included)."""
    path = module_file(name, root)
    if path is None:
        raise ValueError(f"no module {name!r} under {root}")
    return _imports(name, root, path.stat().st_mtime)


def closure(entries: Iterable[str], root: Path = ROOT) -> set[str]:
    """The modules that running ``entries`` can execute: imports, transitively, plus the
    ``__init__`` of every package on the way."""
    seen: set[str] = set()
    todo = list(entries)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(imports(name, root))
        parts = name.split(".")
        todo.extend(
            parent
            for parent in (".".join(parts[:i]) for i in range(1, len(parts)))
            if module_file(parent, root) is not None
        )
    return seen


def code_files(entries: Iterable[str], root: Path = ROOT) -> list[str]:
    """Source files of the closure and their data files, relative to ``root`` (Snakemake
    inputs)."""
    files = []
    for name in closure(entries, root):
        files.append(str(module_file(name, root).relative_to(root)))  # type: ignore[union-attr]
        files += [str(path.relative_to(root)) for path in data_files(name, root)]
    return sorted(files)


def code_packages(entries: Iterable[str], root: Path = ROOT) -> list[str]:
    """The closure as DVC dependencies: each phase package (``reidpipe/training``) as a folder,
    shared top-level modules and the ``cli`` modules (one per stage) as files."""
    deps = set()
    for name in closure(entries, root):
        parts = name.split(".")
        path = module_file(name, root)
        assert path is not None
        if len(parts) >= 2 and parts[1] != "cli" and (root / parts[0] / parts[1]).is_dir():
            deps.add(f"{parts[0]}/{parts[1]}")  # the folder holds the data files too
        else:
            deps.add(str(path.relative_to(root)))
            deps.update(str(data.relative_to(root)) for data in data_files(name, root))
    return sorted(deps)
