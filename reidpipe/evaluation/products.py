"""Feature products and distances: ``a @ b.T`` blocks on the evaluation's device (NumPy's BLAS
on the CPU, torch on a GPU), and squared distances of single pairs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from reidpipe.devices import means_cpu, resolve_device
from reidpipe.evaluation.arrays import in_chunks

if TYPE_CHECKING:
    import torch

_PAIR_ELEMENTS = 1 << 18  # entries of one chunk of pair differences (stays in cache)


def gemm_operand(feats: np.ndarray, device: str) -> np.ndarray | torch.Tensor:
    """The features where ``products`` multiplies them: the array itself on the CPU (NumPy's
    BLAS; torch is not even imported), a torch tensor on a GPU."""
    if means_cpu(device):
        return feats
    import torch

    dev = resolve_device(str(device))
    return feats if dev.type == "cpu" else torch.from_numpy(feats).to(dev)


def products(
    a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, out: np.ndarray | None = None
) -> np.ndarray:
    """``a @ b.T`` as a float32 NumPy array: NumPy's BLAS for arrays (on this project's CPUs
    faster than torch's; into ``out`` when given), torch on the tensors' device otherwise."""
    if isinstance(a, np.ndarray):
        return np.matmul(a, b.T, out=out)
    return (a @ b.T).cpu().numpy()


def pair_distances(feats: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Squared distances of single pairs, from the feature differences."""
    out = np.empty(len(rows), dtype=np.float32)

    def fill(start: int, stop: int) -> None:
        diff = feats[rows[start:stop]] - feats[cols[start:stop]]
        out[start:stop] = np.einsum("ij,ij->i", diff, diff)

    in_chunks(fill, len(rows), max(1, feats.shape[1]), budget=_PAIR_ELEMENTS)
    return out
