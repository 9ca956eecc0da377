"""``model``: the network (TAO's ``model`` keys)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from reidpipe.params.sections.setting import setting


@dataclass
class ModelParams:
    backbone: str = setting("resnet50", doc="timm model name (resnet*, swin_*)")
    backbone_kwargs: dict[str, Any] = setting({}, doc="extra timm.create_model arguments")
    last_stride: int = setting(1, ge=1, le=2, doc="stride of ResNet's last stage")
    pretrain_choice: Literal["imagenet", "self", ""] = setting(
        "imagenet", doc="imagenet: timm weights; self: pretrained_model_path; '': random init"
    )
    pretrained_model_path: str = setting("", doc="local weights (.pth/.safetensors/.ckpt)")
    input_channels: int = setting(3, ge=1, le=3)
    input_width: int = setting(128, ge=16)
    input_height: int = setting(256, ge=16)
    neck: Literal["bnneck", ""] = setting("bnneck", doc="BNNeck between feature and classifier")
    feat_dim: int = setting(
        0,
        ge=0,
        doc="embedding dimension; 0: the backbone's own (2048 for ResNet-50, 768 for Swin-T)",
    )
    reduce_feat_dim: bool = setting(
        True, doc="add a linear reduction when feat_dim != backbone dim"
    )
    neck_feat: Literal["before", "after"] = setting("after", doc="test feature before/after BNNeck")
    metric_loss_type: Literal["triplet", "center", "triplet_center"] = setting("triplet")
    no_margin: bool = setting(False, doc="soft-margin triplet loss instead of the margin")
    with_center_loss: bool = setting(False)
    with_flip_feature: bool = setting(False, doc="average the features of the image and its mirror")
    label_smooth: bool = setting(True, doc="label smoothing 0.1 in the ID loss")
    semantic_weight: float = setting(
        0.2,
        ge=0,
        le=1,
        doc="Swin: SOLIDER's semantic weight lambda; each stage output feeding the "
        "next becomes x*softplus(Lw([lambda, 1-lambda])) + Lb(...), with SOLIDER's semantic_embed "
        "layers from the pretrained file (identity without them)",
    )
