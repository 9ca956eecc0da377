"""Ctrl-C (SIGINT) and SIGTERM stop a stage the way an error does: the exception unwinds the
stage, so atomic writes drop their temporaries, Lightning tears down and GPU locks are released;
the CLI then prints one line and exits 128 + the signal number (130, 143), as a shell reports a
process killed by that signal.

The exception reaches the main thread only. A worker thread blocked in a read (a hung network
file system, a pipe no one writes) never returns, and the main thread's clean-up (a thread pool's
shutdown joins its threads) or Python's exit after it would wait for it for ever. So the signal
also starts a deadline: if the process is still there :data:`CLEANUP_GRACE_S` seconds later, it
exits at once with the same code, leaving any temporaries for the stage's next run to remove (as
after ``kill -9``)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from reidpipe import output_lock

SIGNALS = (signal.SIGINT, signal.SIGTERM)
CLEANUP_GRACE_S = 10.0

log = logging.getLogger(__name__)


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


def _exit_now(signum: int) -> None:
    """Say why, then exit with the signal's code. The line is written by a thread of its own
    and given a second: a blocked stderr must not keep the process alive."""
    notice = threading.Thread(
        target=log.warning,
        daemon=True,
        args=(
            f"still running {CLEANUP_GRACE_S:.0f} s after {signal.Signals(signum).name} (a thread "
            "blocked in a read or write?): exiting without waiting for it",
        ),
    )
    notice.start()
    notice.join(timeout=1.0)
    output_lock.remove_lock_files()
    os._exit(128 + signum)


def _left_running(threads_before: set[threading.Thread]) -> list[threading.Thread]:
    """The non-daemon threads started since ``threads_before`` that are still running."""
    return [
        t
        for t in threading.enumerate()
        if t not in threads_before and t.is_alive() and not t.daemon
    ]


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """While active, SIGINT and SIGTERM raise :class:`Interrupted` in this process and start the
    clean-up deadline; a repeated signal during the clean-up is ignored (SIGKILL still stops
    everything). Once the stage has unwound, the deadline is dropped (a caller in the same
    process goes on), unless the stage left a thread running that Python's exit would wait
    for."""
    owner = os.getpid()
    deadline: threading.Timer | None = None
    threads_before = set(threading.enumerate())

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal deadline
        if os.getpid() != owner:
            # A forked DataLoader worker inherits this handler; its loop ends quietly on
            # KeyboardInterrupt and the main process does the stopping.
            raise KeyboardInterrupt
        if deadline is not None:
            return
        deadline = threading.Timer(CLEANUP_GRACE_S, _exit_now, args=(signum,))
        deadline.daemon = True
        deadline.start()
        raise Interrupted(signum)

    previous = {signum: signal.signal(signum, handler) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
        if deadline is not None and not _left_running(threads_before):
            deadline.cancel()
            deadline.join()
