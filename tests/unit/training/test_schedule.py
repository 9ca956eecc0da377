"""The per-epoch learning rate against the sources' definitions (formulas written out here)."""

import math

import pytest
import torch
from torch import nn

from reidpipe.params import OptimParams
from reidpipe.training.schedule import (
    epoch_lr,
    make_optimizer,
    param_groups,
    set_epoch_lr,
    unused_settings_note,
)

BOT = OptimParams(
    base_lr=3.5e-4,
    warmup_factor=0.01,
    warmup_epochs=10,
    lr_steps=[40, 70],
    gamma=0.1,
    warmup_method="linear",
)
TAO = OptimParams(
    name="SGD",
    base_lr=8e-4,
    warmup_factor=0.01,
    warmup_epochs=20,
    warmup_method="cosine",
    min_lr_factor=0.002,
    lr_steps=[],
    bias_lr_factor=2.0,
)


@pytest.mark.parametrize(
    "epoch, factor",
    [
        (1, 0.109),
        (5, 0.505),
        (9, 0.901),
        (10, 1.0),
        (39, 1.0),
        (40, 0.1),
        (69, 0.1),
        (70, 0.01),
        (120, 0.01),
    ],
)
def test_bot_epoch_e_runs_at_last_epoch_e(epoch, factor):
    assert epoch_lr(epoch, 3.5e-4, BOT, 120) == pytest.approx(3.5e-4 * factor, rel=1e-12)


def test_warmup_iters_counts_epochs():
    by_iters = OptimParams(warmup_iters=10, warmup_epochs=0, warmup_factor=0.01)
    by_epochs = OptimParams(warmup_iters=0, warmup_epochs=10, warmup_factor=0.01)
    for e in range(1, 20):
        assert epoch_lr(e, 1.0, by_iters, 120) == epoch_lr(e, 1.0, by_epochs, 120)
    assert epoch_lr(1, 1.0, by_iters, 120) == pytest.approx(0.109)


def test_no_warmup_and_no_steps_is_constant():
    flat = OptimParams(warmup_epochs=0, lr_steps=[])
    assert {epoch_lr(e, 0.1, flat, 30) for e in range(1, 31)} == {0.1}


def solider_cosine(t: int, group_lr: float, base: float, warmup: int, epochs: int) -> float:
    """SOLIDER's CosineLRScheduler._get_lr(t): warmup_lr_init = 0.01 base and lr_min = 0.002 base
    are scalars shared by all groups; warmup step per group (v - warmup_lr_init) / warmup_t."""
    lr_init, lr_min = 0.01 * base, 0.002 * base
    if t < warmup:
        return lr_init + t * (group_lr - lr_init) / warmup
    return lr_min + 0.5 * (group_lr - lr_min) * (1 + math.cos(math.pi * t / epochs))


@pytest.mark.parametrize("group_lr", [8e-4, 1.6e-3])  # weights, and biases at bias_lr_factor 2
def test_cosine_is_solider_per_group_with_epoch_e_at_t_e_minus_1(group_lr):
    for epoch in range(1, 121):
        assert epoch_lr(epoch, group_lr, TAO, 120) == pytest.approx(
            solider_cosine(epoch - 1, group_lr, 8e-4, 20, 120), rel=1e-12
        )
    assert epoch_lr(1, 8e-4, TAO, 120) == pytest.approx(8e-6)
    assert epoch_lr(1, 1.6e-3, TAO, 120) == pytest.approx(8e-6)  # one start for all groups


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(3, 4)
        self.classifier = nn.Linear(4, 2)


def test_param_groups_bias_and_classifier_lr():
    optim = OptimParams(
        base_lr=0.1, bias_lr_factor=2.0, weight_decay=5e-4, weight_decay_bias=0.0, large_fc_lr=True
    )
    groups = param_groups(Tiny(), optim)
    by_setting = sorted((g["lr"], g["weight_decay"], len(g["params"])) for g in groups)
    assert by_setting == [(0.1, 5e-4, 1), (0.2, 0.0, 1), (0.2, 5e-4, 1), (0.4, 0.0, 1)]


def test_set_epoch_lr_sets_every_group_from_its_own_base_and_survives_a_reload():
    opt = make_optimizer(Tiny(), TAO)
    assert isinstance(opt, torch.optim.SGD)
    set_epoch_lr(opt, 50, TAO, 120)
    restored = make_optimizer(Tiny(), TAO)
    restored.load_state_dict(opt.state_dict())  # a checkpoint holds epoch 50's lr
    set_epoch_lr(restored, 51, TAO, 120)
    lrs = sorted(g["lr"] for g in restored.param_groups)
    assert lrs == pytest.approx(
        [solider_cosine(50, 8e-4, 8e-4, 20, 120), solider_cosine(50, 1.6e-3, 8e-4, 20, 120)],
        rel=1e-12,
    )


def test_note_when_a_cosine_spec_also_sets_lr_steps():
    note = unused_settings_note(OptimParams(warmup_method="cosine", lr_steps=[40, 70]))
    assert note is not None and "lr_steps [40, 70]" in note and "unused" in note
    assert unused_settings_note(OptimParams(warmup_method="cosine", lr_steps=[])) is None
    assert unused_settings_note(OptimParams(warmup_method="linear", lr_steps=[40, 70])) is None
