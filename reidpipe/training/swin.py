"""Swin backbone that computes what SOLIDER-REID's (and TAO's) Swin computes at re-id input sizes.

timm's Swin differs from SOLIDER's at 256x128, where no stage's token grid (64x32 ... 8x4) is a
multiple of the 7x7 window: timm rolls the grid before padding it to whole windows, while its shift
mask is built for the padded grid (timm issue 2438), and it shrinks windows larger than a stage's grid.
SOLIDER pads first (zeros after ``norm1``), then shifts, with 7x7 windows in every stage. Here timm's
``always_partition`` keeps the full windows and ``PadThenShiftBlock`` pads before the shift.

SOLIDER also scales every stage's output that feeds the next stage by its semantic embedding:
``x * softplus(Lw(s)) + Lb(s)`` with ``s = [lambda, 1 - lambda]`` (``Lw``, ``Lb``: Linear 2 -> C,
frozen). The layers keep SOLIDER's names (``semantic_embed_w.N``, ``semantic_embed_b.N``) and start
as the identity, so weights without them (ImageNet, timm) compute plain Swin.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.models import is_model_in_modules
from timm.models.swin_transformer import (
    SwinTransformer,
    SwinTransformerBlock,
    window_partition,
    window_reverse,
)
from torch import nn

SWIN_MODULE = "swin_transformer"  # timm's module of Swin v1 (v2 is another class and layout)
CREATE_KWARGS = {"always_partition": True}  # 7x7 windows and shifts even where a grid is smaller
SOFTPLUS_ONE = math.log(math.e - 1.0)  # softplus(SOFTPLUS_ONE) == 1: the identity scale


def is_swin(backbone: str) -> bool:
    """Whether the timm model name is a Swin v1 (the architecture SOLIDER and TAO use)."""
    return is_model_in_modules(backbone, [SWIN_MODULE])


class PadThenShiftBlock(SwinTransformerBlock):
    """timm's Swin block with SOLIDER's order: pad the grid to whole windows, then shift."""

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        _, height, width, channels = x.shape
        win_h, win_w = self.window_size
        x = F.pad(x, (0, 0, 0, (-width) % win_w, 0, (-height) % win_h))
        padded_h, padded_w = x.shape[1], x.shape[2]
        shifted = any(self.shift_size)
        if shifted:
            x = torch.roll(x, shifts=(-self.shift_size[0], -self.shift_size[1]), dims=(1, 2))
        windows = window_partition(x, self.window_size).view(-1, self.window_area, channels)
        # timm builds the mask for the padded grid: right for a shift applied after padding
        mask = self.get_attn_mask(x) if self.dynamic_mask else self.attn_mask
        windows = self.attn(windows, mask=mask).view(-1, win_h, win_w, channels)
        x = window_reverse(windows, self.window_size, padded_h, padded_w)
        if shifted:
            x = torch.roll(x, shifts=self.shift_size, dims=(1, 2))
        return x[:, :height, :width, :]


class SemanticSwin(SwinTransformer):
    """timm's SwinTransformer with SOLIDER's semantic embedding between stages."""

    semantic_input: torch.Tensor
    semantic_embed_w: nn.ModuleList
    semantic_embed_b: nn.ModuleList

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for index, stage in enumerate(self.layers):
            x = stage.downsample(x)
            if index > 0:  # SOLIDER's stage index-1 output, after its patch merging
                scale = self.semantic_embed_w[index - 1](self.semantic_input)
                shift = self.semantic_embed_b[index - 1](self.semantic_input)
                x = x * F.softplus(scale) + shift
            x = stage.blocks(x)
        return self.norm(x)


def _identity_linear(out_features: int, bias: float) -> nn.Linear:
    layer = nn.Linear(2, out_features)
    nn.init.zeros_(layer.weight)
    nn.init.constant_(layer.bias, bias)
    layer.requires_grad_(False)  # SOLIDER freezes them while fine-tuning
    return layer


def to_solider_swin(model: SwinTransformer, semantic_weight: float) -> SemanticSwin:
    """Turn a timm Swin built with ``CREATE_KWARGS`` into SOLIDER's computation, in place.

    timm builds its blocks inside ``SwinTransformerStage`` with no option for the block class, so the
    subclasses (which add no state of their own here, only behaviour) are set on the built modules;
    parameter names stay timm's."""
    for stage in model.layers:
        for block in stage.blocks:
            block.__class__ = PadThenShiftBlock
    model.__class__ = SemanticSwin
    widths = [stage.blocks[0].norm1.normalized_shape[0] for stage in model.layers]
    device = model.norm.weight.device
    model.semantic_embed_w = nn.ModuleList(
        _identity_linear(width, SOFTPLUS_ONE) for width in widths[1:]
    ).to(device)
    model.semantic_embed_b = nn.ModuleList(_identity_linear(width, 0.0) for width in widths[1:]).to(
        device
    )
    model.register_buffer(
        "semantic_input",
        torch.tensor([semantic_weight, 1.0 - semantic_weight], device=device),
        persistent=False,
    )
    return model  # type: ignore[return-value]
