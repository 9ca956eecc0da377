"""Typed parameters: one schema for ``params.yaml``, Snakemake's config and DVC.

Keys follow TAO's ReIdentificationNet spec where it has one (``model``, ``dataset``, ``train``,
``train.optim``, ``re_ranking``). ``model``/``dataset``/``train`` hold the values shared by every
architecture; ``archs.<name>`` holds each architecture's own recipe as a partial override of those
three sections, and ``pipeline.archs`` lists the architectures the pipeline trains. So
``model.feat_dim`` applies to every arch unless a recipe sets it.

Validation is generic over the dataclasses below: types come from the annotations, allowed values
and ranges from each field's metadata. The JSON schema in ``workflow/schemas/`` is generated from
the same classes (``reidpipe params --schema``), so the two cannot drift.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from reidpipe.data.sources import DatasetSource, dataset_source, source_spec
from reidpipe.errors import ReidpipeError
from reidpipe.filenames import DATA_DIR
from reidpipe.params.merge import deep_merge
from reidpipe.params.validation import build_dataclass


def _f(default: Any, *, ge: float | None = None, le: float | None = None, gt: float | None = None,
       doc: str = "") -> Any:
    """A dataclass field with a range and a description (the description goes into the schema)."""
    meta = {"ge": ge, "le": le, "gt": gt, "doc": doc}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------------------- sections


SourceName = Literal["market1501", "dukemtmc", "msmt17", "cuhk03", "custom", "synthetic"]
LayoutName = Literal["market1501", "dukemtmc", "msmt17", "cuhk03", "custom"]


@dataclass
class SourceParams:
    """One dataset source (reidpipe/data/sources.py knows each one's layout and statistics)."""

    source: Literal["", "market1501", "dukemtmc", "msmt17", "cuhk03", "custom", "synthetic"] = _f(
        "", doc="which dataset; '' (under data.sources): the entry's name")
    dataset_dir: str = _f("", doc="under data.sources: '' (the pipeline keeps further sources "
                                  "in data/<entry name>)")
    urls: list[str] = _f([], doc="mirrors tried in order; []: the source's known ones (only "
                                 "Market-1501 has public mirrors)")
    archive_path: str = _f("", doc="a local zip or dataset folder to use instead of downloading")
    md5: str = _f("", doc="expected archive MD5; '': the published one (Market-1501's); a source "
                          "without one accepts any archive and records its MD5")
    allow_unknown_checksum: bool = _f(
        False, doc="accept an archive whose MD5 differs (custom URL with another archive)")
    max_extract_bytes: int = _f(20_000_000_000, gt=0, doc="refuse archives that unpack larger")
    strict: bool = _f(False, doc="validate also checks the dataset's official statistics")
    cuhk03_variant: Literal["labeled", "detected"] = _f(
        "labeled", doc="CUHK03-NP: the hand-drawn (labeled) or the detector's (detected) boxes")
    split_dirs: dict[str, str] = _f(
        {}, doc="custom only: folders of train, query and gallery (TAO's train, query and test "
                "dirs), relative to dataset_dir or absolute; missing: Market-1501's names")
    synthetic_ids: int = _f(60, ge=4, le=9999,
                            doc="identities of the synthetic dataset (train + test)")
    synthetic_seed: int = _f(0, ge=0, doc="seed of the synthetic dataset")
    synthetic_layout: LayoutName = _f("market1501",
                                      doc="layout the synthetic dataset is written in")

    def dataset_source(self) -> DatasetSource:
        """The registry's source with this block's choices (layout, variant, folders)."""
        return dataset_source(self.source or "market1501", cuhk03_variant=self.cuhk03_variant,
                              split_dirs=self.split_dirs, synthetic_layout=self.synthetic_layout)


@dataclass
class DataParams(SourceParams):
    """The main source (``data.source``), further named sources and the training sources.

    The main source is always trained on and evaluated; further sources (``data.sources``) live
    in ``data/<name>`` and join through ``data.train_sources`` and ``pipeline.eval_sources``."""

    source: SourceName = _f(
        "market1501", doc="market1501, dukemtmc, msmt17, cuhk03 (archives); custom (a folder); "
                          "synthetic (generated)")
    dataset_dir: str = _f("data/Market-1501-v15.09.15",
                          doc="where the main dataset folder lives")
    strict: bool = _f(True, doc="validate also checks the dataset's official statistics (false "
                                "for a source without them: custom, synthetic)")
    train_sources: list[str] = _f(
        [], doc="sources whose train splits are merged for training (data.source or keys of "
                "data.sources); []: [data.source]")
    sources: dict[str, SourceParams] = _f(
        {}, doc="further sources by name, each a source block, for data.train_sources and "
                "pipeline.eval_sources")


@dataclass
class SplitParams:
    val_ids: int = _f(100, ge=0, doc="train identities held out for in-training validation")
    seed: int = _f(0, ge=0, doc="seed choosing the held-out identities")


@dataclass
class ModelParams:
    backbone: str = _f("resnet50", doc="timm model name (resnet*, swin_*)")
    backbone_kwargs: dict[str, Any] = _f({}, doc="extra timm.create_model arguments")
    last_stride: int = _f(1, ge=1, le=2, doc="stride of ResNet's last stage")
    pretrain_choice: Literal["imagenet", "self", ""] = _f(
        "imagenet", doc="imagenet: timm weights; self: pretrained_model_path; '': random init")
    pretrained_model_path: str = _f("", doc="local weights (.pth/.safetensors/.ckpt)")
    input_channels: int = _f(3, ge=1, le=3)
    input_width: int = _f(128, ge=16)
    input_height: int = _f(256, ge=16)
    neck: Literal["bnneck", ""] = _f("bnneck", doc="BNNeck between feature and classifier")
    feat_dim: int = _f(0, ge=0, doc="embedding dimension; 0: the backbone's own (2048 for "
                                    "ResNet-50, 768 for Swin-T)")
    reduce_feat_dim: bool = _f(True, doc="add a linear reduction when feat_dim != backbone dim")
    neck_feat: Literal["before", "after"] = _f("after", doc="test feature before/after BNNeck")
    metric_loss_type: Literal["triplet", "center", "triplet_center"] = _f("triplet")
    no_margin: bool = _f(False, doc="soft-margin triplet loss instead of the margin")
    with_center_loss: bool = _f(False)
    with_flip_feature: bool = _f(False, doc="average the features of the image and its mirror")
    label_smooth: bool = _f(True, doc="label smoothing 0.1 in the ID loss")
    semantic_weight: float = _f(
        0.2, ge=0, le=1, doc="Swin: SOLIDER's semantic weight lambda; each stage output feeding the "
        "next becomes x*softplus(Lw([lambda, 1-lambda])) + Lb(...), with SOLIDER's semantic_embed "
        "layers from the pretrained file (identity without them)")


@dataclass
class DatasetParams:
    num_classes: int = _f(0, ge=0, doc="0: number of train identities from the manifest")
    batch_size: int = _f(64, ge=2, doc="global batch (BoT's IMS_PER_BATCH): each of N processes "
                                       "takes batch_size / N")
    val_batch_size: int = _f(128, ge=1)
    num_workers: int = _f(8, ge=0)
    pixel_mean: list[float] = _f([0.485, 0.456, 0.406])
    pixel_std: list[float] = _f([0.229, 0.224, 0.225])
    padding: int = _f(10, ge=0)
    prob: float = _f(0.5, ge=0, le=1, doc="horizontal flip probability")
    re_prob: float = _f(0.5, ge=0, le=1, doc="random erasing probability")
    re_mode: Literal["mean", "pixel"] = _f(
        "mean", doc="random erasing fill: mean = BoT's (box of 2-40 %, the pixel_mean values); "
        "pixel = SOLIDER's and TAO's Swin transforms (timm RandomErasing mode 'pixel': box of "
        "2-33 %, per-pixel N(0, 1) values)")
    train_interpolation: Literal["bilinear", "bicubic"] = _f(
        "bilinear", doc="resize of training images (SOLIDER, TAO Swin: bicubic); test images are "
        "resized bilinearly, as in both")
    sampler: Literal["softmax", "triplet", "softmax_triplet"] = _f(
        "softmax_triplet", doc="softmax: random batches, ID loss only (metric losses off); "
        "triplet: P x K batches, metric losses only; softmax_triplet: P x K, both")
    num_instances: int = _f(4, ge=1, doc="K images per identity in a P x K batch")


@dataclass
class OptimParams:
    name: Literal["SGD", "Adam", "AdamW"] = _f("Adam")
    lr_steps: list[int] = _f([40, 70])
    gamma: float = _f(0.1, gt=0, le=1)
    base_lr: float = _f(3.5e-4, gt=0)
    min_lr_factor: float = _f(0.002, ge=0, le=1, doc="floor of the cosine schedule as a "
                              "fraction of base_lr (TAO, SOLIDER: 0.002)")
    momentum: float = _f(0.9, ge=0, le=1)
    bias_lr_factor: float = _f(1.0, gt=0)
    weight_decay: float = _f(5e-4, ge=0)
    weight_decay_bias: float = _f(5e-4, ge=0)
    warmup_factor: float = _f(0.01, gt=0, le=1)
    warmup_epochs: int = _f(10, ge=0)
    warmup_iters: int = _f(0, ge=0, doc="TAO/BoT's name for the warmup length: counts epochs "
                           "(their schedulers step once an epoch); if > 0 it replaces "
                           "warmup_epochs")
    warmup_method: Literal["linear", "cosine"] = _f(
        "linear", doc="linear: BoT's warmup + multistep decay at lr_steps; cosine: TAO's/SOLIDER's "
        "linear warmup + cosine decay (lr_steps unused)")
    center_loss_weight: float = _f(5e-4, ge=0)
    center_lr: float = _f(0.5, gt=0)
    triplet_loss_margin: float = _f(0.3, ge=0)
    large_fc_lr: bool = _f(False, doc="classifier at 2x the base lr")


@dataclass
class TrainParams:
    num_epochs: int = _f(120, ge=1)
    checkpoint_interval: int = _f(10, ge=1)
    validation_interval: int = _f(10, ge=1)
    seed: int = _f(1234, ge=0)
    num_gpus: int = _f(1, ge=0)
    gpu_ids: list[int] = _f([])
    num_nodes: int = _f(1, ge=1, doc="nodes for multi-node DDP")
    precision: Literal["auto", "32", "16-mixed", "bf16-mixed"] = _f(
        "auto", doc="auto: bf16-mixed on GPUs with native bf16 (compute capability >= 8.0), "
        "16-mixed on older ones, 32 on CPU")
    resume_training_checkpoint_path: str = _f("", doc="resume from this checkpoint")
    clip_grad_norm: float = _f(0.0, ge=0, doc="0 disables clipping")
    max_steps_per_epoch: int = _f(0, ge=0, doc="0: full epochs; >0 caps steps (smoke runs)")
    num_threads: int = _f(0, ge=0, doc="CPU intra-op threads (0: as the process was given, e.g. "
                                       "OMP_NUM_THREADS); the count changes reduction order, so "
                                       "a fixed count is needed for bit-identical reruns")
    deterministic: bool = _f(True, doc="deterministic algorithms (torch); on a GPU, ops without "
                                       "a deterministic kernel warn instead of failing")
    optim: OptimParams = field(default_factory=OptimParams)


@dataclass
class ArchRecipe:
    """An architecture's own recipe: partial ``model``, ``dataset`` and ``train`` overrides."""

    model: dict[str, Any] = _f({})
    dataset: dict[str, Any] = _f({})
    train: dict[str, Any] = _f({})


@dataclass
class ReRankingParams:
    re_ranking: bool = _f(True)
    k1: int = _f(20, ge=1)
    k2: int = _f(6, ge=1)
    lambda_value: float = _f(0.3, ge=0, le=1)


@dataclass
class ExtractParams:
    batch_size: int = _f(128, ge=1)
    channel_order: Literal["RGB", "BGR"] = _f("RGB", doc="channel order an ONNX model expects")
    input_scale: Literal[1, 255] = _f(1, doc="1: pixels in 0-1 before mean/std; 255: 0-255")
    tao_json: bool = _f(False, doc="also write TAO-format embedding JSON")


@dataclass
class EvaluateParams:
    distance: Literal["cosine", "euclidean"] = _f("cosine")
    ap_method: Literal["non_interpolated", "trapezoidal"] = _f(
        "non_interpolated", doc="trapezoidal = original Market-1501 MATLAB code")
    max_rank: int = _f(50, ge=1)


@dataclass
class ExportParams:
    opset: int = _f(18, ge=13)
    parity_batch_sizes: list[int] = _f([1, 7, 32])
    max_abs_diff: float = _f(1e-3, gt=0)
    min_cosine: float = _f(0.9999, gt=0, le=1)
    max_metric_delta: float = _f(0.1, ge=0, doc="mAP/R1 gate in points")
    fp16: bool = _f(True, doc="also write an FP16 ONNX for TensorRT")
    fp16_min_cosine: float = _f(0.999, gt=0, le=1, doc="gate of the FP16 ONNX against FP32")
    int8: bool = _f(True, doc="also write an INT8 (QDQ) ONNX, kept only when its gate passes")
    int8_calibration_images: int = _f(256, ge=1, doc="train images sampled for INT8 calibration")
    int8_seed: int = _f(0, ge=0, doc="seed of the calibration sample")
    int8_activations: Literal["int8", "uint8"] = _f(
        "int8", doc="int8: symmetric, for TensorRT; uint8: ONNX Runtime's fast x86 CPU path, "
        "which TensorRT cannot build")
    # Activation ranges: MinMax lets one outlier pixel of the calibration sample set a tensor's
    # whole 8-bit scale; clipping at a percentile of |x| keeps resolution for the bulk. Measured
    # on the demo models (README, Deploy): percentile 99.99 passes the gate on the ResNet where
    # MinMax loses 1.5 mAP points; ORT's entropy calibration is not offered (quantize_static fixes
    # its histogram at 128 bins = 128 quantized bins, so it returns MinMax's ranges).
    int8_calibration_method: Literal["minmax", "percentile"] = _f(
        "percentile", doc="activation ranges: minmax (calibration min/max) or percentile "
        "(clip |x| at int8_calibration_percentile)")
    int8_calibration_percentile: float = _f(
        99.99, gt=50, le=100, doc="percentile of |activation| kept by percentile calibration")
    # Where Q/DQ go. TensorRT's explicit-quantization placement (NVIDIA's QAT toolkit) quantizes
    # only the inputs of the compute-heavy ops; quantizing every op's output as well (ONNX
    # Runtime's default) rounds pre-ReLU tensors, residual sums, LayerNorm and Softmax to one
    # symmetric per-tensor scale each, which cost the demo models 2-3 mAP points.
    int8_op_types: list[str] = _f(
        ["Conv", "Gemm", "MatMul"], doc="ONNX op types quantized (weights per channel, input "
        "activations per tensor); [] = every op ONNX Runtime can quantize")
    int8_quantize_outputs: bool = _f(
        False, doc="also quantize the outputs of int8_op_types (ONNX Runtime's default "
        "placement, which its CPU kernels need to fuse QLinearConv/QLinearMatMul)")
    int8_min_cosine: float = _f(0.98, gt=0, le=1, doc="gate of the INT8 ONNX against FP32")
    int8_max_metric_delta: float = _f(1.0, ge=0, doc="INT8 mAP/R1 gate in points vs FP32")
    # Calibration suits a network family, not a whole pipeline: on the demo models percentile
    # clipping is what lets the ResNet pass, while the Swin keeps more of its worst-case cosine
    # with MinMax (its outlier activations matter). Kept under export, not archs.<name>, so
    # that changing it reruns the export stage only, not training.
    archs: dict[str, dict[str, Any]] = _f(
        {"swin_tiny": {"int8_calibration_method": "minmax"}},
        doc="per-architecture overrides of the keys above (keys of archs)")


@dataclass
class DeployParams:
    tensorrt: Literal["auto", "required", "off"] = _f("auto")
    min_batch: int = _f(1, ge=1)
    opt_batch: int = _f(16, ge=1)
    max_batch: int = _f(64, ge=1)
    precision: Literal["fp16", "fp32", "int8"] = _f(
        "fp16", doc="int8 builds from export's INT8 ONNX (explicit quantization)")
    workspace_mib: int = _f(4096, ge=64)
    max_metric_delta: float = _f(0.3, ge=0, doc="mAP/R1 gate in points vs ONNX Runtime")
    deepstream_reid_type: int = _f(2, ge=0, le=3, doc="NvDCF reidType: 0 none, 1 DeepSORT, "
                                   "2 re-association, 3 both")
    deepstream_history_size: int = _f(100, ge=1, doc="NvDCF reidHistorySize")
    deepstream_fold_normalisation: bool = _f(
        True, doc="fold a per-channel std into the DeepStream ONNX (DeepStream has one scale)")


@dataclass
class ReportParams:
    sampled_queries: int = _f(8, ge=1)
    top_k: int = _f(10, ge=1)
    hardest_queries: int = _f(10, ge=1)


# The recipes `pipeline.archs` names by default (params.yaml states the same; a test keeps them
# equal). resnet50: Bag of Tricks (Luo et al. 2019); swin_tiny: TAO ReIdentificationNet's
# transformer spec (SOLIDER's recipe).
PUBLISHED_RECIPES = {
    "resnet50": ArchRecipe(model={"backbone": "resnet50.tv_in1k", "last_stride": 1}),
    "swin_tiny": ArchRecipe(
        model={"backbone": "swin_tiny_patch4_window7_224", "no_margin": True,
               "label_smooth": False},
        dataset={"pixel_mean": [0.5, 0.5, 0.5], "pixel_std": [0.5, 0.5, 0.5],
                 "re_mode": "pixel", "train_interpolation": "bicubic"},
        train={"optim": {"name": "SGD", "base_lr": 0.0008, "momentum": 0.9,
                         "warmup_method": "cosine", "warmup_epochs": 20, "lr_steps": [],
                         "bias_lr_factor": 2.0, "weight_decay": 0.0001,
                         "weight_decay_bias": 0.0001}}),
}


@dataclass
class PipelineParams:
    archs: list[str] = _f(["resnet50", "swin_tiny"], doc="architectures to train (keys of archs)")
    eval_sources: list[str] = _f(
        [], doc="test sets every arch is evaluated on (data.source or keys of data.sources); "
                "[]: the training sources")
    cpu_isa: Literal["native", "avx2"] = _f(
        "native", doc="CPU kernels of train, extract and export: native (the fastest this CPU "
                      "has) or avx2 (x86-64 CPUs compute as an AVX2 one does, so AVX2 and AVX-512 "
                      "machines give the same bits)")
    seeds: list[int] = _f([], doc="seed spread: each arch is also trained, extracted and "
                                        "evaluated once per train.seed listed here ([]: not)")


@dataclass
class Params:
    pipeline: PipelineParams = field(default_factory=PipelineParams)
    data: DataParams = field(default_factory=DataParams)
    split: SplitParams = field(default_factory=SplitParams)
    model: ModelParams = field(default_factory=ModelParams)
    dataset: DatasetParams = field(default_factory=DatasetParams)
    train: TrainParams = field(default_factory=TrainParams)
    archs: dict[str, ArchRecipe] = field(default_factory=lambda: copy.deepcopy(PUBLISHED_RECIPES))
    re_ranking: ReRankingParams = field(default_factory=ReRankingParams)
    extract: ExtractParams = field(default_factory=ExtractParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    export: ExportParams = field(default_factory=ExportParams)
    deploy: DeployParams = field(default_factory=DeployParams)
    report: ReportParams = field(default_factory=ReportParams)

    def arch(self, name: str) -> "ArchConfig":
        """The effective model/dataset/train of one architecture: shared values + its recipe."""
        if name not in self.archs:
            raise ReidpipeError(
                f"params: unknown architecture {name!r}; defined under 'archs': {sorted(self.archs)}")
        return _arch_config(self, name)

    def export_for(self, name: str) -> ExportParams:
        """The export settings of one architecture: ``export`` + ``export.archs.<name>``."""
        shared = {k: v for k, v in dataclasses.asdict(self.export).items() if k != "archs"}
        overrides = self.export.archs.get(name, {})
        if "archs" in overrides:
            raise ReidpipeError(f"params: export.archs.{name}.archs: overrides do not nest")
        return build_dataclass(ExportParams, {**shared, **overrides, "archs": {}},
                               f"export.archs.{name}")

    def source_names(self) -> list[str]:
        return [self.data.source, *self.data.sources]

    def source(self, name: str) -> SourceParams:
        """One source's block, with its kind and dataset folder filled in."""
        if name == self.data.source:
            block = SourceParams(**{f.name: getattr(self.data, f.name)
                                    for f in dataclasses.fields(SourceParams)})
        elif name in self.data.sources:
            block = dataclasses.replace(self.data.sources[name])
            block.source = block.source or name  # type: ignore[assignment]
        else:
            raise ReidpipeError(f"params: unknown source {name!r}; sources are data.source "
                                f"({self.data.source!r}) and the keys of data.sources "
                                f"({sorted(self.data.sources)})")
        if name != self.data.source:
            block.dataset_dir = f"{DATA_DIR}/{name}"
        return block

    def train_sources(self) -> list[str]:
        return list(self.data.train_sources) or [self.data.source]

    def eval_sources(self) -> list[str]:
        return list(self.pipeline.eval_sources) or self.train_sources()

    def extra_sources(self) -> list[str]:
        """The sources besides data.source that the pipeline trains or evaluates on."""
        both = dict.fromkeys(self.train_sources() + self.eval_sources())
        return [name for name in both if name != self.data.source]

    def extra_train_sources(self) -> list[str]:
        return [name for name in self.train_sources() if name != self.data.source]

    def spread_seeds(self) -> list[str]:
        """The seeds of the seed-spread runs (pipeline.seeds), each once."""
        return [str(seed) for seed in dict.fromkeys(self.pipeline.seeds)]

    def cross_sources(self) -> list[str]:
        """The test sets besides data.source's (cross-domain evaluation)."""
        return [name for name in self.eval_sources() if name != self.data.source]


@dataclass
class ArchConfig:
    name: str
    model: ModelParams
    dataset: DatasetParams
    train: TrainParams

def _arch_config(params: Params, name: str) -> ArchConfig:
    recipe = params.archs[name]
    sections = {}
    for section, cls in (("model", ModelParams), ("dataset", DatasetParams), ("train", TrainParams)):
        shared = dataclasses.asdict(getattr(params, section))
        merged = deep_merge(shared, getattr(recipe, section))
        sections[section] = build_dataclass(cls, merged, f"archs.{name}.{section}")
    return ArchConfig(name=name, **sections)


def _check_consistency(params: Params) -> None:
    archs = params.pipeline.archs
    if not archs or len(set(archs)) != len(archs):
        raise ReidpipeError(f"params: pipeline.archs = {archs} must name at least one "
                            "architecture, each once")
    for name in archs:
        if name not in params.archs:
            raise ReidpipeError(
                f"params: pipeline.archs names {name!r}, which has no recipe under 'archs' "
                f"(defined: {sorted(params.archs)})")
    for name in params.archs:
        cfg = params.arch(name)
        key = f"archs.{name}"
        if len(cfg.dataset.pixel_mean) != cfg.model.input_channels:
            raise ReidpipeError(f"params: {key}: dataset.pixel_mean needs "
                                f"{cfg.model.input_channels} values, got {cfg.dataset.pixel_mean}")
        if len(cfg.dataset.pixel_std) != cfg.model.input_channels:
            raise ReidpipeError(f"params: {key}: dataset.pixel_std needs "
                                f"{cfg.model.input_channels} values, got {cfg.dataset.pixel_std}")
        if any(s <= 0 for s in cfg.dataset.pixel_std):
            raise ReidpipeError(f"params: {key}: dataset.pixel_std must be > 0, "
                                f"got {cfg.dataset.pixel_std}")
        if cfg.dataset.sampler != "softmax" and cfg.dataset.batch_size % cfg.dataset.num_instances:
            raise ReidpipeError(
                f"params: {key}: dataset.batch_size ({cfg.dataset.batch_size}) must be a multiple "
                f"of dataset.num_instances ({cfg.dataset.num_instances}) for P x K sampling")
        if cfg.model.pretrain_choice == "self" and not cfg.model.pretrained_model_path:
            raise ReidpipeError(f"params: {key}: model.pretrain_choice is 'self' but "
                                "model.pretrained_model_path is empty")
        steps = cfg.train.optim.lr_steps
        if steps != sorted(steps):
            raise ReidpipeError(f"params: {key}: train.optim.lr_steps must increase, got {steps}")
    _check_sources(params)
    d = params.deploy
    if not d.min_batch <= d.opt_batch <= d.max_batch:
        raise ReidpipeError(
            f"params: deploy batch sizes must satisfy min_batch <= opt_batch <= max_batch, got "
            f"{d.min_batch}/{d.opt_batch}/{d.max_batch}")
    # The published recipes' names stay valid when a params file defines its own archs: the
    # default export.archs entry for swin_tiny must not break a file that never mentions it.
    known = set(params.archs) | set(PUBLISHED_RECIPES)
    unknown = [name for name in params.export.archs if name not in known]
    if unknown:
        raise ReidpipeError(f"params: export.archs names {unknown}, which have no recipe under "
                            f"'archs' (defined: {sorted(params.archs)}; published: "
                            f"{sorted(PUBLISHED_RECIPES)})")
    for name in params.archs:
        export = params.export_for(name)
        if d.precision == "int8" and not (export.int8 and export.int8_activations == "int8"):
            raise ReidpipeError(
                "params: deploy.precision int8 builds from export's INT8 ONNX with int8 "
                f"activations; got for {name} export.int8 {export.int8}, "
                f"export.int8_activations {export.int8_activations!r} (TensorRT cannot parse "
                "uint8 Q/DQ)")

def _check_sources(params: Params) -> None:
    for name in params.data.sources:
        if not re.fullmatch(r"[A-Za-z0-9_]+", name) or name == params.data.source:
            raise ReidpipeError(
                f"params: data.sources.{name}: a source name is letters, digits and _ and differs "
                f"from data.source ({params.data.source!r})")
    for name, entry in params.data.sources.items():
        if entry.dataset_dir not in ("", f"{DATA_DIR}/{name}"):
            raise ReidpipeError(
                f"params: data.sources.{name}.dataset_dir = {entry.dataset_dir!r}: the pipeline "
                f"keeps further sources in {DATA_DIR}/{name}; leave it empty and give your copy "
                "with archive_path (a zip or a folder, hard-linked in)")
    if not params.data.dataset_dir:
        raise ReidpipeError("params: data.dataset_dir is empty; expected the main dataset's folder "
                            f"(e.g. {DATA_DIR}/{source_spec(params.data.source).folder})")
    folders: dict[str, str] = {}
    for name in params.source_names():
        key = "data" if name == params.data.source else f"data.sources.{name}"
        block = params.source(name)
        if block.source not in typing.get_args(SourceName):
            raise ReidpipeError(f"params: {key}.source is empty and {name!r} is not a source; "
                                f"set it to one of {', '.join(typing.get_args(SourceName))}")
        try:
            source = block.dataset_source()
        except ReidpipeError as exc:
            raise ReidpipeError(f"params: {key}: {exc}") from None
        if block.strict and source.stats is None:
            raise ReidpipeError(f"params: {key}.strict is true but {source.spec.title} has no "
                                "official statistics to check; set it to false")
        folder = os.path.normpath(block.dataset_dir)
        if folder in folders:
            raise ReidpipeError(f"params: sources {folders[folder]!r} and {name!r} share the "
                                f"dataset folder {block.dataset_dir}; give each its own")
        folders[folder] = name
    for key, names in (("data.train_sources", params.data.train_sources),
                       ("pipeline.eval_sources", params.pipeline.eval_sources)):
        unknown = [n for n in names if n not in params.source_names()]
        if unknown or len(set(names)) != len(names):
            raise ReidpipeError(
                f"params: {key} = {names} must name each source once, from data.source and the "
                f"keys of data.sources ({params.source_names()}); unknown: {unknown}")
        if names and params.data.source not in names:
            raise ReidpipeError(
                f"params: {key} = {names} must include data.source ({params.data.source!r}): "
                "the main source is always trained on and evaluated (the ONNX and TensorRT "
                "gates run on its test set)")


def params_from_dict(data: Mapping[str, Any]) -> Params:
    params = build_dataclass(Params, data, "")
    _check_consistency(params)
    return params

def params_to_dict(params: Params) -> dict[str, Any]:
    return dataclasses.asdict(params)

