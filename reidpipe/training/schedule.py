"""Learning-rate schedule and parameter groups (BoT / TAO).

The factor applied to each group's base learning rate: a warmup from ``warmup_factor`` to 1
(linear, or the half-cosine TAO uses) over ``warmup_epochs`` (or ``warmup_iters`` steps when set),
then either step decay by ``gamma`` at each of ``lr_steps`` (epochs) or a cosine decay to
``min_lr``. As in BoT the epoch-based schedule changes once per epoch; it is evaluated every step
so iteration warmup and resume land on the same curve.
"""

from __future__ import annotations

import bisect
import math

import torch
from torch import nn

from reidpipe.params import OptimParams


def _warmup(progress: float, optim: OptimParams) -> float:
    if optim.warmup_method == "linear":
        return optim.warmup_factor + (1.0 - optim.warmup_factor) * progress
    return optim.warmup_factor + (1.0 - optim.warmup_factor) * (1.0 - math.cos(math.pi * progress)) / 2


def lr_factor(step: int, steps_per_epoch: int, optim: OptimParams, num_epochs: int) -> float:
    """Multiplier of the base lr at global ``step`` (0-based) of training."""
    epoch = step // steps_per_epoch
    if optim.warmup_iters > 0:
        if step < optim.warmup_iters:
            return _warmup(step / optim.warmup_iters, optim)
        warm_epochs = optim.warmup_iters / steps_per_epoch
    else:
        if epoch < optim.warmup_epochs:
            return _warmup(epoch / optim.warmup_epochs, optim)
        warm_epochs = optim.warmup_epochs
    if optim.scheduler == "multistep":
        return optim.gamma ** bisect.bisect_right(optim.lr_steps, epoch)
    span = max(num_epochs - warm_epochs, 1e-9)
    progress = min(max((epoch - warm_epochs) / span, 0.0), 1.0)
    floor = optim.min_lr / optim.base_lr
    return floor + (1.0 - floor) * (1.0 + math.cos(math.pi * progress)) / 2


def param_groups(model: nn.Module, optim: OptimParams) -> list[dict]:
    """Groups by (bias?, classifier?): biases get ``bias_lr_factor`` and ``weight_decay_bias``;
    with ``large_fc_lr`` the classifier trains at twice the base lr."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = ("bias" in name, optim.large_fc_lr and name.startswith("classifier."))
        groups.setdefault(key, []).append(param)
    out = []
    for (is_bias, is_fc), params in sorted(groups.items()):
        lr = optim.base_lr * (optim.bias_lr_factor if is_bias else 1.0) * (2.0 if is_fc else 1.0)
        wd = optim.weight_decay_bias if is_bias else optim.weight_decay
        out.append({"params": params, "lr": lr, "weight_decay": wd})
    return out


def make_optimizer(model: nn.Module, optim: OptimParams) -> torch.optim.Optimizer:
    groups = param_groups(model, optim)
    if optim.name == "SGD":
        return torch.optim.SGD(groups, lr=optim.base_lr, momentum=optim.momentum)
    if optim.name == "Adam":
        return torch.optim.Adam(groups, lr=optim.base_lr)
    return torch.optim.AdamW(groups, lr=optim.base_lr)


def make_scheduler(optimizer: torch.optim.Optimizer, steps_per_epoch: int, optim: OptimParams,
                   num_epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per training step."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, steps_per_epoch, optim, num_epochs))
