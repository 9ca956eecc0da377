"""TAO ReIdentificationNet (ResNet) and ReIdentificationNet Transformer (Swin) experiment specs
as reidpipe overrides (``reidpipe params --from-tao SPEC.yaml``).

Every key of TAO's ``ExperimentConfig`` for re-identification (nvidia_tao_core's
``config/re_identification/default_config.py`` and the common train/evaluate/inference/export
sections it extends, TAO 5.0-6.x) has one rule here: *mapped* (same meaning, reidpipe key of the
same name or its counterpart), *translated* (the value changes so that reidpipe does what TAO does,
the note says why) or *ignored* (with the reason). Keys TAO reads but reidpipe has no counterpart
for are accepted at TAO's default value only. Any other key is an error naming it.

The TAO model, dataset, train and re-ranking values go into ``archs.<arch>``, with TAO's defaults
for the keys a spec leaves out (a spec means TAO's defaults, not reidpipe's), and its export keys
into ``archs.<arch>.export``; the dataset folders, evaluation and inference keys go to reidpipe's
top-level sections.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Literal

import yaml

from reidpipe.errors import ReidpipeError
from reidpipe.market import SPLIT_DIRS
from reidpipe.params.loading import params_from_dict, read_yaml_mapping
from reidpipe.params.merge import deep_merge
from reidpipe.params.schema import Params

Kind = Literal["mapped", "translated", "ignored"]
ARCH_SECTIONS = ("model", "dataset", "train", "export")

# TAO's defaults (nvidia_tao_core re_identification default_config, TAO 5.5-6.x) for the keys that
# decide what is trained and evaluated. ``None`` is TAO's "not set". GPU choice and reporting
# keys (gpu_ids, max_rank, num_query) are left to reidpipe unless the spec sets them.
TAO_DEFAULTS: dict[str, Any] = {
    "model.backbone": "resnet_50",
    "model.last_stride": 1,
    "model.pretrain_choice": "imagenet",
    "model.pretrained_model_path": None,
    "model.input_channels": 3,
    "model.input_width": 128,
    "model.input_height": 256,
    "model.neck": "bnneck",
    "model.feat_dim": 256,
    "model.reduce_feat_dim": False,
    "model.neck_feat": "after",
    "model.metric_loss_type": "triplet",
    "model.no_margin": False,
    "model.with_center_loss": False,
    "model.with_flip_feature": False,
    "model.label_smooth": True,
    "model.drop_path": 0.1,
    "model.att_drop_rate": 0.0,
    "model.semantic_weight": 1.0,
    "dataset.num_classes": 751,
    "dataset.batch_size": 64,
    "dataset.val_batch_size": 128,
    "dataset.num_workers": 8,
    "dataset.pixel_mean": [0.485, 0.456, 0.406],
    "dataset.pixel_std": [0.226, 0.226, 0.226],
    "dataset.padding": 10,
    "dataset.prob": 0.5,
    "dataset.re_prob": 0.5,
    "dataset.sampler": "softmax_triplet",
    "dataset.num_instances": 4,
    "re_ranking.re_ranking": False,
    "re_ranking.k1": 20,
    "re_ranking.k2": 6,
    "re_ranking.lambda_value": 0.3,
    "train.num_epochs": 10,
    "train.checkpoint_interval": 1,
    "train.validation_interval": 1,
    "train.seed": 1234,
    "train.resume_training_checkpoint_path": None,
    "train.grad_clip": 0.0,
    "train.optim.name": "Adam",
    "train.optim.lr_steps": [40, 70],
    "train.optim.gamma": 0.1,
    "train.optim.bias_lr_factor": 1.0,
    "train.optim.weight_decay": 0.0005,
    "train.optim.weight_decay_bias": 0.0005,
    "train.optim.warmup_factor": 0.01,
    "train.optim.warmup_iters": 10,
    "train.optim.warmup_epochs": 20,
    "train.optim.warmup_method": "linear",
    "train.optim.base_lr": 0.00035,
    "train.optim.momentum": 0.9,
    "train.optim.center_loss_weight": 0.0005,
    "train.optim.center_lr": 0.5,
    "train.optim.triplet_loss_margin": 0.3,
    "train.optim.large_fc_lr": False,
}

# TAO backbone name -> (timm name, reidpipe arch name, note). TAO's ResNet class builds every
# depth from Bottleneck blocks with the block counts of its name, and has no ReLU after the stem.
TAO_BACKBONES: dict[str, tuple[str, str, str]] = {
    "resnet_18": (
        "resnet26",
        "resnet18",
        "TAO builds resnet_18 from Bottleneck blocks [2, 2, 2, 2]: timm's resnet26",
    ),
    "resnet_34": (
        "resnet50",
        "resnet34",
        "TAO builds resnet_34 from Bottleneck blocks [3, 4, 6, 3]: a ResNet-50",
    ),
    "resnet_50": ("resnet50", "resnet50", "timm's ResNet-50 (TAO's omits the stem ReLU)"),
    "resnet_101": ("resnet101", "resnet101", "timm's ResNet-101 (TAO's omits the stem ReLU)"),
    "resnet_152": ("resnet152", "resnet152", "timm's ResNet-152 (TAO's omits the stem ReLU)"),
    "swin_tiny_patch4_window7_224": ("swin_tiny_patch4_window7_224", "swin_tiny", "timm's Swin-T"),
    "swin_small_patch4_window7_224": (
        "swin_small_patch4_window7_224",
        "swin_small",
        "timm's Swin-S",
    ),
    "swin_base_patch4_window7_224": ("swin_base_patch4_window7_224", "swin_base", "timm's Swin-B"),
}
# Width of each backbone's pooled feature (ResNets from Bottleneck blocks: 2048).
NATIVE_DIM = {"resnet": 2048, "swin_tiny": 768, "swin_small": 768, "swin_base": 1024}
# TAO key of each dataset folder -> reidpipe split name.
DATASET_DIR_KEYS = {
    "dataset.train_dataset_dir": "train",
    "dataset.query_dataset_dir": "query",
    "dataset.test_dataset_dir": "gallery",
}
# Sections whose whole subtree is ignored (logging integrations and hardware flags).
IGNORED_SUBTREES = {
    "wandb": "Weights & Biases logging: reidpipe logs to train_log.csv, DVCLive and (with "
    "train.loggers: [tensorboard]) TensorBoard",
    "train.cudnn": "cuDNN flags: reidpipe keeps Lightning's defaults and seeds with train.seed",
}


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    targets: dict[str, Any] = field(default_factory=dict)
    note: str = ""


Rule = Callable[[Any, Mapping[str, Any]], Outcome]


@dataclass(frozen=True)
class KeyRow:
    """One TAO key of the conversion: its value, from the spec or TAO's default, and its fate."""

    key: str
    value: Any
    from_spec: bool
    outcome: Outcome


