"""Embedding extraction from a trained checkpoint (PyTorch) or any ONNX model (ONNX Runtime).

Both paths share one preprocessing: bilinear resize to (input_height, input_width), pixels to
0-1 (or 0-255), ``(pixel - mean * scale) / std`` with the mean in 0-1 units, RGB or BGR, NCHW
float32. Images are decoded by a thread pool one batch ahead of the model. Features are
optionally averaged with those of the mirrored image, then L2-normalised.
"""

from __future__ import annotations

import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from reidpipe import market
from reidpipe.embeddings import COLUMNS, Embeddings, EmbeddingSet, l2_normalise
from reidpipe.errors import ReidpipeError
from reidpipe.manifest import read_split
from reidpipe.params import ArchConfig, ExtractParams

if TYPE_CHECKING:
    import torch

Forward = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Preprocess:
    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channel_order: str = "RGB"
    input_scale: int = 1

    @classmethod
    def from_params(cls, arch: ArchConfig, extract: ExtractParams) -> "Preprocess":
        return cls(height=arch.model.input_height, width=arch.model.input_width,
                   mean=tuple(arch.dataset.pixel_mean), std=tuple(arch.dataset.pixel_std),
                   channel_order=extract.channel_order, input_scale=extract.input_scale)


def preprocess_image(image: Image.Image, pre: Preprocess) -> np.ndarray:
    """One PIL image -> a 3 x H x W float32 array as the model expects it."""
    resized = image.convert("RGB").resize((pre.width, pre.height), Image.Resampling.BILINEAR)
    pixels = np.asarray(resized, dtype=np.float32)
    if pre.input_scale == 1:
        pixels = pixels / 255.0
    # The mean is given in 0-1 units and scaled to the input range; the std is a plain divisor,
    # since scaling it too would make 0-255 input identical to 0-1 input. So a model that takes
    # raw 0-255 pixels uses mean 0, std 1; a Caffe-style one its mean and std 1.
    pixels = (pixels - np.asarray(pre.mean, np.float32) * np.float32(pre.input_scale)) / \
        np.asarray(pre.std, np.float32)
    if pre.channel_order == "BGR":
        pixels = pixels[:, :, ::-1]
    return np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)


def load_image(path: str | Path, pre: Preprocess) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return preprocess_image(image, pre)
    except FileNotFoundError:
        raise ReidpipeError(f"image {path} does not exist") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ReidpipeError(f"image {path} cannot be read as an image: {exc}") from None


def embed(forward: Forward, paths: Sequence[str], pre: Preprocess, batch_size: int,
          flip: bool = False, workers: int = 4, desc: str = "extract") -> np.ndarray:
    """L2-normalised features of ``paths`` in order; ``forward`` maps N x 3 x H x W to N x D."""
    if not paths:
        return np.zeros((0, 0), dtype=np.float32)
    batches = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
    outputs = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, \
            tqdm(total=len(paths), desc=desc, unit="img", disable=None, file=sys.stderr) as bar:
        def submit(batch: Sequence[str]) -> list[Future[np.ndarray]]:
            return [pool.submit(load_image, p, pre) for p in batch]

        pending = submit(batches[0])
        for index in range(len(batches)):
            images = np.stack([f.result() for f in pending])
            if index + 1 < len(batches):
                pending = submit(batches[index + 1])   # decode the next batch while this one runs
            features = np.asarray(forward(images), dtype=np.float32).reshape(len(images), -1)
            if flip:
                features = features + np.asarray(
                    forward(np.ascontiguousarray(images[..., ::-1])),
                    dtype=np.float32).reshape(len(images), -1)
            outputs.append(features)
            bar.update(len(images))
    features = np.concatenate(outputs)
    if not np.isfinite(features).all():
        raise ReidpipeError("the model produced NaN or inf features; check the model and its "
                            "input settings (input size, mean/std, channel order, input scale)")
    return l2_normalise(features)


def torch_forward(module: "torch.nn.Module", device: str = "auto") -> Forward:
    """Wrap an eval-mode torch module as a numpy-in, numpy-out forward."""
    import torch

    from reidpipe.rerank import resolve_device

    dev = resolve_device(device)
    module = module.to(dev).eval()

    def forward(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(images).to(dev)).float().cpu().numpy()

    return forward


def embed_with_torch(module: "torch.nn.Module", paths: Sequence[str], pre: Preprocess,
                     batch_size: int, flip: bool = False, device: str = "auto",
                     workers: int = 4, desc: str = "extract") -> np.ndarray:
    return embed(torch_forward(module, device), paths, pre, batch_size, flip, workers, desc)


