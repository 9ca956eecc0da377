"""Embedding extraction from a trained checkpoint (PyTorch) or any ONNX model (ONNX Runtime).

Both paths share the preprocessing of ``reidpipe.input_contract``. Images are decoded by a thread
pool one batch ahead of the model. Features are optionally averaged with those of the mirrored
image, then L2-normalised.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd
from tqdm import tqdm

from reidpipe.data.manifest import read_split
from reidpipe.dataset_registry import DatasetSource, dataset_source
from reidpipe.errors import ReidpipeError
from reidpipe.evaluation.embeddings import (
    COLUMNS,
    Embeddings,
    EmbeddingSet,
    l2_normalise,
)
from reidpipe.evaluation.onnx_runtime import onnx_forward
from reidpipe.input_contract import Forward, Preprocess, load_image, read_input_contract
from reidpipe.params import ArchConfig, ExtractParams

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def embed(
    forward: Forward,
    paths: Sequence[str],
    pre: Preprocess,
    batch_size: int,
    flip: bool = False,
    workers: int = 4,
    desc: str = "extract",
) -> np.ndarray:
    """L2-normalised features of ``paths`` in order; ``forward`` maps N x 3 x H x W to N x D."""
    if not paths:
        return np.zeros((0, 0), dtype=np.float32)
    batches = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    outputs = []
    with (
        ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
        tqdm(total=len(paths), desc=desc, unit="img", disable=None) as bar,
    ):

        def submit(batch: Sequence[str]) -> list[Future[np.ndarray]]:
            return [pool.submit(load_image, p, pre) for p in batch]

        pending = submit(batches[0])
        for index in range(len(batches)):
            images = np.stack([f.result() for f in pending])
            if index + 1 < len(batches):
                pending = submit(batches[index + 1])  # decode the next batch while this one runs
            features = np.asarray(forward(images), dtype=np.float32).reshape(len(images), -1)
            if flip:
                features = features + np.asarray(
                    forward(np.ascontiguousarray(images[..., ::-1])), dtype=np.float32
                ).reshape(len(images), -1)
            outputs.append(features)
            bar.update(len(images))
    features = np.concatenate(outputs)
    if not np.isfinite(features).all():
        raise ReidpipeError(
            "the model produced NaN or inf features; check the model and its "
            "input settings (input size, mean/std, channel order, input scale)"
        )
    return l2_normalise(features)


def torch_forward(module: torch.nn.Module, device: str = "auto") -> Forward:
    """Wrap an eval-mode torch module as a numpy-in, numpy-out forward."""
    import torch

    from reidpipe.devices import resolve_device

    dev = resolve_device(device)
    module = module.to(dev).eval()

    def forward(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(images).to(dev)).float().cpu().numpy()

    return forward


def image_sets_from_splits(splits_dir: str | Path) -> dict[str, pd.DataFrame]:
    """query and gallery rows (``path,pid,camid``) from the split manifests."""
    return {
        name: read_split(splits_dir, name)[COLUMNS].reset_index(drop=True)
        for name in ("query", "gallery")
    }


def image_sets_from_dataset(
    dataset_dir: str | Path, source: DatasetSource | None = None
) -> dict[str, pd.DataFrame]:
    """query and gallery rows read from a dataset folder in ``source``'s layout (default
    Market-1501: query/, bounding_box_test/)."""
    source = source or dataset_source("market1501")
    sets = {}
    for split in ("query", "gallery"):
        scan = source.scan(dataset_dir, split)
        bad = scan.misnamed + scan.missing
        if bad:
            shown = ", ".join(p.name for p in bad[:5])
            raise ReidpipeError(
                f"{len(bad)} file(s) of {source.split_location(dataset_dir, split)} do not follow "
                f"{source.layout_spec.title} naming ({source.layout_spec.name_pattern}) or are "
                f"missing: {shown}"
            )
        for path in scan.os_metadata:
            log.info("ignoring operating-system file %s", path)
        sets[split] = pd.DataFrame(
            [(str(p), n.pid, n.camid) for p, n in scan.images], columns=COLUMNS
        )
    return sets


def extract_embeddings(
    forward: Forward,
    sets: dict[str, pd.DataFrame],
    pre: Preprocess,
    batch_size: int,
    flip: bool,
    workers: int = 4,
) -> Embeddings:
    subsets = {}
    for name in ("query", "gallery"):
        frame = sets[name]
        if frame.empty:
            raise ReidpipeError(f"the {name} set is empty: nothing to extract")
        features = embed(forward, list(frame["path"]), pre, batch_size, flip, workers, desc=name)
        subsets[name] = EmbeddingSet(features=features, meta=frame[COLUMNS])
    return Embeddings(**subsets)


class TrainedModel(NamedTuple):
    """A trained model folder as its caller loaded it (``reidpipe.training.model``; evaluation
    sits below training and does not import it): the network and the params it was trained with."""

    folder: str | Path
    module: torch.nn.Module
    arch: ArchConfig


def model_forward(
    trained: TrainedModel | None,
    onnx_path: str | Path | None,
    arch: ArchConfig,
    extract: ExtractParams,
    device: str = "auto",
    model_decides: bool = False,
) -> tuple[Forward, Preprocess, int]:
    """The forward of a trained model or an ONNX file, its preprocessing and batch.

    The params (``arch``) decide the preprocessing, so ``--set`` can override it, and a model
    that says otherwise gets a warning. With ``model_decides`` (no ``--arch`` given) the model's
    own contract wins: the ONNX metadata or the trained config; ``arch`` is the fallback for an
    ONNX file without one (TAO, torchreid)."""
    pre = Preprocess.from_params(arch, extract)
    if (trained is None) == (onnx_path is None):
        raise ReidpipeError("give exactly one model source: a trained model folder or an ONNX file")
    if onnx_path is not None:
        try:
            contract = read_input_contract(onnx_path)
        except ReidpipeError:
            contract = None  # not a reidpipe export: the params alone describe its input
        if contract is not None and model_decides:
            pre = contract
        elif contract is not None:
            _warn_if_differs(pre, contract, f"{onnx_path} expects")
        forward, fixed = onnx_forward(onnx_path, pre, device)
        return forward, pre, fixed or extract.batch_size
    trained_pre = Preprocess.from_params(trained.arch, extract)
    if model_decides:
        pre = trained_pre
    else:
        _warn_if_differs(pre, trained_pre, f"{trained.folder} was trained with")
    return torch_forward(trained.module, device), pre, extract.batch_size


def _warn_if_differs(pre: Preprocess, model_pre: Preprocess, what: str) -> None:
    """The params decide the preprocessing (so --set can override it); a model that says it
    expects something else gets a loud warning, since that usually is a mistake."""
    if model_pre != pre:
        log.warning("the params give input %s but %s %s; using the params", pre, what, model_pre)