@dataclass(frozen=True)
class Conversion:
    arch: str
    overrides: dict[str, Any]
    rows: list[KeyRow]

    def table(self) -> str:
        """Every TAO key of the spec, and each TAO default that sets a reidpipe value: its kind,
        the reidpipe values it gives and why (notes on the line below)."""
        rows = [r for r in self.rows if r.from_spec or r.outcome.targets]
        cells = [_cells(r) for r in rows]
        widths = [max(len(c[i]) for c in cells) for i in range(2)]
        given = sum(r.from_spec for r in rows)
        title = (
            f"{given} keys of the spec and {len(rows) - given} TAO defaults -> "
            f"archs.{self.arch} and the top-level sections"
        )
        lines = [title]
        for row, (kind, tao, target) in zip(rows, cells):
            lines.append(f"{kind.ljust(widths[0])}  {tao.ljust(widths[1])}  -> {target}")
            if row.outcome.note:
                lines.append(" " * (widths[0] + 2) + f"# {row.outcome.note}")
        return "\n".join(lines) + "\n"

    def yaml_text(self, spec: str | Path) -> str:
        head = (
            f"# reidpipe overrides converted from the TAO spec {spec}\n"
            f"# by `reidpipe params --from-tao`; use after params.yaml:\n"
            f"#   reidpipe <stage> --params params.yaml THIS_FILE\n"
            f"#   snakemake --configfile params.yaml THIS_FILE\n"
        )
        return head + yaml.safe_dump(self.overrides, sort_keys=False)


