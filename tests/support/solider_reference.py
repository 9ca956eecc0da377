"""An independent SOLIDER/mmseg Swin forward pass, written from its definition for the tests.

Tensors are named as SOLIDER's backbone names them (``patch_embed.projection``,
``stages.N.blocks.M.attn.w_msa.*``, ``ffn.layers.0.0`` / ``ffn.layers.1``, ``stages.N.downsample``,
``norm0..3``, ``semantic_embed_w.N`` / ``semantic_embed_b.N``) and the computation follows its
structure: corner padding to whole patches; per block LN -> zero-pad the grid to whole windows ->
cyclic shift by window//2 on odd blocks, with the shift mask labelling the padded grid's regions
[0, Hp-ws), [Hp-ws, Hp-s), [Hp-s, Hp) on each axis (-100 between regions) -> window attention with
the relative position bias -> unshift -> crop; patch merging with an unfold over 2x2 neighbourhoods
(feature c*4 + 2*dy + dx); after each stage the merged output x becomes x*softplus(Lw(s)) + Lb(s),
s = [lambda, 1 - lambda]; the feature is the mean of norm3 over the last stage's tokens (the last
stage's pre-modulation output, as SOLIDER returns it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

MASK_VALUE = -100.0


@dataclass(frozen=True)
class SwinConfig:
    embed_dim: int = 16
    depths: tuple[int, ...] = (2, 2, 2, 2)
    num_heads: tuple[int, ...] = (1, 2, 2, 4)
    window: int = 7
    patch: int = 4
    mlp_ratio: int = 4
    in_chans: int = 3

    def width(self, stage: int) -> int:
        return self.embed_dim * 2**stage

    def timm_kwargs(self) -> dict:
        return {
            "embed_dim": self.embed_dim,
            "depths": list(self.depths),
            "num_heads": list(self.num_heads),
        }


def relative_position_index(window: int) -> torch.Tensor:
    """mmseg's construction: c(i, j) = (2w - 1) i + j; index[p, q] = c(p) + c(w-1-qi, w-1-qj),
    i.e. (2w - 1)(pi - qi + w - 1) + (pj - qj + w - 1)."""
    coords = (
        torch.arange(window)[:, None] * (2 * window - 1) + torch.arange(window)[None]
    ).reshape(-1)
    return (coords[:, None] + coords[None, :]).flip(1)


def solider_state(cfg: SwinConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights for every tensor SOLIDER's backbone holds, in its names. LayerNorm weights and
    biases are random too, so a wrong channel order cannot hide behind 1s and 0s."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.1, offset: float = 0.0) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * scale + offset

    def norm(prefix: str, width: int) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}.weight": rand(width, scale=0.2, offset=1.0),
            f"{prefix}.bias": rand(width, scale=0.1),
        }

    state = {
        "patch_embed.projection.weight": rand(
            cfg.embed_dim, cfg.in_chans, cfg.patch, cfg.patch, scale=0.3
        ),
        "patch_embed.projection.bias": rand(cfg.embed_dim),
        **norm("patch_embed.norm", cfg.embed_dim),
    }
    last = len(cfg.depths) - 1
    for stage, depth in enumerate(cfg.depths):
        width, hidden = cfg.width(stage), cfg.width(stage) * cfg.mlp_ratio
        for block in range(depth):
            p = f"stages.{stage}.blocks.{block}"
            state |= norm(f"{p}.norm1", width) | norm(f"{p}.norm2", width)
            state |= {
                f"{p}.attn.w_msa.relative_position_bias_table": rand(
                    (2 * cfg.window - 1) ** 2, cfg.num_heads[stage], scale=0.5
                ),
                f"{p}.attn.w_msa.relative_position_index": relative_position_index(cfg.window),
                f"{p}.attn.w_msa.qkv.weight": rand(3 * width, width, scale=width**-0.5),
                f"{p}.attn.w_msa.qkv.bias": rand(3 * width, scale=0.3),
                f"{p}.attn.w_msa.proj.weight": rand(width, width, scale=width**-0.5),
                f"{p}.attn.w_msa.proj.bias": rand(width),
                f"{p}.ffn.layers.0.0.weight": rand(hidden, width, scale=width**-0.5),
                f"{p}.ffn.layers.0.0.bias": rand(hidden),
                f"{p}.ffn.layers.1.weight": rand(width, hidden, scale=hidden**-0.5),
                f"{p}.ffn.layers.1.bias": rand(width),
            }
        if stage < last:
            state |= norm(f"stages.{stage}.downsample.norm", 4 * width)
            state[f"stages.{stage}.downsample.reduction.weight"] = rand(
                2 * width, 4 * width, scale=(4 * width) ** -0.5
            )
        state |= norm(f"norm{stage}", width)
        out = cfg.width(min(stage + 1, last))  # SOLIDER sizes the last stage's like the one before
        for branch in ("w", "b"):
            state[f"semantic_embed_{branch}.{stage}.weight"] = rand(out, 2, scale=0.5)
            state[f"semantic_embed_{branch}.{stage}.bias"] = rand(out, scale=0.3)
    return state


def _layer_norm(x: torch.Tensor, state: dict, prefix: str) -> torch.Tensor:
    return F.layer_norm(
        x, x.shape[-1:], state[f"{prefix}.weight"], state[f"{prefix}.bias"], eps=1e-5
    )


def _linear(x: torch.Tensor, state: dict, prefix: str) -> torch.Tensor:
    return F.linear(x, state[f"{prefix}.weight"], state.get(f"{prefix}.bias"))


def _windows(x: torch.Tensor, w: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * windows, w*w, C), windows in row-major order."""
    b, h, wd, c = x.shape
    return x.reshape(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, c)


