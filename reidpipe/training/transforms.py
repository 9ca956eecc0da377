"""Image loading and the BoT augmentations (torchvision.transforms.v2 on uint8 tensors).

Train: resize to (input_height, input_width), horizontal flip (``prob``), zero-pad by ``padding``
and random-crop back, scale to 0-1, normalise by ``pixel_mean``/``pixel_std``, random erasing
(``re_prob``). ``re_mode: mean`` erases as BoT configures it (reid-strong-baseline
``data/transforms/transforms.py``, TAO's ResNet transforms): a box of 2-40 % of the image with
aspect h/w 0.3-3.33, its pixels set to the ``pixel_mean`` values in normalised units.
``re_mode: pixel`` with ``train_interpolation: bicubic`` are SOLIDER's and TAO's Swin transforms
(SOLIDER-REID ``datasets/make_dataloader.py``, TAO ``dataloader/transforms.py``): timm's
RandomErasing in 'pixel' mode. Test: (bilinear) resize, scale, normalise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.data.random_erasing import RandomErasing
from torchvision.transforms import InterpolationMode, v2

from reidpipe.errors import ReidpipeError
from reidpipe.images import decode_file
from reidpipe.params import DatasetParams, ModelParams

# Zhong et al.'s random erasing with BoT's bounds: area fraction, aspect ratio h/w.
ERASE_AREA = (0.02, 0.4)
ERASE_ASPECT = (0.3, 1 / 0.3)
ERASE_ATTEMPTS = 100


class BotRandomErasing(v2.RandomErasing):
    """Random erasing as BoT draws its box: area and aspect ratio h/w both uniform (torchvision
    draws the aspect's log uniformly, favouring neither tall nor wide boxes; BoT's uniform draw
    gives tall ones 3 times in 4), up to 100 tries for a box that fits (torchvision: 10)."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = flat_inputs[0].shape[-2:]
        for _ in range(ERASE_ATTEMPTS):
            area = height * width * torch.empty(1).uniform_(*self.scale).item()
            aspect = torch.empty(1).uniform_(*self.ratio).item()
            h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if h < height and w < width:
                i = int(torch.randint(0, height - h + 1, (1,)))
                j = int(torch.randint(0, width - w + 1, (1,)))
                return {
                    "i": i,
                    "j": j,
                    "h": h,
                    "w": w,
                    "v": torch.tensor(self.value)[:, None, None],
                }
        return {"i": 0, "j": 0, "h": height, "w": width, "v": None}  # no box fits: unchanged


def read_image(path: str | Path, channels: int = 3) -> torch.Tensor:
    """A uint8 tensor (channels, H, W): RGB for 3 channels, grey for 1."""
    if channels not in (1, 3):
        raise ReidpipeError(
            f"model.input_channels = {channels}: images load as 1 (grey) or 3 (RGB)"
        )
    with decode_file(path) as image:
        pixels = np.asarray(image.convert("RGB" if channels == 3 else "L"))
    tensor = torch.from_numpy(pixels.copy())
    return tensor.permute(2, 0, 1) if tensor.ndim == 3 else tensor[None]


def train_transform(model: ModelParams, dataset: DatasetParams) -> v2.Compose:
    size = (model.input_height, model.input_width)
    resize = v2.Resize(
        size, interpolation=InterpolationMode(dataset.train_interpolation), antialias=True
    )
    steps: list[Callable[[torch.Tensor], torch.Tensor]] = [
        resize,
        v2.RandomHorizontalFlip(p=dataset.prob),
    ]
    if dataset.padding > 0:
        steps += [v2.Pad(dataset.padding), v2.RandomCrop(size)]
    steps += [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(dataset.pixel_mean, dataset.pixel_std),
    ]
    if dataset.re_prob > 0 and dataset.re_mode == "pixel":
        steps.append(
            RandomErasing(probability=dataset.re_prob, mode="pixel", max_count=1, device="cpu")
        )
    elif dataset.re_prob > 0:
        steps.append(
            BotRandomErasing(
                p=dataset.re_prob,
                scale=ERASE_AREA,
                ratio=ERASE_ASPECT,
                value=list(dataset.pixel_mean),
            )
        )
    return v2.Compose(steps)


def test_transform(model: ModelParams, dataset: DatasetParams) -> v2.Compose:
    return v2.Compose(
        [
            v2.Resize((model.input_height, model.input_width), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(dataset.pixel_mean, dataset.pixel_std),
        ]
    )
