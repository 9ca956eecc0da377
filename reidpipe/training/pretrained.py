"""Backbone weights from a local file (``model.pretrain_choice: self``).

Accepted: timm and Microsoft Swin state dicts; SOLIDER (``checkpoint_tea.pth``:
``{'teacher': {'backbone.<mmseg name>': ...}}``) and TAO Swin checkpoints, whose mmseg-style names
are mapped onto timm's, patch merging's channel order included; Lightning checkpoints and reidpipe's
own model files; as .pth/.pt/.ckpt (read without running them: ``weights_trust``) or .safetensors
(which ``reidpipe convert-weights --trust`` writes from a file refused as unsafe). Every load logs a
report (filled / missing / unexpected / reshaped ...) and fails when under ``MIN_FILLED`` of the
backbone's tensors were filled.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from timm.layers import resize_rel_pos_bias_table
from timm.models import adapt_input_conv
from torch import nn

from reidpipe import atomic
from reidpipe.errors import ReidpipeError
from reidpipe.training.weights_trust import load_restricted, load_trusted, sha256_of

log = logging.getLogger(__name__)

WRAPPER_KEYS = ("state_dict", "model", "teacher", "student", "module", "net", "params")
KEY_PREFIXES = (
    "module.",
    "model.",
    "net.",
    "backbone.",
    "base.",
    "encoder.",
    "teacher.",
    "student.",
)
MIN_FILLED = 0.95
DERIVED_BUFFERS = ("relative_position_index", "attn_mask")  # recomputed by the model
SEMANTIC_PREFIX = "semantic_embed_"
# mmseg's PatchMerging flattens each 2x2 neighbourhood with nn.Unfold: feature c*4 + k, k = 2*dy + dx.
# timm concatenates x0..x3 = (dy, dx) (0,0), (1,0), (0,1), (1,1): feature g*C + c. Group g of timm
# is unfold offset UNFOLD_OF_GROUP[g].
UNFOLD_OF_GROUP = (0, 2, 1, 3)
_BLOCK_PARTS = {
    "attn.w_msa.": "attn.",
    "ffn.layers.0.0.": "mlp.fc1.",
    "ffn.layers.1.": "mlp.fc2.",
    "norm1.": "norm1.",
    "norm2.": "norm2.",
}
_MMSEG_BLOCK = re.compile(r"stages\.(\d+)\.blocks\.(\d+)\.(.+)")
_MMSEG_DOWNSAMPLE = re.compile(r"stages\.(\d+)\.downsample\.(.+)")
_MMSEG_NORM = re.compile(r"norm(\d+)\.(.+)")
_MMSEG_SEMANTIC = re.compile(r"semantic_embed_[wb]\.(\d+)\.")
_MS_DOWNSAMPLE = re.compile(r"layers\.(\d+)\.downsample\.")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors, .pth/.pt or Lightning .ckpt file, unwrapped from the usual
    containers (``state_dict``, ``model``, ``teacher``...). Torch files are read without running
    them (``weights_trust.load_restricted``)."""
    if path.is_dir():
        raise ReidpipeError(
            f"model.pretrained_model_path {path} is a directory, not a weights file"
        )
    if not path.is_file():
        raise ReidpipeError(f"model.pretrained_model_path {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own untyped errors
            raise ReidpipeError(
                f"cannot read weights {path}: not a safetensors file ({exc})"
            ) from None
    try:
        data = load_restricted(path)
    except ReidpipeError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch raises zip, pickle and runtime errors alike
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ReidpipeError(f"cannot read weights {path}: {first}") from None
    return state_dict_of(data, path)


def state_dict_of(data: Any, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of the state dict in ``data`` (the object read from ``path``): unwrapped from
    ``WRAPPER_KEYS`` until a level holds tensors."""
    while isinstance(data, Mapping) and not any(isinstance(v, torch.Tensor) for v in data.values()):
        inner = next((data[k] for k in WRAPPER_KEYS if isinstance(data.get(k), Mapping)), None)
        if inner is None:
            raise ReidpipeError(
                f"{path} holds no tensors at its top level nor under any of "
                f"{WRAPPER_KEYS}; keys: {list(data)[:10]}"
            )
        data = inner
    if not isinstance(data, Mapping):
        raise ReidpipeError(f"{path} does not hold a state dict")
    return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}


def convert_trusted(source: Path, out: Path) -> int:
    """Write the state dict of ``source``, fully unpickled on the user's word, to the safetensors
    file ``out`` (atomically; the source's name and sha256 in its metadata); returns the tensor
    count."""
    from safetensors.torch import save_file

    if out.suffix != ".safetensors":
        raise ReidpipeError(
            f"--out {out} must end in .safetensors (the pretrained loader reads a "
            "file by its suffix)"
        )
    if not source.is_file():
        raise ReidpipeError(f"{source} does not exist or is not a file")
    digest = sha256_of(source)
    state = state_dict_of(load_trusted(source, digest), source)
    # Own contiguous storage per tensor: safetensors refuses views and shared (tied) storage.
    tensors = {k: v.detach().clone(memory_format=torch.contiguous_format) for k, v in state.items()}
    with atomic.atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata={"converted_from": source.name, "sha256": digest})
    log.info("wrote the %d tensors of %s to %s", len(tensors), source, out)
    return len(tensors)


def strip_prefixes(
    state: Mapping[str, torch.Tensor], targets: Iterable[str]
) -> dict[str, torch.Tensor]:
    """Drop wrapper prefixes (``module.``, ``model.``, ``backbone.``...) until a key names a target
    tensor or no known prefix is left."""
    names = set(targets)
    out = {}
    for key, value in state.items():
        while key not in names:
            prefix = next((p for p in KEY_PREFIXES if key.startswith(p)), None)
            if prefix is None:
                break
            key = key[len(prefix) :]
        out[key] = value
    return out


def unfold_to_concat(tensor: torch.Tensor) -> torch.Tensor:
    """Reorder the last dimension (4C) of a patch-merging tensor from mmseg's unfold order to
    timm's concatenation order."""
    lead, channels = tensor.shape[:-1], tensor.shape[-1] // 4
    grouped = tensor.reshape(*lead, channels, 4)[..., list(UNFOLD_OF_GROUP)]
    return grouped.transpose(-1, -2).reshape(*lead, 4 * channels)


def mmseg_name(key: str, num_stages: int) -> str | None:
    """timm's name for an mmseg-style Swin tensor (SOLIDER, TAO); None for tensors SOLIDER's re-id
    feature never uses (``norm0..`` of the inner stages, the last stage's semantic embedding);
    unknown names come back unchanged."""
    if key.startswith("patch_embed.projection."):
        return "patch_embed.proj." + key[len("patch_embed.projection.") :]
    if match := _MMSEG_BLOCK.fullmatch(key):
        stage, block, rest = match.groups()
        for old, new in _BLOCK_PARTS.items():
            if rest.startswith(old):
                return f"layers.{stage}.blocks.{block}.{new}{rest[len(old) :]}"
        return key
    if match := _MMSEG_DOWNSAMPLE.fullmatch(
        key
    ):  # mmseg merges at a stage's end, timm at its start
        return f"layers.{int(match[1]) + 1}.downsample.{match[2]}"
    if match := _MMSEG_NORM.fullmatch(key):  # one output norm per stage; the feature uses the last
        return f"norm.{match[2]}" if int(match[1]) == num_stages - 1 else None
    if match := _MMSEG_SEMANTIC.match(key):  # SOLIDER's forward discards the last stage's
        return key if int(match[1]) < num_stages - 1 else None
    return key


def is_mmseg_swin(keys: Iterable[str]) -> bool:
    return any(k.startswith(("stages.", "patch_embed.projection.")) for k in keys)


@dataclass
class LoadReport:
    """What a pretrained file filled in a backbone; names are the backbone's (timm's)."""

    path: str
    layout: str
    filled: list[str]
    missing: list[str]
    unexpected: list[str]
    reshaped: list[str]
    reordered: list[str]
    unused: list[str]
    identity: list[str]

    @property
    def fraction(self) -> float:
        counted = len(self.filled) + len(self.missing)
        return len(self.filled) / counted if counted else 0.0

    def describe(self) -> str:
        counted = len(self.filled) + len(self.missing)
        lines = [
            (
                f"pretrained weights {self.path} ({self.layout}): filled {len(self.filled)}/"
                f"{counted} backbone tensors ({100 * self.fraction:.1f}%)"
            )
        ]
        for label, keys, whole in (
            ("missing (left at init)", self.missing, True),
            ("unexpected (ignored)", self.unexpected, False),
            ("reshaped", self.reshaped, False),
            ("reordered from mmseg's unfold order", self.reordered, False),
            ("unused by the re-id feature", self.unused, False),
            ("left at identity (no SOLIDER semantic embedding in the file)", self.identity, False),
        ):
            if keys:
                shown = (
                    keys if whole or len(keys) <= 12 else [*keys[:12], f"... {len(keys) - 12} more"]
                )
                lines.append(f"  {label} {len(keys)}: {', '.join(shown)}")
        return "\n".join(lines)


def _fit(
    key: str, value: torch.Tensor, backbone: nn.Module, want: torch.Tensor
) -> torch.Tensor | None:
    """``value`` reshaped to ``want``'s shape where a known conversion exists, else None."""
    if key.endswith("relative_position_bias_table") and value.shape[1:] == want.shape[1:]:
        attn = backbone.get_submodule(key.rsplit(".", 1)[0])
        return resize_rel_pos_bias_table(
            value, new_window_size=attn.window_size, new_bias_shape=tuple(want.shape)
        )
    if value.ndim == 4 and value.shape[0] == want.shape[0] and value.shape[2:] == want.shape[2:]:
        return adapt_input_conv(want.shape[1], value, base_chans=value.shape[1])
    return None


def convert_state(
    source: Mapping[str, torch.Tensor], backbone: nn.Module
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """``source`` renamed, reordered and reshaped into ``backbone``'s tensors, and the report
    (``path`` left empty)."""
    target = backbone.state_dict()
    state = strip_prefixes(source, target)
    unused = sorted(k for k in state if k.rsplit(".", 1)[-1] in DERIVED_BUFFERS)
    state = {k: v for k, v in state.items() if k not in unused}
    layout, state, reordered, dropped = _to_timm_names(state)
    loaded, unexpected, reshaped = _fit_to_backbone(state, backbone, target)
    has_semantic = any(k.startswith(SEMANTIC_PREFIX) for k in loaded)
    identity = [k for k in target if k.startswith(SEMANTIC_PREFIX) and not has_semantic]
    counted = [k for k in target if not k.endswith("num_batches_tracked") and k not in identity]
    report = LoadReport(
        path="",
        layout=layout,
        filled=[k for k in counted if k in loaded],
        missing=[k for k in counted if k not in loaded],
        unexpected=sorted(unexpected),
        reshaped=reshaped,
        reordered=reordered,
        unused=sorted(unused + dropped),
        identity=identity,
    )
    return loaded, report


def _to_timm_names(
    state: dict[str, torch.Tensor],
) -> tuple[str, dict[str, torch.Tensor], list[str], list[str]]:
    """The file's layout, and its tensors under timm's names; with the (timm) names of those
    reordered and the (file's) names of those the re-id feature never uses."""
    if is_mmseg_swin(state):
        renamed, reordered, unused = _from_mmseg(state)
        return "mmseg Swin (SOLIDER/TAO)", renamed, reordered, unused
    if "layers.0.downsample.reduction.weight" in state:
        moved = {
            _MS_DOWNSAMPLE.sub(lambda m: f"layers.{int(m[1]) + 1}.downsample.", k): v
            for k, v in state.items()
        }
        return "Microsoft Swin (merging at stage ends)", moved, [], []
    return "timm names", state, [], []


def _from_mmseg(
    state: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """An mmseg-style Swin's tensors renamed for timm, the patch-merging ones reordered; with
    the names reordered and those left out as unused."""
    stages = 1 + max(int(m[1]) for k in state if (m := re.match(r"stages\.(\d+)\.", k)))
    renamed, reordered, unused = {}, [], []
    for key, value in state.items():
        name = mmseg_name(key, stages)
        if name is None:
            unused.append(key)
            continue
        if _MMSEG_DOWNSAMPLE.fullmatch(key) and (
            key.endswith("reduction.weight") or ".norm." in key
        ):
            value = unfold_to_concat(value)
            reordered.append(name)
        renamed[name] = value
    return renamed, reordered, unused


def _fit_to_backbone(
    state: dict[str, torch.Tensor], backbone: nn.Module, target: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """The tensors of ``state`` that ``backbone`` has (``target``: its state dict), reshaped
    where needed; with the unexpected ones (names, or names and both shapes) and those reshaped."""
    loaded, unexpected, reshaped = {}, [], []
    for key, value in state.items():
        want = target.get(key)
        if want is None:
            unexpected.append(key)
            continue
        if value.shape != want.shape:
            fitted = _fit(key, value, backbone, want)
            if fitted is None:
                unexpected.append(f"{key} {tuple(value.shape)} vs {tuple(want.shape)}")
                continue
            value = fitted
            reshaped.append(key)
        loaded[key] = value
    return loaded, unexpected, reshaped


def load_backbone_weights(backbone: nn.Module, path: Path) -> LoadReport:
    """Fill ``backbone`` from the file at ``path`` and log the report; a clear error when under
    ``MIN_FILLED`` of its tensors were found."""
    state, report = convert_state(read_state_dict(path), backbone)
    report.path = str(path)
    if report.fraction < MIN_FILLED:
        raise ReidpipeError(
            f"model.pretrained_model_path {path} ({report.layout}) fills only "
            f"{len(report.filled)}/{len(report.filled) + len(report.missing)} of "
            f"{type(backbone).__name__}'s tensors (need {MIN_FILLED:.0%}); missing: "
            f"{', '.join(report.missing)}; unexpected in the file: "
            f"{', '.join(report.unexpected[:20]) or 'none'}"
        )
    backbone.load_state_dict(state, strict=False)
    log.info("%s", report.describe())
    return report