def _unwindows(x: torch.Tensor, w: int, h: int, wd: int) -> torch.Tensor:
    c = x.shape[-1]
    return x.reshape(-1, h // w, wd // w, w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, h, wd, c)


def shift_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """SOLIDER's mask for a padded (height, width) grid: (windows, w*w, w*w), 0 or -100."""
    labels = torch.zeros(1, height, width, 1)
    regions = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for i, rows in enumerate(regions):
        for j, cols in enumerate(regions):
            labels[:, rows, cols, :] = 3 * i + j
    per_window = _windows(labels, window).squeeze(-1)
    differ = per_window[:, None, :] != per_window[:, :, None]
    return torch.zeros(differ.shape).masked_fill(differ, MASK_VALUE)


def _window_attention(
    x: torch.Tensor, state: dict, prefix: str, heads: int, window: int, mask: torch.Tensor | None
) -> torch.Tensor:
    n, tokens, c = x.shape
    qkv = (
        _linear(x, state, f"{prefix}.qkv")
        .reshape(n, tokens, 3, heads, c // heads)
        .permute(2, 0, 3, 1, 4)
    )
    q, k, v = qkv[0] * (c // heads) ** -0.5, qkv[1], qkv[2]
    attn = q @ k.transpose(-2, -1)
    table = state[f"{prefix}.relative_position_bias_table"]
    index = relative_position_index(window).reshape(-1)
    attn = attn + table[index].reshape(tokens, tokens, heads).permute(2, 0, 1)[None]
    if mask is not None:
        attn = (
            attn.reshape(-1, mask.shape[0], heads, tokens, tokens) + mask[None, :, None]
        ).reshape(n, heads, tokens, tokens)
    out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(n, tokens, c)
    return _linear(out, state, f"{prefix}.proj")


def _block(
    x: torch.Tensor,
    hw: tuple[int, int],
    state: dict,
    prefix: str,
    heads: int,
    window: int,
    shift: int,
) -> torch.Tensor:
    b, _, c = x.shape
    h, w = hw
    y = _layer_norm(x, state, f"{prefix}.norm1").reshape(b, h, w, c)
    y = F.pad(y, (0, 0, 0, (-w) % window, 0, (-h) % window))
    hp, wp = y.shape[1], y.shape[2]
    mask = None
    if shift:
        y = torch.roll(y, (-shift, -shift), (1, 2))
        mask = shift_mask(hp, wp, window, shift)
    y = _window_attention(_windows(y, window), state, f"{prefix}.attn.w_msa", heads, window, mask)
    y = _unwindows(y, window, hp, wp)
    if shift:
        y = torch.roll(y, (shift, shift), (1, 2))
    x = x + y[:, :h, :w, :].reshape(b, h * w, c)
    y = _layer_norm(x, state, f"{prefix}.norm2")
    y = _linear(
        F.gelu(_linear(y, state, f"{prefix}.ffn.layers.0.0")), state, f"{prefix}.ffn.layers.1"
    )
    return x + y


def patch_merge(
    x: torch.Tensor, hw: tuple[int, int], state: dict, prefix: str
) -> tuple[torch.Tensor, tuple[int, int]]:
    b, _, c = x.shape
    h, w = hw
    grid = F.pad(x.reshape(b, h, w, c).permute(0, 3, 1, 2), (0, w % 2, 0, h % 2))
    merged = F.unfold(grid, kernel_size=2, stride=2).transpose(1, 2)  # feature c*4 + 2*dy + dx
    merged = _linear(_layer_norm(merged, state, f"{prefix}.norm"), state, f"{prefix}.reduction")
    return merged, (grid.shape[2] // 2, grid.shape[3] // 2)


def solider_forward(
    state: dict[str, torch.Tensor],
    images: torch.Tensor,
    cfg: SwinConfig,
    semantic_weight: float | None,
) -> torch.Tensor:
    """SOLIDER's backbone feature for normalised ``images`` (B, 3, H, W); ``semantic_weight`` None
    leaves the semantic embedding out."""
    p = cfg.patch
    x = F.pad(images, (0, (-images.shape[3]) % p, 0, (-images.shape[2]) % p))
    x = F.conv2d(
        x, state["patch_embed.projection.weight"], state["patch_embed.projection.bias"], stride=p
    )
    hw = (x.shape[2], x.shape[3])
    x = _layer_norm(x.flatten(2).transpose(1, 2), state, "patch_embed.norm")
    s = None if semantic_weight is None else torch.tensor([[semantic_weight, 1 - semantic_weight]])
    last = len(cfg.depths) - 1
    out = x
    for stage, depth in enumerate(cfg.depths):
        for block in range(depth):
            shift = cfg.window // 2 if block % 2 else 0
            x = _block(
                x,
                hw,
                state,
                f"stages.{stage}.blocks.{block}",
                cfg.num_heads[stage],
                cfg.window,
                shift,
            )
        out = x
        if stage < last:
            x, hw = patch_merge(x, hw, state, f"stages.{stage}.downsample")
        if s is not None:
            scale = _linear(s, state, f"semantic_embed_w.{stage}")[:, None]
            x = x * F.softplus(scale) + _linear(s, state, f"semantic_embed_b.{stage}")[:, None]
    return _layer_norm(out, state, f"norm{last}").mean(dim=1)