# ------------------------------------------------------------------------------------ rules


def _show(value: Any) -> str:
    """A value as YAML on one line (``null``, ``[40, 70]``, ``{train: dir}``)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf")).strip()
    return text.removesuffix("...").strip()


def _cells(row: KeyRow) -> tuple[str, str, str]:
    origin = "" if row.from_spec else " (TAO default)"
    targets = ", ".join(f"{k}: {_show(v)}" for k, v in row.outcome.targets.items())
    return row.outcome.kind, f"{row.key}: {_show(row.value)}{origin}", targets or "-"


def _mapped(target: str, note: str = "") -> Rule:
    return lambda value, eff: Outcome("mapped", {target: value}, note)


def _ignored(reason: str) -> Rule:
    return lambda value, eff: Outcome("ignored", {}, reason)


def _only_default(default: Any, reason: str) -> Rule:
    """A key TAO reads that reidpipe has no counterpart for: accepted at TAO's default only."""

    def rule(value: Any, eff: Mapping[str, Any]) -> Outcome:
        if value != default:
            raise _NoCounterpart(f"{reason}; only TAO's default {_show(default)} is accepted")
        return Outcome("ignored", {}, f"TAO's default; {reason}")

    return rule


class _NoCounterpart(Exception):
    """Raised by a rule; converted to a ReidpipeError naming the spec and key."""


def _family(eff: Mapping[str, Any]) -> str:
    return "swin" if str(eff["model.backbone"]).startswith("swin") else "resnet"


def _backbone(value: Any, eff: Mapping[str, Any]) -> Outcome:
    if value not in TAO_BACKBONES:
        raise _NoCounterpart(f"unknown TAO backbone; expected one of {', '.join(TAO_BACKBONES)}")
    timm_name, _, note = TAO_BACKBONES[value]
    return Outcome("translated", {"model.backbone": timm_name}, note)


def _native_dim(eff: Mapping[str, Any]) -> int:
    arch = TAO_BACKBONES[eff["model.backbone"]][1]
    return NATIVE_DIM["resnet"] if arch.startswith("resnet") else NATIVE_DIM[arch]


def _feat_dim(value: Any, eff: Mapping[str, Any]) -> Outcome:
    native = _native_dim(eff)
    if _family(eff) == "swin" and not eff["model.reduce_feat_dim"]:
        return Outcome(
            "translated",
            {"model.feat_dim": 0, "model.reduce_feat_dim": False},
            f"TAO's Swin ignores feat_dim unless reduce_feat_dim is true: the "
            f"embedding is the backbone's own {native}",
        )
    if value == native:
        return Outcome(
            "translated",
            {"model.feat_dim": 0, "model.reduce_feat_dim": False},
            f"the backbone's own width ({native}): no reduction",
        )
    how = (
        "TAO's ResNet reduces 2048 to feat_dim (1x1 conv) whenever they differ"
        if _family(eff) == "resnet"
        else "a linear reduction after the backbone, as TAO's"
    )
    return Outcome("translated", {"model.feat_dim": value, "model.reduce_feat_dim": True}, how)


def _reduce_feat_dim(value: Any, eff: Mapping[str, Any]) -> Outcome:
    if _family(eff) == "resnet":
        return Outcome("ignored", {}, "TAO's ResNet does not read it (see feat_dim)")
    return Outcome("translated", {}, "decides whether feat_dim applies (see feat_dim)")


def _neck(value: Any, eff: Mapping[str, Any]) -> Outcome:
    if value not in ("bnneck", ""):
        raise _NoCounterpart("expected 'bnneck' or ''")
    if _family(eff) == "swin" and value != "bnneck":
        return Outcome(
            "translated",
            {"model.neck": "bnneck"},
            "TAO's Swin head always has the BNNeck, whatever neck says",
        )
    return Outcome("mapped", {"model.neck": value})


