"""``archs``: each architecture's recipe, the published defaults, and the effective sections
of one architecture (the shared ``model``/``dataset``/``train`` merged with its recipe; its
``export`` is merged by ``Params.export_for``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from reidpipe.params.merge import deep_merge
from reidpipe.params.sections.model import ModelParams
from reidpipe.params.sections.setting import setting
from reidpipe.params.sections.train import DatasetParams, TrainParams
from reidpipe.params.validation import build_dataclass


@dataclass
class ArchRecipe:
    """An architecture's own recipe: partial ``model``, ``dataset`` and ``train`` overrides (what
    training reads) and ``export`` overrides (what its export alone reads)."""

    model: dict[str, Any] = setting({})
    dataset: dict[str, Any] = setting({})
    train: dict[str, Any] = setting({})
    export: dict[str, Any] = setting({}, doc="overrides of export keys for this architecture")


# The recipes `pipeline.archs` names by default (params.yaml states the same; a test keeps them
# equal). resnet50: Bag of Tricks (Luo et al. 2019); swin_tiny: TAO ReIdentificationNet's
# transformer spec (SOLIDER's recipe). INT8 calibration suits a network family: on the demo models
# percentile clipping is what lets the ResNet pass, while the Swin keeps more of its worst-case
# cosine with MinMax (its outlier activations matter).
PUBLISHED_RECIPES = {
    "resnet50": ArchRecipe(model={"backbone": "resnet50.tv_in1k", "last_stride": 1}),
    "swin_tiny": ArchRecipe(
        model={
            "backbone": "swin_tiny_patch4_window7_224",
            "no_margin": True,
            "label_smooth": False,
        },
        dataset={
            "pixel_mean": [0.5, 0.5, 0.5],
            "pixel_std": [0.5, 0.5, 0.5],
            "re_mode": "pixel",
            "train_interpolation": "bicubic",
        },
        train={
            "optim": {
                "name": "SGD",
                "base_lr": 0.0008,
                "momentum": 0.9,
                "warmup_method": "cosine",
                "warmup_epochs": 20,
                "lr_steps": [],
                "bias_lr_factor": 2.0,
                "weight_decay": 0.0001,
                "weight_decay_bias": 0.0001,
            }
        },
        export={"int8_calibration_method": "minmax"},
    ),
}


@dataclass
class ArchConfig:
    """One architecture's effective sections: the shared ones with its recipe merged in."""

    name: str
    model: ModelParams
    dataset: DatasetParams
    train: TrainParams


def arch_config(
    name: str, recipe: ArchRecipe, model: ModelParams, dataset: DatasetParams, train: TrainParams
) -> ArchConfig:
    """Deep-merge ``recipe`` into the shared sections and validate each result."""
    sections = {}
    for section, shared in (("model", model), ("dataset", dataset), ("train", train)):
        merged = deep_merge(dataclasses.asdict(shared), getattr(recipe, section))
        sections[section] = build_dataclass(type(shared), merged, f"archs.{name}.{section}")
    return ArchConfig(name=name, **sections)
