"""Re-identification network: timm backbone -> (reduction) -> BNNeck -> classifier.

Train-mode forward returns ``(scores, feat)``: classifier scores for the ID loss and the pre-BN
feature for the metric losses. Eval-mode forward returns the test feature (``neck_feat``: after or
before the BNNeck), not normalised: extraction normalises.

ResNets get last stride 1 (BoT). Swin runs at the re-id input size through timm's ``img_size`` and
computes what SOLIDER's Swin computes (``reidpipe.training.swin``: pad to whole 7x7 windows, then
shift, in every stage; SOLIDER's semantic embedding with ``model.semantic_weight``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from reidpipe.errors import ReidpipeError
from reidpipe.filenames import MODEL_FILE
from reidpipe.params import (
    ArchConfig,
    DatasetParams,
    ModelParams,
    OptimParams,
    TrainParams,
)
from reidpipe.training import swin
from reidpipe.training.pretrained import load_backbone_weights
from reidpipe.training.weights_trust import load_restricted

_IMG_SIZE_FAMILIES = ("swin", "vit", "deit")


def embedding_dim(model: ModelParams, backbone_dim: int) -> int:
    """``model.feat_dim``, or the backbone's own width when it is 0; a different width needs
    ``model.reduce_feat_dim`` (a linear reduction after the backbone)."""
    dim = model.feat_dim or backbone_dim
    if dim != backbone_dim and not model.reduce_feat_dim:
        raise ReidpipeError(
            f"model.feat_dim = {model.feat_dim} differs from {model.backbone}'s feature size "
            f"{backbone_dim} and model.reduce_feat_dim is false; set feat_dim to 0 (native) or "
            "reduce_feat_dim to true"
        )
    return dim


class ReidModel(nn.Module):
    def __init__(
        self, backbone: nn.Module, backbone_dim: int, model: ModelParams, num_classes: int
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck_feat = model.neck_feat
        self.feat_dim = embedding_dim(model, backbone_dim)
        if self.feat_dim != backbone_dim:
            self.reduction: nn.Module = nn.Linear(backbone_dim, self.feat_dim, bias=False)
            nn.init.kaiming_normal_(self.reduction.weight, mode="fan_out")
        else:
            self.reduction = nn.Identity()
        self.bnneck = model.neck == "bnneck"
        if self.bnneck:
            self.bottleneck: nn.Module = nn.BatchNorm1d(self.feat_dim)
            self.bottleneck.bias.requires_grad_(False)  # BoT: no shift, so the BN only rescales
        else:
            self.bottleneck = nn.Identity()
        self.classifier = nn.Linear(self.feat_dim, num_classes, bias=not self.bnneck)
        nn.init.normal_(self.classifier.weight, std=0.001)
        if self.classifier.bias is not None:
            nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> Any:
        feat = self.reduction(self.backbone(x))
        neck = self.bottleneck(feat)
        if self.training:
            return self.classifier(neck), feat
        return neck if self.neck_feat == "after" else feat


def _set_last_stride(backbone: nn.Module, stride: int) -> None:
    for module in backbone.layer4[0].modules():  # type: ignore[union-attr]
        if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
            module.stride = (stride, stride)


def create_backbone(model: ModelParams, pretrained: bool) -> nn.Module:
    """The timm backbone without its head (global pooling kept)."""
    kwargs = dict(model.backbone_kwargs)
    if model.backbone.startswith(_IMG_SIZE_FAMILIES):
        kwargs.setdefault("img_size", (model.input_height, model.input_width))
    is_swin = swin.is_swin(model.backbone)
    if is_swin:
        kwargs.update(swin.CREATE_KWARGS)
    kwargs.update(num_classes=0, in_chans=model.input_channels)
    if not timm.is_model(model.backbone):
        raise ReidpipeError(f"model.backbone = {model.backbone!r} is not a timm model name")
    try:
        backbone = timm.create_model(model.backbone, pretrained=pretrained, **kwargs)
    except TypeError as exc:
        raise ReidpipeError(
            f"model.backbone_kwargs {model.backbone_kwargs} rejected by {model.backbone}: {exc}"
        ) from None
    except (OSError, RuntimeError, ValueError) as exc:
        if not pretrained:
            raise
        raise ReidpipeError(
            f"cannot fetch ImageNet weights for {model.backbone} ({type(exc).__name__}: {exc}). "
            "Offline? Download them once and set model.pretrain_choice: self with "
            "model.pretrained_model_path: <file>, or pretrain_choice: '' for random init"
        ) from None
    if hasattr(backbone, "layer4"):
        _set_last_stride(backbone, model.last_stride)
    if is_swin:
        backbone = swin.to_solider_swin(backbone, model.semantic_weight)
    return backbone


def build_model(model: ModelParams, num_classes: int, weights: bool = True) -> ReidModel:
    """The network for ``model``; ``weights`` False skips pretrained weights (they get overwritten
    by a trained state dict)."""
    choice = model.pretrain_choice if weights else ""
    backbone = create_backbone(model, pretrained=choice == "imagenet")
    if choice == "self":
        load_backbone_weights(backbone, Path(model.pretrained_model_path))
    return ReidModel(backbone, backbone.num_features, model, num_classes)


def arch_to_dict(cfg: ArchConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def arch_from_dict(data: Mapping[str, Any]) -> ArchConfig:
    train = dict(data["train"])
    train["optim"] = OptimParams(**train["optim"])
    return ArchConfig(
        name=data["name"],
        model=ModelParams(**data["model"]),
        dataset=DatasetParams(**data["dataset"]),
        train=TrainParams(**train),
    )


def load_trained_model(model_dir: Path) -> tuple[nn.Module, ArchConfig]:
    """The trained network of ``model_dir`` (from ``reidpipe train``) in eval mode, and its config."""
    path = Path(model_dir) / MODEL_FILE
    if path.is_dir():
        raise ReidpipeError(f"{path} is a directory, not a trained model file")
    if not path.is_file():
        raise ReidpipeError(f"{path} does not exist (run `reidpipe train` first)")
    if path.stat().st_size == 0:
        raise ReidpipeError(f"{path} is empty (0 bytes); rerun `reidpipe train`")
    try:
        saved = load_restricted(
            path,
            allowed=(),
            way_out=(
                "`reidpipe train` writes model.pt with tensors and plain values only: pass a folder it "
                "wrote, or train again"
            ),
        )
    except ReidpipeError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch raises pickle, zip and runtime errors alike
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ReidpipeError(
            f"{path} is not a reidpipe trained model (unreadable: {first})"
        ) from None
    if not isinstance(saved, dict) or not {"arch", "num_classes", "state_dict"} <= saved.keys():
        keys = list(saved)[:5] if isinstance(saved, dict) else type(saved).__name__
        raise ReidpipeError(
            f"{path} is not a reidpipe trained model (no arch, num_classes and "
            f"state_dict; found {keys}); pass the folder `reidpipe train` wrote"
        )
    try:
        cfg = arch_from_dict(saved["arch"])
        net = build_model(cfg.model, saved["num_classes"], weights=False)
        net.load_state_dict(saved["state_dict"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise ReidpipeError(f"{path} is not a reidpipe trained model: {exc}") from None
    return net.eval(), cfg