def _pretrain_choice(value: Any, eff: Mapping[str, Any]) -> Outcome:
    if value not in ("imagenet", "self", ""):
        raise _NoCounterpart("expected 'imagenet', 'self' or ''")
    path = eff["model.pretrained_model_path"]
    if path:
        return Outcome(
            "translated",
            {"model.pretrain_choice": "self"},
            "TAO loads weights only from pretrained_model_path (the choice names its "
            "format); reidpipe reads that file with pretrain_choice self",
        )
    return Outcome(
        "translated",
        {"model.pretrain_choice": ""},
        "without pretrained_model_path TAO trains from random weights; set "
        "model.pretrain_choice: imagenet for timm's ImageNet weights",
    )


def _pretrained_model_path(value: Any, eff: Mapping[str, Any]) -> Outcome:
    return Outcome("mapped", {"model.pretrained_model_path": value or ""})


def _swin_only(target: str) -> Rule:
    def rule(value: Any, eff: Mapping[str, Any]) -> Outcome:
        if _family(eff) == "resnet":
            return Outcome("ignored", {}, "TAO's ResNet does not read it")
        return Outcome("translated", {target: value}, "timm's Swin argument of the same meaning")

    return rule


def _dataset_dirs(value: Any, eff: Mapping[str, Any]) -> Outcome:
    """The three folders as one reidpipe dataset: Market-1501 layout when they are a root's
    bounding_box_train / bounding_box_test / query, else the root and each split's folder."""
    dirs = {split: eff.get(key) for key, split in DATASET_DIR_KEYS.items()}
    missing = [k for k, s in DATASET_DIR_KEYS.items() if not dirs[s]]
    if missing:
        raise _NoCounterpart(f"TAO trains from three folders; {', '.join(missing)} not set")
    try:
        root = os.path.commonpath([str(d) for d in dirs.values()])
    except ValueError:
        raise _NoCounterpart(
            f"the three folders mix absolute and relative paths: {sorted(dirs.values())}"
        ) from None
    rel = {split: PurePath(os.path.relpath(d, root or ".")).as_posix() for split, d in dirs.items()}
    if "." in rel.values():
        raise _NoCounterpart(f"one dataset folder contains the others: {dirs}")
    # TAO accepts any dataset in this layout: no official statistics to check.
    data: dict[str, Any] = {
        "data.source": "custom",
        "data.dataset_dir": root or ".",
        "data.strict": False,
    }
    if rel == SPLIT_DIRS:
        return Outcome(
            "translated",
            data,
            "a dataset in Market-1501 layout (train, query, "
            "test = gallery) at the folders' common root",
        )
    data["data.split_dirs"] = rel
    return Outcome("translated", data, "three folders (test = gallery) under their common root")


def _with_dataset_dirs(value: Any, eff: Mapping[str, Any]) -> Outcome:
    return Outcome("translated", {}, "with train_dataset_dir")


def _optim_rule(when_linear: Rule, when_cosine: Rule) -> Rule:
    def rule(value: Any, eff: Mapping[str, Any]) -> Outcome:
        cosine = eff["train.optim.warmup_method"] == "cosine"
        return (when_cosine if cosine else when_linear)(value, eff)

    return rule


def _warmup_method(value: Any, eff: Mapping[str, Any]) -> Outcome:
    if value == "linear":
        return Outcome(
            "mapped",
            {"train.optim.warmup_method": "linear"},
            "TAO's WarmupMultiStepLR: linear warmup over warmup_iters epochs, then "
            "gamma at each of lr_steps",
        )
    if value == "cosine":
        return Outcome(
            "mapped",
            {"train.optim.warmup_method": "cosine", "train.optim.min_lr_factor": 0.002},
            "TAO's cosine scheduler: linear warmup from 0.01 base_lr over warmup_epochs,"
            " then cosine to 0.002 base_lr at num_epochs",
        )
    raise _NoCounterpart("reidpipe has TAO's 'linear' (WarmupMultiStepLR) and 'cosine' schedules")


def _cosine_unused(value: Any, eff: Mapping[str, Any]) -> Outcome:
    return Outcome("ignored", {}, "TAO's cosine schedule (warmup_method: cosine) does not read it")


