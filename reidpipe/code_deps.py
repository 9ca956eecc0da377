"""The code a stage runs: reidpipe's import graph, read from the sources with ``ast``.

Imports inside functions count, because the CLI imports each stage module inside its ``run``
function (so that building the parser stays light). A stage's code is the closure of its CLI
module; importing ``reidpipe.a.b`` also runs the package ``reidpipe/a/__init__.py``, so package
initialisers of every module in the closure are part of it.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path
from typing import Iterable

PACKAGE = "reidpipe"
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
    anchor = anchor[:len(anchor) - (node.level - 1)]
    return ".".join(anchor + ([node.module] if node.module else []))


@lru_cache(maxsize=None)
def _imports(name: str, root: Path, stamp: float) -> frozenset[str]:
    path = module_file(name, root)
    assert path is not None, name
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, name, path.name == "__init__.py")
            # `from pkg import x` imports pkg and, when x is a module, pkg.x.
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(t for t in targets
                     if t.split(".")[0] == PACKAGE and module_file(t, root) is not None)
    found.discard(name)
    return frozenset(found)


def imports(name: str, root: Path = ROOT) -> frozenset[str]:
    """The reidpipe modules ``name`` imports anywhere in its source (functions included)."""
    path = module_file(name, root)
    if path is None:
        raise ValueError(f"no module {name!r} under {root}")
    return _imports(name, root, path.stat().st_mtime)


def all_modules(root: Path = ROOT) -> list[str]:
    """Every module of the package, by dotted name."""
    names = []
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


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
        todo.extend(parent for parent in (".".join(parts[:i]) for i in range(1, len(parts)))
                    if module_file(parent, root) is not None)
    return seen


def code_files(entries: Iterable[str], root: Path = ROOT) -> list[str]:
    """Source files of the closure, relative to ``root`` (Snakemake inputs)."""
    return sorted(str(module_file(name, root).relative_to(root))  # type: ignore[union-attr]
                  for name in closure(entries, root))


def code_packages(entries: Iterable[str], root: Path = ROOT) -> list[str]:
    """The closure as DVC dependencies: each phase package (``reidpipe/training``) as a folder,
    shared top-level modules and the ``cli`` modules (one per stage) as files."""
    deps = set()
    for name in closure(entries, root):
        parts = name.split(".")
        path = module_file(name, root)
        assert path is not None
        if len(parts) >= 2 and parts[1] != "cli" and (root / parts[0] / parts[1]).is_dir():
            deps.add(f"{parts[0]}/{parts[1]}")
        else:
            deps.add(str(path.relative_to(root)))
    return sorted(deps)