def onnx_forward(model_path: str | Path, pre: Preprocess,
                 device: str = "auto") -> tuple[Forward, int | None]:
    """An ONNX Runtime forward and the model's fixed batch size (None when dynamic).

    The input name and shape come from the model. A fixed batch is fed at exactly that size,
    padding the last batch with zeros.
    """
    import onnxruntime as ort

    model_path = Path(model_path)
    if not model_path.is_file():
        raise ReidpipeError(f"ONNX model {model_path} does not exist")
    available = ort.get_available_providers()
    providers = ["CPUExecutionProvider"]
    if device != "cpu" and "CUDAExecutionProvider" in available:
        providers.insert(0, "CUDAExecutionProvider")
    elif device.startswith("cuda"):
        raise ReidpipeError(f"device {device!r} requested but ONNX Runtime has no CUDA provider "
                            f"(available: {available})")
    try:
        session = ort.InferenceSession(str(model_path), providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise ReidpipeError(f"ONNX model {model_path} cannot be loaded: {exc}") from None
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise ReidpipeError(f"ONNX model {model_path}: expected one N x C x H x W input, got "
                            f"{[(i.name, i.shape) for i in inputs]}")
    name, shape = inputs[0].name, inputs[0].shape
    expected = [3, pre.height, pre.width]
    for axis, (have, want) in enumerate(zip(shape[1:], expected), start=1):
        if isinstance(have, int) and have != want:
            raise ReidpipeError(
                f"ONNX model {model_path} expects input shape {shape} but the params give "
                f"3 x {pre.height} x {pre.width} (model.input_height/input_width); axis {axis} "
                f"is {have}, not {want}")
    fixed = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None

    def forward(images: np.ndarray) -> np.ndarray:
        if fixed is None:
            return session.run(None, {name: images})[0]
        out = []
        for start in range(0, len(images), fixed):
            part = images[start:start + fixed]
            padded = np.zeros((fixed, *part.shape[1:]), dtype=np.float32)
            padded[: len(part)] = part
            out.append(session.run(None, {name: padded})[0][: len(part)])
        return np.concatenate(out)

    return forward, fixed


def image_sets_from_splits(splits_dir: str | Path) -> dict[str, pd.DataFrame]:
    """query and gallery rows (``path,pid,camid``) from the split manifests."""
    return {name: read_split(splits_dir, name)[COLUMNS].reset_index(drop=True)
            for name in ("query", "gallery")}


def image_sets_from_dataset(dataset_dir: str | Path) -> dict[str, pd.DataFrame]:
    """query and gallery rows read from a Market-1501-layout folder (query/, bounding_box_test/)."""
    sets = {}
    for name, split in (("query", "query"), ("gallery", "gallery")):
        folder = market.split_dir(dataset_dir, split)
        if not folder.is_dir():
            raise ReidpipeError(f"{dataset_dir} is not a Market-1501-layout folder: "
                                f"{folder} is missing")
        scan = market.scan_split(dataset_dir, split)
        if scan.misnamed:
            shown = ", ".join(p.name for p in scan.misnamed[:5])
            raise ReidpipeError(
                f"{len(scan.misnamed)} file(s) in {folder} do not follow Market-1501 naming "
                f"(PPPP_cCsS_FFFFFF_BB.jpg): {shown}")
        for path in scan.os_metadata:
            print(f"extract: ignoring operating-system file {path}", file=sys.stderr)
        sets[name] = pd.DataFrame([(str(p), n.pid, n.camid) for p, n in scan.images],
                                  columns=COLUMNS)
    return sets


def extract_embeddings(forward: Forward, sets: dict[str, pd.DataFrame], pre: Preprocess,
                       batch_size: int, flip: bool, workers: int = 4) -> Embeddings:
    subsets = {}
    for name in ("query", "gallery"):
        frame = sets[name]
        if frame.empty:
            raise ReidpipeError(f"the {name} set is empty: nothing to extract")
        features = embed(forward, list(frame["path"]), pre, batch_size, flip, workers, desc=name)
        subsets[name] = EmbeddingSet(features=features, meta=frame[COLUMNS])
    return Embeddings(**subsets)


def model_forward(model_dir: str | Path | None, onnx_path: str | Path | None, arch: ArchConfig,
                  extract: ExtractParams, device: str = "auto") -> tuple[Forward, Preprocess, int]:
    """The forward of a trained checkpoint folder or an ONNX file, its preprocessing and batch."""
    pre = Preprocess.from_params(arch, extract)
    if (model_dir is None) == (onnx_path is None):
        raise ReidpipeError("give exactly one model source: a trained model folder or an ONNX file")
    if onnx_path is not None:
        from reidpipe.export_onnx import read_input_contract

        try:
            _warn_if_differs(pre, read_input_contract(onnx_path), f"{onnx_path} expects")
        except ReidpipeError:
            pass  # not a reidpipe export (TAO, torchreid): the params alone describe its input
        forward, fixed = onnx_forward(onnx_path, pre, device)
        return forward, pre, fixed or extract.batch_size
    from reidpipe.model import load_trained_model

    module, trained_arch = load_trained_model(Path(model_dir))
    _warn_if_differs(pre, Preprocess.from_params(trained_arch, extract),
                     f"{model_dir} was trained with")
    return torch_forward(module, device), pre, extract.batch_size


def _warn_if_differs(pre: Preprocess, model_pre: Preprocess, what: str) -> None:
    """The params decide the preprocessing (so --set can override it); a model that says it
    expects something else gets a loud warning, since that usually is a mistake."""
    if model_pre != pre:
        print(f"extract: warning: the params give input {pre} but {what} {model_pre}; using the "
              "params", file=sys.stderr)