def _warmup_length(note: str) -> Rule:
    """The warmup length in epochs; reidpipe's warmup_iters (which would replace it) is off."""

    def rule(value: Any, eff: Mapping[str, Any]) -> Outcome:
        return Outcome(
            "translated", {"train.optim.warmup_epochs": value, "train.optim.warmup_iters": 0}, note
        )

    return rule


def _warmup_factor_cosine(value: Any, eff: Mapping[str, Any]) -> Outcome:
    if value == 0.01:
        return Outcome(
            "mapped",
            {"train.optim.warmup_factor": value},
            "TAO's cosine warmup starts at 0.01 base_lr",
        )
    return Outcome(
        "translated",
        {"train.optim.warmup_factor": 0.01},
        "TAO's cosine schedule warms up from 0.01 base_lr whatever warmup_factor says",
    )


def _steps(value: Any, eff: Mapping[str, Any]) -> Outcome:
    if eff["train.optim.warmup_method"] == "cosine":
        return _cosine_unused(value, eff)
    return Outcome(
        "mapped", {"train.optim.lr_steps": value}, "epochs at which the lr is multiplied by gamma"
    )


def _seed(value: Any, eff: Mapping[str, Any]) -> Outcome:
    if not isinstance(value, int) or value < 0:
        raise _NoCounterpart("reidpipe always seeds its runs: expected an integer >= 0")
    return Outcome("mapped", {"train.seed": value})


def _num_classes(value: Any, eff: Mapping[str, Any]) -> Outcome:
    return Outcome(
        "translated",
        {"dataset.num_classes": 0},
        "reidpipe counts the identities it trains on (train minus split.val_ids)",
    )


def _same_folder(split_key: str) -> Rule:
    """evaluate/inference test_dataset and query_dataset: reidpipe evaluates the dataset's own."""

    def rule(value: Any, eff: Mapping[str, Any]) -> Outcome:
        own = eff.get(split_key)
        if value and own and Path(value) != Path(own):
            raise _NoCounterpart(
                f"reidpipe evaluates the folders of the dataset section; {split_key} is {own}"
            )
        return Outcome("ignored", {}, f"the {split_key} folder, evaluated by the pipeline")

    return rule


def _output_file(value: Any, eff: Mapping[str, Any]) -> Outcome:
    return Outcome(
        "translated",
        {"extract.tao_json": bool(value)},
        "extract also writes TAO's embedding JSON, under results/<arch>/",
    )


PIPELINE_PATHS = "reidpipe's stages write under results/<arch>/ (Snakemake/DVC outputs)"
OWN_MODEL = "reidpipe uses the model its train stage wrote (results/<arch>/)"
GPUS = "reidpipe's stages take GPUs from the scheduler (see README, GPUs)"
JPM = "read only by TAO's JPM model (TransReID ViT), which reidpipe does not have"
NOT_READ = "defined in TAO's config but not read by its training code"

