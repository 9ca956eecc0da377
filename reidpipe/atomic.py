"""Atomic writes: every stage output appears complete or not at all.

Outputs are written to a temporary sibling (same directory, so the final rename is atomic on
POSIX) and renamed into place only after the writer finished without error. A stage that writes
several files writes them as one unit (``write_files``): all are replaced, or none. A
destination of the wrong kind (a folder where a file goes, or the reverse) or one that cannot be
written is one ReidpipeError naming it and what happened (disk full, read-only, ...).

Temporaries a killed run left are removed only by the owner of the output's lock
(``reidpipe.output_lock``), or when no run holds it.

A folder is replaced only when a stage wrote it: every folder written here carries
``OUTPUT_MARKER_FILE``, and a non-empty folder without it (a user's data, a mistyped ``--out``) is
refused before any work, never deleted.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import logging
import os
import resource
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from reidpipe import output_lock
from reidpipe.errors import ReidpipeError
from reidpipe.filenames import OUTPUT_MARKER_FILE

log = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_temporaries(folder: str | os.PathLike[str]) -> None:
    """Remove every temporary a killed run left in ``folder``: only by the owner of the lock on
    the folder (or one above it), or when no run holds one."""
    folder = Path(folder)
    with output_lock.may_clear(folder) as allowed:
        if allowed and folder.is_dir():
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
    """Remove the temporaries a killed run left beside ``path``, unless another run holds the
    lock on it (they are that run's work in progress)."""
    with output_lock.may_clear(path) as allowed:
        if allowed:
            for stale in path.parent.glob(f".{glob.escape(path.name)}.tmp-*"):
                _remove(stale)


# What an OS error on a write means, in plain words.
_WRITE_FAILURES = {
    errno.ENOSPC: "disk full (ENOSPC)",
    errno.EDQUOT: "disk quota exceeded (EDQUOT)",
    errno.EFBIG: "file too large (EFBIG)",
    errno.EROFS: "read-only file system (EROFS)",
    errno.EACCES: "permission denied (EACCES)",
    errno.EPERM: "operation not permitted (EPERM)",
    errno.EIO: "input/output error (EIO)",
}


def _short_write_cause(folder: Path) -> str:
    """Why a write stopped short when the writer gave no errno (numpy: "N requested and M
    written"; torch: "file write failed"): a full disk, else the file-size limit."""
    try:
        if os.statvfs(folder).f_bavail == 0:
            return _WRITE_FAILURES[errno.ENOSPC]
    except OSError:
        pass
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY:
        return f"{_WRITE_FAILURES[errno.EFBIG]}: the file-size limit (ulimit -f) is {limit} bytes"
    return "the file system took only part of the data"


def _is_short_write(exc: BaseException) -> bool:
    text = str(exc)
    return (isinstance(exc, OSError) and exc.errno is None and "written" in text) or (
        isinstance(exc, RuntimeError) and "file write failed" in text
    )


def _newest_file(folder: Path) -> Path | None:
    """The file created last under ``folder``: the one a write into the folder failed on."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_mtime_ns) if files else None


@contextlib.contextmanager
def _naming_write_failures(tmp: Path, final: Path, unit: Sequence[Path]) -> Iterator[None]:
    """An OS error while writing ``tmp`` (for ``final``, one of the outputs ``unit``) becomes one
    line naming the path and what happened; errors on other files (an input that cannot be read)
    pass unchanged."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        if isinstance(exc, OSError) and exc.errno in _WRITE_FAILURES:
            what = _WRITE_FAILURES[exc.errno]
        elif _is_short_write(exc):
            what = f"{_short_write_cause(final.parent)} ({exc})"
        else:
            raise
        filename = getattr(exc, "filename", None)
        if filename:  # a file of a temporary folder is named at its final place
            inside = os.path.relpath(os.path.abspath(filename), os.path.abspath(tmp))
            if inside.startswith(".."):
                raise
            failed = final if inside == "." else final / inside
        else:
            newest = _newest_file(tmp) if tmp.is_dir() else None
            failed = final / newest.relative_to(tmp) if newest else final
        kept = (
            "the previous outputs are left as they were"
            if any(f.exists() for f in unit)
            else "nothing was written"
        )
        raise ReidpipeError(f"cannot write {failed}: {what}; {kept}") from None


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
        raise ReidpipeError(
            f"cannot write {path}: "
            f"{_WRITE_FAILURES.get(exc.errno, exc.strerror or exc)}"
            + (f" ({exc.filename})" if exc.filename else "")
        ) from None
    os.close(fd)
    os.chmod(name, 0o666 & ~_umask())
    return Path(name)


def _check_kind(path: Path, is_dir: bool) -> None:
    """Refuse to replace a folder by a file or a file by a folder: a mistyped --out must not
    delete what is there."""
    if is_dir and path.exists() and not path.is_dir():
        raise ReidpipeError(
            f"{path} exists and is not a directory; expected a folder to write "
            "into (or nothing there)"
        )
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
        with _naming_write_failures(tmp, final, [final]):
            yield tmp
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_files(writers: Mapping[str | os.PathLike[str], Callable[[Path], object]]) -> None:
    """Write several files as one unit: each ``writers[path](tmp)`` writes a temporary; when all
    succeeded they replace the paths together, else every previous file stays whole (or none
    appears, when there was none).

    Every file is written before any is renamed, so a failed write (disk full, file-size limit)
    changes nothing. The renames then move each previous file aside first and put it back if a
    later rename fails. The paths are renamed in order (the last one marks a run done).
    """
    finals = [Path(p) for p in writers]
    for final in finals:
        _check_kind(final, is_dir=False)
        _remove_stale(final)
    temps: list[Path] = []
    try:
        for final, write in zip(finals, writers.values()):
            temps.append(_temp_sibling(final, is_dir=False))
            with _naming_write_failures(temps[-1], final, finals):
                write(temps[-1])
        _replace_files(temps, finals)
    except BaseException:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise


def _replace_files(temps: Sequence[Path], finals: Sequence[Path]) -> None:
    moved: list[tuple[Path, Path | None]] = []  # each final and where its previous file went
    try:
        for final in finals:
            previous = None
            if final.exists():
                previous = _temp_sibling(final, is_dir=False)
                os.replace(final, previous)
            moved.append((final, previous))
        for tmp, final in zip(temps, finals):
            os.replace(tmp, final)
    except BaseException:
        for final, previous in reversed(moved):
            if previous is not None:
                os.replace(previous, final)
            else:
                final.unlink(missing_ok=True)
        raise
    for _, previous in moved:
        if previous is not None:
            previous.unlink(missing_ok=True)


# The marker's text is fixed: it is part of what DVC hashes, so it must not vary between runs.
_MARKER_TEXT = (
    "This folder is the output of a reidpipe stage: rerunning the stage replaces it whole.\n"
)


def check_replaceable_dir(path: str | os.PathLike[str], owned_by: Sequence[str] = ()) -> None:
    """Refuse to replace a folder holding files that no stage wrote: one that holds neither
    ``OUTPUT_MARKER_FILE`` nor one of the stage's own markers ``owned_by`` (a download or a
    synthetic set written before the common marker existed). Empty folders inside do not count:
    Snakemake makes the parent folders of a job's outputs before the job runs."""
    folder = Path(path)
    if not folder.is_dir() or folder.is_symlink():
        return
    markers = (OUTPUT_MARKER_FILE, *owned_by)
    if any((folder / name).is_file() for name in markers) or not _holds_a_file(folder):
        return
    raise ReidpipeError(
        f"{folder} holds files that no reidpipe stage wrote (no "
        f"{OUTPUT_MARKER_FILE}); refusing to replace it: choose another output "
        "folder, or move it away yourself if its contents may go"
    )


def _holds_a_file(folder: Path) -> bool:
    """Whether anything but folders lies under ``folder`` (stops at the first such entry)."""
    return any(not entry.is_dir() or entry.is_symlink() for entry in folder.rglob("*"))


def remove_output_dir(path: str | os.PathLike[str]) -> None:
    """Delete an output folder a stage wrote (a failed gate's stale results); a folder no stage
    wrote is refused like a replacement."""
    check_replaceable_dir(path)
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], owned_by: Sequence[str] = ()) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces the directory ``path`` whole.

    A non-empty folder at ``path`` that no stage wrote is refused before the caller's work
    (``check_replaceable_dir``)."""
    final = Path(path)
    _check_kind(final, is_dir=True)
    check_replaceable_dir(final, owned_by)
    _remove_stale(final)
    tmp = _temp_sibling(final, is_dir=True)
    try:
        with _naming_write_failures(tmp, final, [final]):
            yield tmp
        replace_dir(tmp, final, owned_by)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(
    src: str | os.PathLike[str], final: str | os.PathLike[str], owned_by: Sequence[str] = ()
) -> None:
    """Move the finished directory ``src`` to ``final``, replacing any directory a stage wrote
    there whole (``check_replaceable_dir``); ``src`` gets the marker that says a stage wrote it.

    ``src`` must be on the same filesystem (a sibling or a folder beside it). The old directory is
    first renamed into a trash folder, then the new one takes its place: ``final`` never holds a
    mix of the two, though a crash between the two renames leaves it missing (a rerun rebuilds it).
    """
    final = Path(final)
    Path(src, OUTPUT_MARKER_FILE).write_text(_MARKER_TEXT, encoding="utf-8")
    check_replaceable_dir(final, owned_by)
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


def json_text(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    write_text(path, json_text(data))


def write_yaml(path: str | os.PathLike[str], data: Any) -> None:
    write_text(path, yaml.safe_dump(data, sort_keys=False))
