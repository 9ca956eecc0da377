"""Run a function in a forked copy of the test process (torch stays imported), to kill it or
signal it at an exact point; the child's stderr is captured to a file."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import torch


def kill_self(signum: int = signal.SIGKILL) -> None:
    """Send ``signum`` to this process, or to its whole process group (as a terminal's Ctrl-C
    does, reaching DataLoader workers too) when it leads one."""
    if os.getpgrp() == os.getpid():
        os.killpg(0, signum)
    else:
        os.kill(os.getpid(), signum)


def _backward_then_exit() -> None:
    try:
        torch.ones(1, requires_grad=True).sum().backward()
    except RuntimeError:
        os._exit(1)
    os._exit(0)


def _check_forks_can_train() -> None:
    """Fail clearly when this process's forked children cannot run autograd (see
    tests/conftest.py), instead of through the test's own checks."""
    probe = multiprocessing.get_context("fork").Process(target=_backward_then_exit)
    probe.start()
    probe.join()
    if probe.exitcode != 0:
        raise AssertionError(
            "autograd is refused in this test process's forked children: an earlier test in "
            "the same process started autograd's device threads (torch.export, which ONNX export "
            "runs, does). Run the files that fork first: `make test` (pytest-xdist with "
            "--no-loadscope-reorder), or this file on its own"
        )


def run_forked(
    target: Callable[[], int | None], stderr: Path, own_group: bool = False, timeout: float = 600
) -> int:
    """Run ``target`` in a forked child; return its exit code (-N when signal N killed it).
    ``own_group``: the child leads a new process group, so :func:`kill_self` reaches its
    workers as well."""

    def child() -> None:
        if own_group:
            os.setpgrp()
        torch.set_num_threads(1)
        handle = open(stderr, "w", encoding="utf-8")  # noqa: SIM115 - closed by _exit
        os.dup2(handle.fileno(), 2)
        sys.stderr = handle
        code = target()
        handle.flush()
        os._exit(int(code or 0))

    _check_forks_can_train()
    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join(timeout=timeout)
    if proc.exitcode is None:
        proc.kill()
        raise AssertionError(f"the forked run did not end within {timeout} s")
    return proc.exitcode