RULES: dict[str, Rule] = {
    "results_dir": _ignored(PIPELINE_PATHS),
    "encryption_key": _ignored("reidpipe's checkpoints are not encrypted"),
    "model_name": _ignored("TAO's model-agnostic entry point: reidpipe runs re-identification"),
    # model
    "model.backbone": _backbone,
    "model.last_stride": _mapped("model.last_stride"),
    "model.pretrain_choice": _pretrain_choice,
    "model.pretrained_model_path": _pretrained_model_path,
    "model.input_channels": _mapped("model.input_channels"),
    "model.input_width": _mapped("model.input_width"),
    "model.input_height": _mapped("model.input_height"),
    "model.neck": _neck,
    "model.feat_dim": _feat_dim,
    "model.reduce_feat_dim": _reduce_feat_dim,
    "model.neck_feat": _mapped("model.neck_feat"),
    "model.metric_loss_type": _mapped("model.metric_loss_type"),
    "model.no_margin": _mapped(
        "model.no_margin",
        "soft-margin triplet as documented (TAO "
        "5.x-6.x code does not read it and always uses the margin)",
    ),
    "model.with_center_loss": _mapped("model.with_center_loss"),
    "model.with_flip_feature": _mapped(
        "model.with_flip_feature", "TAO sums, reidpipe averages: same after L2 norm"
    ),
    "model.label_smooth": _mapped("model.label_smooth"),
    "model.pretrain_hw_ratio": _ignored(
        "TAO reads it only in its JPM (TransReID ViT) model, to resize a checkpoint's position "
        "embedding pretrained at that height/width ratio; Swin has no position embedding to "
        "resize"
    ),
    "model.drop_path": _swin_only("model.backbone_kwargs.drop_path_rate"),
    "model.att_drop_rate": _swin_only("model.backbone_kwargs.attn_drop_rate"),
    "model.drop_out": _only_default(0.0, "TAO's Swin dropout after the patch embedding"),
    "model.dropout_rate": _only_default(0.0, "TAO's Swin dropout before the classifier"),
    "model.id_loss_type": _only_default(
        "softmax", "cosine-margin ID losses (arcface, cosface, amsoftmax, circle)"
    ),
    "model.jpm": _only_default(False, JPM),
    "model.stride_size": _ignored(JPM),
    "model.shift_num": _ignored(JPM),
    "model.shuffle_group": _ignored(JPM),
    "model.devide_length": _ignored(JPM),
    "model.re_arrange": _ignored(JPM),
    "model.sie_coe": _ignored(JPM),
    "model.sie_camera": _ignored(JPM),
    "model.sie_view": _ignored(JPM),
    "model.cos_layer": _ignored("TAO stores it but its forward does not use it"),
    "model.semantic_weight": _swin_only("model.semantic_weight"),
    "model.id_loss_weight": _ignored(NOT_READ),
    "model.triplet_loss_weight": _ignored(NOT_READ),
    "model.gem_pooling": _ignored(NOT_READ),
    "model.stem_conv": _ignored(NOT_READ),
    # dataset
    "dataset.train_dataset_dir": _dataset_dirs,
    "dataset.test_dataset_dir": _with_dataset_dirs,
    "dataset.query_dataset_dir": _with_dataset_dirs,
    "dataset.num_classes": _num_classes,
    "dataset.batch_size": _mapped("dataset.batch_size", "the global batch (P x K)"),
    "dataset.val_batch_size": _mapped("dataset.val_batch_size"),
    "dataset.num_workers": _mapped("dataset.num_workers"),
    "dataset.pixel_mean": _mapped("dataset.pixel_mean"),
    "dataset.pixel_std": _mapped("dataset.pixel_std"),
    "dataset.padding": _mapped("dataset.padding"),
    "dataset.prob": _mapped("dataset.prob"),
    "dataset.re_prob": _mapped("dataset.re_prob"),
    "dataset.sampler": _mapped("dataset.sampler"),
    "dataset.num_instances": _mapped("dataset.num_instances"),
    # re_ranking
    "re_ranking.re_ranking": _mapped("re_ranking.re_ranking"),
    "re_ranking.k1": _mapped("re_ranking.k1"),
    "re_ranking.k2": _mapped("re_ranking.k2"),
    "re_ranking.lambda_value": _mapped("re_ranking.lambda_value"),
    "re_ranking.max_rank": _mapped("evaluate.max_rank", "length of the CMC curve"),
    "re_ranking.num_query": _mapped(
        "report.sampled_queries", "queries drawn in the sampled-matches figure"
    ),
    # train
    "train.results_dir": _ignored(PIPELINE_PATHS),
    "train.num_epochs": _mapped("train.num_epochs"),
    "train.checkpoint_interval": _mapped("train.checkpoint_interval"),
    "train.validation_interval": _mapped(
        "train.validation_interval",
        "reidpipe validates on split.val_ids identities held out of train (TAO on query/test)",
    ),
    "train.seed": _seed,
    "train.num_gpus": _mapped("train.num_gpus"),
    "train.gpu_ids": _mapped("train.gpu_ids"),
    "train.num_nodes": _mapped("train.num_nodes"),
    "train.resume_training_checkpoint_path": lambda value, eff: Outcome(
        "mapped", {"train.resume_training_checkpoint_path": value or ""}
    ),
    "train.grad_clip": _mapped("train.clip_grad_norm", "gradient norm clipping, 0 = off"),
    "train.optim.name": _mapped("train.optim.name"),
    "train.optim.lr_monitor": _ignored(
        "TAO hands it to Lightning as the monitored metric, which only a plateau scheduler "
        "reads; neither TAO's schedules nor reidpipe's do"
    ),
    "train.optim.lr_steps": _steps,
    "train.optim.steps": _steps,  # TAO 5.0's name of lr_steps
    "train.optim.gamma": _optim_rule(_mapped("train.optim.gamma"), _cosine_unused),
    "train.optim.bias_lr_factor": _mapped("train.optim.bias_lr_factor"),
    "train.optim.weight_decay": _mapped("train.optim.weight_decay"),
    "train.optim.weight_decay_bias": _mapped("train.optim.weight_decay_bias"),
    "train.optim.warmup_factor": _optim_rule(
        _mapped("train.optim.warmup_factor"), _warmup_factor_cosine
    ),
    "train.optim.warmup_iters": _optim_rule(
        _warmup_length("TAO steps this schedule once per epoch: warmup_iters counts epochs"),
        _cosine_unused,
    ),
    "train.optim.warmup_epochs": _optim_rule(
        _ignored("TAO's linear (multistep) schedule reads warmup_iters instead"),
        _warmup_length("the cosine schedule's warmup, in epochs"),
    ),
    "train.optim.warmup_method": _warmup_method,
    "train.optim.base_lr": _mapped("train.optim.base_lr"),
    "train.optim.momentum": _mapped("train.optim.momentum", "SGD only"),
    "train.optim.center_loss_weight": _mapped("train.optim.center_loss_weight"),
    "train.optim.center_lr": _mapped("train.optim.center_lr"),
    "train.optim.triplet_loss_margin": _mapped("train.optim.triplet_loss_margin"),
    "train.optim.large_fc_lr": _mapped("train.optim.large_fc_lr"),
    "train.optim.cosine_margin": _ignored("read only by TAO's cosine-margin ID losses"),
    "train.optim.cosine_scale": _ignored("read only by TAO's cosine-margin ID losses"),
    "train.optim.trp_l2": _ignored(NOT_READ),
    # evaluate
    "evaluate.checkpoint": _ignored(OWN_MODEL),
    "evaluate.trt_engine": _ignored("reidpipe's build-trt stage builds and gates its engine"),
    "evaluate.results_dir": _ignored(PIPELINE_PATHS),
    "evaluate.num_gpus": _ignored(GPUS),
    "evaluate.gpu_ids": _ignored(GPUS),
    "evaluate.gpu_id": _ignored(GPUS),
    "evaluate.num_nodes": _ignored(GPUS),
    "evaluate.output_sampled_matches_plot": _ignored(
        "the report stage draws the sampled matches (report.sampled_queries)"
    ),
    "evaluate.output_cmc_curve_plot": _ignored("the report stage draws the CMC curve"),
    "evaluate.test_dataset": _same_folder("dataset.test_dataset_dir"),
    "evaluate.query_dataset": _same_folder("dataset.query_dataset_dir"),
    # inference
    "inference.checkpoint": _ignored(OWN_MODEL),
    "inference.trt_engine": _ignored("reidpipe's build-trt stage builds and gates its engine"),
    "inference.results_dir": _ignored(PIPELINE_PATHS),
    "inference.num_gpus": _ignored(GPUS),
    "inference.gpu_ids": _ignored(GPUS),
    "inference.gpu_id": _ignored(GPUS),
    "inference.num_nodes": _ignored(GPUS),
    "inference.output_file": _output_file,
    "inference.test_dataset": _same_folder("dataset.test_dataset_dir"),
    "inference.query_dataset": _same_folder("dataset.query_dataset_dir"),
    # export
    "export.checkpoint": _ignored(OWN_MODEL),
    "export.onnx_file": _ignored(PIPELINE_PATHS),
    "export.results_dir": _ignored(PIPELINE_PATHS),
    "export.gpu_id": _ignored(GPUS),
    "export.on_cpu": _ignored("reidpipe's ONNX runs on CPU and GPU alike"),
    "export.opset_version": _mapped("export.opset"),
    "export.input_channel": _ignored("TAO's re-id export uses model.input_channels"),
    "export.input_width": _ignored("TAO's re-id export uses model.input_width"),
    "export.input_height": _ignored("TAO's re-id export uses model.input_height"),
    "export.batch_size": _ignored(
        "reidpipe's ONNX always has a dynamic batch (deploy.*_batch bound the TensorRT engine)"
    ),
    "export.verbose": _ignored("reidpipe logs the export itself"),
}


