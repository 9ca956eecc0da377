"""Training checkpoints: written whole, only the newest kept, and the one to resume from chosen
among those that can actually be read.

A checkpoint can be unreadable although it was written atomically: a full disk, a copy cut short,
a bit flip on a shared filesystem. Resuming then falls back to the newest readable older
checkpoint in the run's own folder (there is one when a kill fell between writing a checkpoint and
deleting its predecessor), else to the configured start, and says so; with neither the run
starts afresh. A configured ``train.resume_training_checkpoint_path`` that cannot be used is an
error: silently training from scratch instead is not what was asked for. So is a checkpoint whose
pickle names anything beyond tensors and plain values (it could run code when unpickled), wherever
it lies: nothing of it is unpickled.
"""

from __future__ import annotations

import logging
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from reidpipe import atomic
from reidpipe.errors import ReidpipeError
from reidpipe.training.weights_trust import load_restricted

log = logging.getLogger(__name__)

SUFFIX = ".ckpt"
_EPOCH = re.compile(r"(\d+)")
RESUME_WAY_OUT = (
    "resume from a checkpoint `reidpipe train` wrote (tensors and plain values "
    "only); to start from a trusted file's weights instead, `reidpipe "
    "convert-weights {path} --out OUT.safetensors --trust` and give OUT as "
    "model.pretrained_model_path"
)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints appear whole or not at all, so a run killed mid-save still resumes; once a new
    one is in place the older ones beside it are deleted (resume needs only the newest, and a
    ResNet-50 checkpoint with Adam state is ~300 MB)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        path = Path(path)
        with atomic.atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)
        for old in own_checkpoints(path.parent):
            if old != path:
                old.unlink(missing_ok=True)


def own_checkpoints(folder: Path) -> list[Path]:
    """The checkpoints of ``folder``, newest first: by the epoch in the name, then by time
    (temporaries start with a dot and are not checkpoints)."""
    found = [p for p in folder.glob(f"*{SUFFIX}") if not p.name.startswith(".") and p.is_file()]

    def order(path: Path) -> tuple[int, int]:
        match = _EPOCH.search(path.stem)
        return (int(match.group(1)) if match else -1, path.stat().st_mtime_ns)

    return sorted(found, key=order, reverse=True)


def checkpoint_problem(
    path: Path, expected: Mapping[str, torch.Tensor] | None = None
) -> str | None:
    """Why ``path`` cannot be resumed from (None: it can). ``expected`` is the model's state dict:
    a checkpoint of another network is named as such rather than failing inside Lightning. A
    checkpoint naming globals beyond tensors and plain values is a ReidpipeError instead."""
    if path.is_dir():
        return "it is a directory, not a checkpoint file"
    if not path.is_file():
        return "it does not exist"
    if path.stat().st_size == 0:
        return "it is empty (0 bytes)"
    try:
        if zipfile.is_zipfile(path):
            # torch.load does not check the CRCs: a corrupted tensor would load silently.
            with zipfile.ZipFile(path) as archive:
                broken = archive.testzip()
            if broken is not None:
                return f"its entry {broken} is corrupt (CRC mismatch)"
        data = load_restricted(path, allowed=(), way_out=RESUME_WAY_OUT)
    except ReidpipeError:  # it names code to run: an error, not a checkpoint to skip
        raise
    except Exception as exc:  # noqa: BLE001 - torch/zipfile/pickle each raise their own types
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"it is truncated or not a checkpoint ({first})"
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("state_dict"), Mapping)
        or "epoch" not in data
    ):
        return "it is not a Lightning training checkpoint (no state_dict/epoch)"
    if expected is not None:
        return _state_mismatch(data["state_dict"], expected)
    return None


def _state_mismatch(found: Mapping[str, Any], expected: Mapping[str, torch.Tensor]) -> str | None:
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [
        f"{k} {tuple(found[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in found and isinstance(found[k], torch.Tensor) and found[k].shape != v.shape
    ]
    if not (missing or unexpected or shapes):
        return None
    parts = [
        f"{label} {items[:3]}"
        for label, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatch", shapes),
        )
        if items
    ]
    return "it holds another network than this arch's model: " + "; ".join(parts)


def choose_resume(
    folder: Path, configured: str, expected: Mapping[str, torch.Tensor]
) -> Path | None:
    """The checkpoint to resume from: the newest readable one of ``folder`` (each unreadable one
    named in a warning), else ``configured`` (an error when it cannot be used), else None."""
    unreadable: list[Path] = []
    for path in own_checkpoints(folder):
        problem = checkpoint_problem(path, expected)
        if problem is None:
            if unreadable:
                log.warning("resuming from %s, the newest readable older checkpoint", path)
            return path
        unreadable.append(path)
        log.warning("checkpoint %s cannot be resumed from: %s", path, problem)
    if not configured:
        if unreadable:
            log.warning("no readable checkpoint left in %s: training starts afresh", folder)
        return None
    path = Path(configured)
    problem = checkpoint_problem(path, expected)
    if problem is not None:
        raise ReidpipeError(
            f"train.resume_training_checkpoint_path {path} cannot be resumed from: {problem}"
        )
    if unreadable:
        log.warning("resuming from %s (train.resume_training_checkpoint_path) instead", path)
    return path
