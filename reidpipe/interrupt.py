"""Ctrl-C (SIGINT) and SIGTERM stop a stage the way an error does: the exception unwinds the
stage, so atomic writes drop their temporaries, Lightning tears down and GPU locks are released;
the CLI then prints one line and exits 128 + the signal number (130, 143), as a shell reports a
process killed by that signal."""

from __future__ import annotations

import contextlib
import os
import signal
from types import FrameType
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """Raised in the main thread by the handlers of :func:`signals_interrupt`.

    A BaseException, so that ``except Exception`` clean-up code does not swallow it, and not a
    KeyboardInterrupt, which Lightning turns into ``sys.exit(1)``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """While active, SIGINT and SIGTERM raise :class:`Interrupted` in this process; a repeated
    signal during the clean-up is ignored (SIGKILL still stops everything)."""
    owner = os.getpid()
    fired = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if os.getpid() != owner:
            # A forked DataLoader worker inherits this handler; its loop ends quietly on
            # KeyboardInterrupt and the main process does the stopping.
            raise KeyboardInterrupt
        if fired:
            return
        fired = True
        raise Interrupted(signum)

    previous = {signum: signal.signal(signum, handler) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