# -------------------------------------------------------------------------------- conversion

_SECTIONS = {key.rsplit(".", 1)[0] for key in RULES if "." in key}


def _flatten(data: Mapping[str, Any], prefix: str, spec: Path) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if value is None and path in _SECTIONS:
            continue  # an empty section, as ``evaluate:`` with nothing under it
        if path in IGNORED_SUBTREES:
            flat[path] = value
        elif isinstance(value, Mapping):
            if path in RULES:
                raise ReidpipeError(f"TAO spec {spec}: {path} must be a value, not a mapping")
            flat.update(_flatten(value, f"{path}.", spec))
        elif path in RULES:
            flat[path] = value
        elif path in _SECTIONS:
            raise ReidpipeError(
                f"TAO spec {spec}: {path} must be a mapping of keys, got {_show(value)}"
            )
        else:
            raise ReidpipeError(
                f"TAO spec {spec}: unknown key {path!r} (not a TAO "
                "ReIdentificationNet key; see README, For TAO users)"
            )
    return flat


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def convert_tao_spec(spec: str | Path, arch: str | None = None) -> Conversion:
    """The reidpipe overrides equivalent to TAO spec ``spec``, and the fate of every TAO key."""
    spec = Path(spec)
    given = _flatten(read_yaml_mapping(spec, "TAO spec"), "", spec)
    if "train.optim.steps" in given and "train.optim.lr_steps" in given:
        raise ReidpipeError(
            f"TAO spec {spec}: both train.optim.steps and train.optim.lr_steps "
            "are set (steps is TAO 5.0's name of lr_steps): keep one"
        )
    defaults = {
        k: v
        for k, v in TAO_DEFAULTS.items()
        if not (k == "train.optim.lr_steps" and "train.optim.steps" in given)
    }
    eff = {**defaults, **given}
    if eff["model.backbone"] not in TAO_BACKBONES:
        raise ReidpipeError(
            f"TAO spec {spec}: model.backbone = {eff['model.backbone']!r} is not "
            f"a TAO re-identification backbone; expected one of "
            f"{', '.join(TAO_BACKBONES)}"
        )
    name = arch or TAO_BACKBONES[eff["model.backbone"]][1]
    rows: list[KeyRow] = []
    keys = list(given) + [k for k in defaults if k not in given]
    if any(k in given for k in DATASET_DIR_KEYS):
        keys += [k for k in DATASET_DIR_KEYS if k not in keys]
    for key in keys:
        if key in IGNORED_SUBTREES:
            rows.append(KeyRow(key, "{...}", True, Outcome("ignored", {}, IGNORED_SUBTREES[key])))
            continue
        try:
            outcome = RULES[key](eff.get(key), eff)
        except _NoCounterpart as exc:
            raise ReidpipeError(f"TAO spec {spec}: {key} = {_show(eff.get(key))}: {exc}") from None
        rows.append(KeyRow(key, eff.get(key), key in given, outcome))
    overrides: dict[str, Any] = {"pipeline": {"archs": [name]}}
    recipe: dict[str, Any] = {}
    for row in rows:
        for target, value in row.outcome.targets.items():
            if target.split(".")[0] in ARCH_SECTIONS:
                _set(recipe, target, value)
            else:
                _set(overrides, target, value)
    overrides["archs"] = {name: recipe}
    return Conversion(arch=name, overrides=overrides, rows=rows)


def validate_conversion(
    conversion: Conversion, spec: str | Path, base: Mapping[str, Any]
) -> Params:
    """The converted overrides on top of ``base`` (the merged params files), validated."""
    try:
        params = params_from_dict(deep_merge(base, conversion.overrides))
        params.arch(conversion.arch)
    except ReidpipeError as exc:
        raise ReidpipeError(
            f"TAO spec {spec} converts to invalid reidpipe parameters: {exc}"
        ) from None
    return params
