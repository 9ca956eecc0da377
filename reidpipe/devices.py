"""Device choice, the CPUs a process may use, and GPU allocation shared by every stage.

Snakemake's ``--resources gpu=N`` only caps how many GPU jobs run at once; it does not say which
GPU a job gets. Each job therefore takes one lock file per device it uses (``gpu<i>.lock`` under a
lock directory, ``fcntl.flock`` non-blocking) and sets ``CUDA_VISIBLE_DEVICES`` before CUDA starts.
The kernel drops a flock when its file is closed, so a killed job never leaves a stale lock.
GPUs are counted without initialising CUDA (``/proc/driver/nvidia/gpus`` or ``nvidia-smi -L``).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from reidpipe.errors import ReidpipeError

if TYPE_CHECKING:
    import torch

LOCK_DIR_ENV = "REIDPIPE_GPU_LOCK_DIR"
CUDA_ENV = "CUDA_VISIBLE_DEVICES"
GPU_WAIT_S = 300.0  # how long a GPU job waits for a busy GPU before failing


def usable_cpus() -> int:
    """The CPU cores this process may run on (its affinity mask, which a container or ``taskset``
    narrows; the machine's count where the platform has no affinity)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "reidpipe-gpu-locks")


def count_gpus() -> int:
    """Number of NVIDIA GPUs on this machine, found without touching CUDA."""
    proc = Path("/proc/driver/nvidia/gpus")
    if proc.is_dir():
        return sum(1 for _ in proc.iterdir())
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


@dataclass
class GpuLease:
    """The GPUs a process holds: ``ids`` are physical indices, or the entries of a preset
    ``CUDA_VISIBLE_DEVICES`` (then no locks are held). Empty ``ids`` means CPU."""

    ids: list[str]
    note: str
    _files: list[IO[str]] = field(default_factory=list, repr=False)

    def release(self) -> None:
        for handle in self._files:
            handle.close()
        self._files.clear()

    def __enter__(self) -> GpuLease:  # noqa: PYI034 - final class, Self needs Python 3.11
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _try_lock(path: Path) -> IO[str] | None:
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - the lock lives as long as the file
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def allocate_gpus(
    num_gpus: int,
    gpu_ids: Sequence[int] = (),
    *,
    lock_dir: Path | None = None,
    total: int | None = None,
    env: MutableMapping[str, str] | None = None,
    wait_s: float = 0.0,
) -> GpuLease:
    """Take ``num_gpus`` free GPUs (from ``gpu_ids`` if given) and set ``CUDA_VISIBLE_DEVICES``.

    A ``CUDA_VISIBLE_DEVICES`` already in ``env`` is honoured as the caller's choice. With no GPU on
    the machine the lease is empty (CPU). When too few are free, retries for ``wait_s`` seconds.
    The messages name ``train.num_gpus``/``train.gpu_ids``: the training stage's keys.
    """
    env = os.environ if env is None else env
    if num_gpus == 0:
        return GpuLease([], "train.num_gpus = 0: running on CPU")
    preset = env.get(CUDA_ENV)
    if preset is not None and preset.strip() != "":
        return _preset_lease(preset, num_gpus)
    total = count_gpus() if total is None else total
    if total == 0:
        return GpuLease([], "no NVIDIA GPU found: running on CPU")
    candidates = _candidate_gpus(num_gpus, gpu_ids, total)
    lock_dir = default_lock_dir() if lock_dir is None else lock_dir
    lock_dir.mkdir(parents=True, exist_ok=True)
    return _lock_free_gpus(num_gpus, candidates, lock_dir, env, wait_s)


def _preset_lease(preset: str, num_gpus: int) -> GpuLease:
    """The first ``num_gpus`` devices of a preset ``CUDA_VISIBLE_DEVICES``, with no locks."""
    visible = [d.strip() for d in preset.split(",") if d.strip()]
    if len(visible) < num_gpus:
        raise ReidpipeError(
            f"{CUDA_ENV}={preset!r} names {len(visible)} device(s) but train.num_gpus = {num_gpus}"
        )
    return GpuLease(visible[:num_gpus], f"using preset {CUDA_ENV}={preset}")


def _candidate_gpus(num_gpus: int, gpu_ids: Sequence[int], total: int) -> list[int]:
    """The GPUs to choose from (``gpu_ids``, default all ``total``), checked against the machine
    and against ``num_gpus``."""
    candidates = list(gpu_ids) or list(range(total))
    bad = [i for i in candidates if not 0 <= i < total]
    if bad:
        raise ReidpipeError(
            f"train.gpu_ids {list(gpu_ids)} names GPU(s) {bad}, but this machine "
            f"has {total} (0..{total - 1})"
        )
    if num_gpus > len(candidates):
        raise ReidpipeError(
            f"train.num_gpus = {num_gpus} but only {len(candidates)} GPU(s) are "
            f"available ({candidates})"
        )
    return candidates


def _lock_free_gpus(
    num_gpus: int,
    candidates: list[int],
    lock_dir: Path,
    env: MutableMapping[str, str],
    wait_s: float,
) -> GpuLease:
    """Lock ``num_gpus`` of ``candidates`` in ``lock_dir`` (the first free ones) and make them
    ``env``'s visible devices; retried each second for ``wait_s`` seconds while too few are free."""
    deadline = time.monotonic() + wait_s
    while True:
        taken: list[tuple[int, IO[str]]] = []
        for gpu in candidates:
            handle = _try_lock(lock_dir / f"gpu{gpu}.lock")
            if handle is not None:
                taken.append((gpu, handle))
                if len(taken) == num_gpus:
                    ids = [str(g) for g, _ in taken]
                    env[CUDA_ENV] = ",".join(ids)
                    return GpuLease(
                        ids, f"locked GPU(s) {','.join(ids)} in {lock_dir}", [h for _, h in taken]
                    )
        for _, handle in taken:
            handle.close()
        if time.monotonic() >= deadline:
            raise ReidpipeError(
                f"only {len(taken)} of GPUs {candidates} are free, {num_gpus} needed (locks in "
                f"{lock_dir}); lower the GPU jobs run at once or train.num_gpus"
            )
        time.sleep(1.0)


def stage_gpu(device: str) -> GpuLease:
    """The GPU of a single-GPU stage (extract, export, TensorRT build), held while it runs.

    ``device`` is the stage's ``--device``: ``cpu`` takes none; ``auto`` and ``cuda`` take one
    free GPU through the locks (or the preset ``CUDA_VISIBLE_DEVICES``), so two GPU jobs that
    Snakemake runs at once land on two GPUs.
    """
    if device == "cpu":
        return GpuLease([], "--device cpu: running on CPU")
    return allocate_gpus(1, wait_s=GPU_WAIT_S)


def means_cpu(device: str) -> bool:
    """True when ``device`` (or a ``torch.device``) can only mean the CPU: ``cpu``, or ``auto``
    on a machine without an NVIDIA GPU. Decided without importing torch, whose import alone
    costs seconds of a CPU-only command (evaluate)."""
    device = str(device)
    return device == "cpu" or (device == "auto" and count_gpus() == 0)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; an explicit CUDA device without CUDA is an error.
    torch is imported here, not at module level, so allocation runs before CUDA starts."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ReidpipeError(f"device {device!r} requested but no CUDA device is available")
    return torch.device(device)
