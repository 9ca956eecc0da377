"""One writer per output: a stage holds an exclusive lock on each output while it runs.

The lock is ``fcntl.flock`` on a file beside the output (``.NAME.lock`` in the same folder), so
the kernel releases it when the process ends, however it ends: a kill leaves nothing to clean (a
killed holder's lock file stays, held by no one: the next run takes it). A run that ends removes
its lock file, so a failed command leaves its output folder as it was. A second run on the same
output is refused at once, naming the holder (its pid and command line are in the lock file).

Temporaries "left by an interrupted run" may only be cleared by the lock's owner
(``may_clear``): another run's in-progress files are never taken for leftovers.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from reidpipe.errors import ReidpipeError

LOCK_SUFFIX = ".lock"

# The outputs this process holds locks on (absolute paths) and their open lock files.
_HELD: dict[Path, int] = {}


def lock_path(output: str | os.PathLike[str]) -> Path:
    """The lock file of ``output``: a hidden sibling, outside the output itself (a folder output
    stays exactly what the stage wrote)."""
    path = Path(output)
    return path.parent / f".{path.name}{LOCK_SUFFIX}"


def _absolute(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(path))


def _holder(lock: Path) -> str:
    try:
        text = lock.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        text = ""
    pid, _, command = text.partition(" ")
    return f"pid {pid}: {command}" if pid.isdigit() else "a process that has not yet said which"


def _try_lock(lock: Path) -> int | None:
    """The open, exclusively locked ``lock`` (created if missing); ``None`` when another
    process holds it."""
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise ReidpipeError(
            f"cannot write {lock.parent / lock.name[1 : -len(LOCK_SUFFIX)]}: its "
            f"lock file {lock} cannot be created ({exc.strerror or exc})"
        ) from None
    return _flock(fd)


def _flock(fd: int) -> int | None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _is_main_process() -> bool:
    """Only the first rank of a multi-process run (Lightning's ranks, Slurm tasks) locks: the
    others are the same run."""
    return all(
        os.environ.get(name, "0") == "0"
        for name in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID")
    )


@contextlib.contextmanager
def locked(outputs: Sequence[str | os.PathLike[str]]) -> Iterator[None]:
    """Hold the lock of every path in ``outputs`` until the block ends; refuse with one line
    naming the holder when another process holds one of them."""
    wanted = [p for p in dict.fromkeys(map(_absolute, outputs)) if p not in _HELD]
    if not _is_main_process():
        wanted = []
    taken: list[Path] = []
    try:
        for output in sorted(wanted):
            lock = lock_path(output)
            fd = _try_lock(lock)
            while fd is not None and not _is_current(fd, lock):
                os.close(fd)  # the holder removed the file we opened as it ended: take the new one
                fd = _try_lock(lock)
            if fd is None:
                raise ReidpipeError(
                    f"{output} is being written by another run ({_holder(lock)}); wait for it "
                    f"to end or write elsewhere (lock: {lock})"
                )
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {shlex.join(sys.argv)}\n".encode())
            _HELD[output] = fd
            taken.append(output)
        yield
    finally:
        for output in taken:
            lock_path(output).unlink(missing_ok=True)  # removed while still held, then released
            os.close(_HELD.pop(output))


def remove_lock_files() -> None:
    """Remove the files of the locks this process holds, before an exit that skips the clean-up
    (``reidpipe.interrupt``'s deadline): the kernel releases the locks themselves."""
    for output in list(_HELD):
        lock_path(output).unlink(missing_ok=True)


def _is_current(fd: int, lock: Path) -> bool:
    """Whether the locked ``fd`` is still the file at ``lock`` (not one a holder removed)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(lock))
    except FileNotFoundError:
        return False


def _covering(path: Path) -> list[Path]:
    """``path`` and the folders above it: the outputs whose lock covers ``path``."""
    return [path, *path.parents]


@contextlib.contextmanager
def may_clear(path: str | os.PathLike[str]) -> Iterator[bool]:
    """Whether leftovers at ``path`` may be removed now: yes when this process holds a lock
    covering it, or when no other process does (checked by taking those locks for the block);
    no while another run holds one."""
    target = _absolute(path)
    if any(p in _HELD for p in _covering(target)):
        yield True
        return
    probes: list[int] = []
    try:
        for above in _covering(target):
            lock = lock_path(above)
            try:  # read-only: probing needs no write access to another user's lock file
                fd = _flock(os.open(lock, os.O_RDONLY | os.O_CLOEXEC))
            except FileNotFoundError:
                continue
            except OSError:  # unreadable: whether someone holds it cannot be told
                fd = None
            if fd is None:
                yield False
                return
            probes.append(fd)
        yield True
    finally:
        for fd in probes:
            os.close(fd)
