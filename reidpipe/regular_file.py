"""Opening an input only when it is a regular file.

A FIFO, socket or device under an input's name would block the stage in ``open`` or ``read``
(a FIFO waits for a writer that never comes) or read without end (``/dev/zero``). Each input is
therefore checked with ``stat`` before it is opened, and opened with ``O_NONBLOCK`` then checked
again on the open descriptor, so a file swapped in between cannot block either.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from reidpipe.errors import ReidpipeError

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


class NotRegularFile(ReidpipeError):
    """``path`` exists but is something else than a regular file (``kind`` says what)."""

    def __init__(self, path: str | Path, kind: str) -> None:
        super().__init__(f"{path} is {kind}, not a regular file")
        self.path, self.kind = Path(path), kind


def _check_mode(path: str | Path, mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "a special file")
        raise NotRegularFile(path, kind)


def require_regular(path: str | Path) -> None:
    """NotRegularFile unless ``path`` (links followed) is a regular file; the usual OSError when
    it is missing or cannot be looked at. Nothing is opened."""
    _check_mode(path, os.stat(path).st_mode)


def open_regular(path: str | Path) -> BinaryIO:
    """``path`` opened for binary reading; NotRegularFile when it is anything but a regular file
    (symbolic links are followed). Missing files and the like raise the usual OSError."""
    require_regular(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        _check_mode(path, os.fstat(fd).st_mode)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_bytes(path: str | Path) -> bytes:
    """The whole content of the regular file ``path`` (see :func:`open_regular`)."""
    with open_regular(path) as handle:
        return handle.read()
