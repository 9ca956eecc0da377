"""Reading torch pickles (.pth/.pt/.ckpt/.tlt) without running them.

A torch file is a pickle, and a full unpickle calls whatever functions the file names
(``os.system`` included). Pretrained weights, resume checkpoints and trained models are read with
``load_restricted``: torch's ``weights_only`` unpickler (tensors, containers, plain values) plus,
for pretrained weights, ``ALLOWED_GLOBALS``, the harmless extras that published checkpoints carry.
A file naming any other global is refused before anything in it is called, in one line naming the
file, the globals and the way out. (The other loads, train's up-to-date check and Lightning's
resume after ``checkpoints.checkpoint_problem`` passed the file, are ``weights_only`` too.) The one
full unpickle is ``load_trusted``, reached only through ``reidpipe convert-weights --trust``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import pickle
import re
import warnings
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reidpipe.errors import ReidpipeError

log = logging.getLogger(__name__)

# numpy's pickle functions, taken from numpy's own reductions: numpy 1.x defines them in
# numpy.core.multiarray, numpy 2.x in numpy._core.multiarray, and files name whichever saved them.
_NUMPY_SCALAR = np.float64(0).__reduce__()[0]
_NUMPY_RECONSTRUCT = np.zeros(1).__reduce__()[0]

# Each entry is what one of the release structures that
# tests/unit/training/test_weights_trust.py mimics needs
# (SOLIDER's DINO save dict, TAO's Lightning checkpoint); a test checks that each is needed. A real
# file with another harmless extra is refused, and converted once with `convert-weights --trust`.
ALLOWED_GLOBALS: tuple[Any, ...] = (
    # SOLIDER's checkpoint_tea.pth (DINO's save dict) keeps its training options under 'args'.
    argparse.Namespace,
    # numpy scalars (SOLIDER's epoch, TAO ReIdentificationNet's logged scores) under either name.
    (_NUMPY_SCALAR, "numpy.core.multiarray.scalar"),
    (_NUMPY_SCALAR, "numpy._core.multiarray.scalar"),
    # numpy arrays in TAO's hyper-parameters (the pixel mean/std) under either name.
    (_NUMPY_RECONSTRUCT, "numpy.core.multiarray._reconstruct"),
    (_NUMPY_RECONSTRUCT, "numpy._core.multiarray._reconstruct"),
    np.ndarray,
    # The dtype of each scalar and array. Unpickling rebuilds it as its concrete class
    # (numpy.dtypes.Int64DType...), which the file does not name: int64 (SOLIDER's epoch), float64
    # (scores), float32 (TAO's arrays).
    np.dtype,
    type(np.dtype(np.int64)),
    type(np.dtype(np.float64)),
    type(np.dtype(np.float32)),
)

CONVERT_HINT = (
    "if you trust the file, `reidpipe convert-weights {path} --out OUT.safetensors "
    "--trust` writes its tensors to a file reidpipe reads without unpickling"
)
_GLOBAL_IN_ERROR = re.compile(r"GLOBAL (\S+)")
_CLASS_IN_ERROR = re.compile(r"but got <class '([^']+)'>")
_UNPICKLER_ERROR = re.compile(r"WeightsUnpickler error:\s*(.+)")


def _unsafe_globals(path: Path) -> list[str]:
    """Every global of a zip-format torch file outside what is allowed now, read without
    unpickling; empty where the file cannot be scanned (legacy format, damaged): the load then
    names the first refused global or fails on the damage."""
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # noqa: BLE001 - torch raises ValueError, RuntimeError or pickle errors
        return []


def _refused_globals(error: str) -> list[str]:
    """The global the weights_only unpickler refused, from its message (none: the file is damaged
    or holds pickle instructions that unpickler does not read)."""
    if found := _GLOBAL_IN_ERROR.search(error) or _CLASS_IN_ERROR.search(error):
        return [found[1] if "." in found[1] else f"builtins.{found[1]}"]  # torch drops 'builtins.'
    return []


def _unreadable(exc: pickle.UnpicklingError) -> pickle.UnpicklingError:
    """``exc`` without torch's advice to unpickle the file in full."""
    found = _UNPICKLER_ERROR.search(str(exc))
    return (
        pickle.UnpicklingError(
            f"its pickle holds what torch's weights-only unpickler does not read ({found[1].strip()})"
        )
        if found
        else exc
    )


def load_restricted(
    path: Path, allowed: Collection[Any] = ALLOWED_GLOBALS, way_out: str = CONVERT_HINT
) -> Any:
    """``torch.load`` of ``path`` on the CPU with ``weights_only`` and ``allowed`` globals.

    A file naming anything else is a ReidpipeError ending in ``way_out`` (``{path}`` filled in);
    nothing in it is called. A damaged or non-torch file raises what torch raises (an
    UnpicklingError without torch's advice to unpickle it in full).
    """
    with torch.serialization.safe_globals(list(allowed)):
        unsafe = _unsafe_globals(path)
        if not unsafe:
            try:
                with warnings.catch_warnings():  # protocol 4 pickles fail below anyway
                    warnings.filterwarnings("ignore", message="Detected pickle protocol")
                    return torch.load(path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as exc:
                unsafe = _refused_globals(str(exc))
                if not unsafe:
                    raise _unreadable(exc) from None
    plural = "s" if len(unsafe) > 1 else ""
    raise ReidpipeError(
        f"refusing to unpickle {path}: it names the global{plural} "
        f"{', '.join(unsafe)}, beyond the tensors, plain values and allow-listed "
        "globals reidpipe loads (unpickling it could run code); " + way_out.format(path=path)
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def load_trusted(path: Path, digest: str) -> Any:
    """The full unpickle of ``path``, which runs whatever the file names: only for a file the
    user vouched for (``convert-weights --trust``). ``digest`` is its sha256, logged as trusted."""
    log.warning("trusting %s (sha256 %s): unpickling it in full", path, digest)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - unpickling raises whatever the file's classes raise
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ReidpipeError(f"cannot unpickle {path}: {first}") from None
