"""Atomic writes: every stage output appears complete or not at all.

Outputs are written to a temporary sibling (same directory, so the final rename is atomic on
POSIX) and renamed into place only after the writer finished without error. A destination of the
wrong kind (a folder where a file goes, or the reverse) or one that cannot be written is one
ReidpipeError naming it.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import yaml

from reidpipe.errors import ReidpipeError

log = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_temporaries(folder: str | os.PathLike[str]) -> None:
    """Remove every temporary a killed run left in ``folder`` (one writer at a time, as below)."""
    folder = Path(folder)
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.name.startswith(".") and ".tmp-" in entry.name:
                _remove(entry)


def _remove(stale: Path) -> None:
    log.info(f"removing {stale}, left by an interrupted run")
    if stale.is_dir() and not stale.is_symlink():
        shutil.rmtree(stale, ignore_errors=True)
    else:
        stale.unlink(missing_ok=True)


def _remove_stale(path: Path) -> None:
    """Remove the temporaries a killed run left beside ``path`` (a stage's outputs have one
    writer at a time: Snakemake's lock and DVC's lock see to that)."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.tmp-*"):
        _remove(stale)


def _temp_sibling(path: Path, is_dir: bool) -> Path:
    """A unique temporary path beside ``path``, with the permissions a plain create would give
    (mkdtemp/mkstemp make them private, which a shared cluster filesystem would inherit)."""
    prefix = f".{path.name}.tmp-"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if is_dir:
            tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
            os.chmod(tmp, 0o777 & ~_umask())
            return tmp
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=path.suffix, dir=path.parent)
    except OSError as exc:
        raise ReidpipeError(f"cannot write {path}: {exc.strerror or exc}"
                            + (f" ({exc.filename})" if exc.filename else "")) from None
    os.close(fd)
    os.chmod(name, 0o666 & ~_umask())
    return Path(name)


def _check_kind(path: Path, is_dir: bool) -> None:
    """Refuse to replace a folder by a file or a file by a folder: a mistyped --out must not
    delete what is there."""
    if is_dir and path.exists() and not path.is_dir():
        raise ReidpipeError(f"{path} exists and is not a directory; expected a folder to write "
                            "into (or nothing there)")
    if not is_dir and path.is_dir():
        raise ReidpipeError(f"{path} is a directory; expected a file name to write")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary file path; on success it replaces ``path``, on error it is deleted.

    The temporary name keeps the suffix of ``path`` so libraries that dispatch on the
    extension (``np.save``, ``savefig``) write the right format.
    """
    final = Path(path)
    _check_kind(final, is_dir=False)
    _remove_stale(final)
    tmp = _temp_sibling(final, is_dir=False)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces the directory ``path`` whole."""
    final = Path(path)
    _check_kind(final, is_dir=True)
    _remove_stale(final)
    tmp = _temp_sibling(final, is_dir=True)
    try:
        yield tmp
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(src: str | os.PathLike[str], final: str | os.PathLike[str]) -> None:
    """Move the finished directory ``src`` to ``final``, replacing any directory there whole.

    ``src`` must be on the same filesystem (a sibling or a folder beside it). The old directory is
    first renamed into a trash folder, then the new one takes its place: ``final`` never holds a
    mix of the two, though a crash between the two renames leaves it missing (a rerun rebuilds it).
    """
    final = Path(final)
    if not final.exists():
        os.replace(src, final)
        return
    trash = _temp_sibling(final, is_dir=True)
    os.replace(final, trash / final.name)
    os.replace(src, final)
    shutil.rmtree(trash, ignore_errors=True)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_yaml(path: str | os.PathLike[str], data: Any) -> None:
    write_text(path, yaml.safe_dump(data, sort_keys=False))
