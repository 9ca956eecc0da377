"""What training reads besides the model: ``dataset`` (batches, augmentation) and ``train``
(the run and its ``optim``izer), TAO's keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from reidpipe.params.sections.setting import setting


@dataclass
class DatasetParams:
    num_classes: int = setting(0, ge=0, doc="0: number of train identities from the manifest")
    batch_size: int = setting(
        64, ge=2, doc="global batch (BoT's IMS_PER_BATCH): each of N processes takes batch_size / N"
    )
    val_batch_size: int = setting(128, ge=1)
    num_workers: int = setting(8, ge=0)
    pixel_mean: list[float] = setting([0.485, 0.456, 0.406])
    pixel_std: list[float] = setting([0.229, 0.224, 0.225])
    padding: int = setting(10, ge=0)
    prob: float = setting(0.5, ge=0, le=1, doc="horizontal flip probability")
    re_prob: float = setting(0.5, ge=0, le=1, doc="random erasing probability")
    re_mode: Literal["mean", "pixel"] = setting(
        "mean",
        doc="random erasing fill: mean = BoT's (box of 2-40 %, the pixel_mean values); "
        "pixel = SOLIDER's and TAO's Swin transforms (timm RandomErasing mode 'pixel': box of "
        "2-33 %, per-pixel N(0, 1) values)",
    )
    train_interpolation: Literal["bilinear", "bicubic"] = setting(
        "bilinear",
        doc="resize of training images (SOLIDER, TAO Swin: bicubic); test images are "
        "resized bilinearly, as in both",
    )
    sampler: Literal["softmax", "triplet", "softmax_triplet"] = setting(
        "softmax_triplet",
        doc="softmax: random batches, ID loss only (metric losses off); "
        "triplet: P x K batches, metric losses only; softmax_triplet: P x K, both",
    )
    num_instances: int = setting(4, ge=1, doc="K images per identity in a P x K batch")


@dataclass
class OptimParams:
    name: Literal["SGD", "Adam", "AdamW"] = setting("Adam")
    lr_steps: list[int] = setting([40, 70])
    gamma: float = setting(0.1, gt=0, le=1)
    base_lr: float = setting(3.5e-4, gt=0)
    min_lr_factor: float = setting(
        0.002,
        ge=0,
        le=1,
        doc="floor of the cosine schedule as a fraction of base_lr (TAO, SOLIDER: 0.002)",
    )
    momentum: float = setting(0.9, ge=0, le=1)
    bias_lr_factor: float = setting(1.0, gt=0)
    weight_decay: float = setting(5e-4, ge=0)
    weight_decay_bias: float = setting(5e-4, ge=0)
    warmup_factor: float = setting(0.01, gt=0, le=1)
    warmup_epochs: int = setting(10, ge=0)
    warmup_iters: int = setting(
        0,
        ge=0,
        doc="TAO/BoT's name for the warmup length: counts epochs "
        "(their schedulers step once an epoch); if > 0 it replaces "
        "warmup_epochs",
    )
    warmup_method: Literal["linear", "cosine"] = setting(
        "linear",
        doc="linear: BoT's warmup + multistep decay at lr_steps; cosine: TAO's/SOLIDER's "
        "linear warmup + cosine decay (lr_steps unused)",
    )
    center_loss_weight: float = setting(5e-4, ge=0)
    center_lr: float = setting(0.5, gt=0)
    triplet_loss_margin: float = setting(0.3, ge=0)
    large_fc_lr: bool = setting(False, doc="classifier at 2x the base lr")


@dataclass
class TrainParams:
    num_epochs: int = setting(120, ge=1)
    checkpoint_interval: int = setting(10, ge=1)
    validation_interval: int = setting(10, ge=1)
    seed: int = setting(1234, ge=0)
    num_gpus: int = setting(1, ge=0)
    gpu_ids: list[int] = setting([])
    num_nodes: int = setting(1, ge=1, doc="nodes for multi-node DDP")
    precision: Literal["auto", "32", "16-mixed", "bf16-mixed"] = setting(
        "auto",
        doc="auto: bf16-mixed on GPUs with native bf16 (compute capability >= 8.0), "
        "16-mixed on older ones, 32 on CPU",
    )
    resume_training_checkpoint_path: str = setting("", doc="resume from this checkpoint")
    clip_grad_norm: float = setting(0.0, ge=0, doc="0 disables clipping")
    max_steps_per_epoch: int = setting(0, ge=0, doc="0: full epochs; >0 caps steps (smoke runs)")
    num_threads: int = setting(
        0,
        ge=0,
        doc="CPU intra-op threads (0: as the process was given, e.g. OMP_NUM_THREADS); "
        "the count changes reduction order, so a fixed count is needed for bit-identical reruns",
    )
    deterministic: bool = setting(
        True,
        doc="deterministic algorithms (torch); on a GPU, ops without a deterministic "
        "kernel warn instead of failing",
    )
    loggers: list[Literal["tensorboard"]] = setting(
        [],
        doc="Lightning loggers besides DVCLive, which always writes each epoch's losses, lr, "
        "images/s and val mAP/R1 to <model folder>/dvclive/ (the stage's DVC metrics and plots); "
        "tensorboard: the same as event files in <model folder>/tensorboard/",
    )
    optim: OptimParams = field(default_factory=OptimParams)
