"""The tests' tiny training runs: one base (an arch named ``tiny``, a small ResNet on 16x32
images, batches of 2 identities x 2 images, CPU) that each test adjusts with ``tiny_params``."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from reidpipe.params import ArchConfig, load_params
from support import ROOT, deep_merge
from support.references import BOT_LR_OPTIM

BASE: dict[str, Any] = {
    "pipeline": {"archs": ["tiny"]},
    "model": {
        "backbone": "test_resnet",
        "pretrain_choice": "",
        "input_width": 16,
        "input_height": 32,
        "feat_dim": 32,
    },
    "dataset": {
        "batch_size": 4,
        "val_batch_size": 16,
        "num_workers": 0,
        "padding": 2,
        "num_instances": 2,
    },
    "train": {"num_gpus": 0},
    "archs": {"tiny": {}},
}


def tiny_params(**sections: Mapping[str, Any]) -> dict[str, Any]:
    """The base with each given section's keys merged in (nested keys merged key by key)."""
    return deep_merge(BASE, sections)


# A checkpoint and a validation after every epoch
EVERY_EPOCH = {"checkpoint_interval": 1, "validation_interval": 1}

# The recovery tests' run (and the output-unit tests'): 3 epochs of 2 steps, center loss too
EPOCHS = 3
TINY = tiny_params(
    model={"metric_loss_type": "triplet_center"},
    train={
        "num_epochs": EPOCHS,
        **EVERY_EPOCH,
        "max_steps_per_epoch": 2,
        "optim": {"lr_steps": [2], "warmup_epochs": 1},
    },
)

# The multi-process runs': a narrow resnet18, a global batch of 4 identities x 2 images and
# the LR schedule of references.bot_lr, for 2 epochs
DDP_RUN = tiny_params(
    model={
        "backbone": "resnet18",
        "feat_dim": 16,
        "backbone_kwargs": {"channels": [8, 16, 32, 64], "layers": [1, 1, 1, 1]},
    },
    dataset={"batch_size": 8, "val_batch_size": 32},
    train={"num_epochs": 2, **EVERY_EPOCH, "optim": BOT_LR_OPTIM},
)


def tiny_arch(folder: Path, spec: Mapping[str, Any], **train: Any) -> ArchConfig:
    """The ``tiny`` arch of params.yaml under ``spec`` with ``train`` keys set, through a
    ``tiny.yaml`` written in ``folder`` (as the CLI reads it)."""
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(deep_merge(spec, {"train": train})))
    return load_params([ROOT / "params.yaml", path]).arch("tiny")
