"""Learning rate of each epoch, and the parameter groups (BoT / TAO / SOLIDER).

The lr is a function of the epoch alone, set at each epoch start and constant within it, so a
resumed run, DDP and a changed GPU count all land on the same curve. Epoch ``e`` counts from 1;
``W`` is the warmup length in epochs (``warmup_iters`` when > 0, else ``warmup_epochs``: TAO's
and BoT's ``warmup_iters`` count epochs, their schedulers step once an epoch); ``f`` is
``warmup_factor``; ``g`` a parameter group's own base lr (base_lr x bias/classifier factors).

- ``warmup_method: linear``: BoT's WarmupMultiStepLR (reid-strong-baseline
  ``solver/lr_scheduler.py``), stepped at each epoch start (``engine/trainer.py``), so epoch e
  runs at ``last_epoch = e``: ``g * w(e) * gamma ** #{lr_steps <= e}``, ``w(e) = f (1 - e/W) + e/W``
  for e < W, else 1.
- ``warmup_method: cosine``: what it selects in a TAO spec, SOLIDER's CosineLRScheduler
  (SOLIDER-REID ``solver/cosine_lr.py`` + ``solver/scheduler_factory.py``; tao_pytorch_backend
  ``re_identification/lr_schedulers/cosine_lr.py``), stepped after each epoch with that epoch's
  number (``processor/processor.py``), so epoch e runs at t = e - 1: ``s + t (g - s) / W`` for
  t < W, else ``m + (g - m) (1 + cos(pi t / num_epochs)) / 2``, where the start
  ``s = f * base_lr`` and the floor ``m = min_lr_factor * base_lr`` are the same for every group.
  ``lr_steps`` are unused.
"""

from __future__ import annotations

import bisect
import math

import torch
from torch import nn

from reidpipe.params import OptimParams

# The key each parameter group keeps its own base lr under (torch's schedulers use the same).
BASE_LR_KEY = "initial_lr"


def warmup_length(optim: OptimParams) -> int:
    """Warmup epochs: ``warmup_iters`` (TAO/BoT's name, counting epochs) when set."""
    return optim.warmup_iters or optim.warmup_epochs


def epoch_lr(epoch: int, group_lr: float, optim: OptimParams, num_epochs: int) -> float:
    """The lr of a parameter group whose base lr is ``group_lr`` during ``epoch`` (from 1)."""
    warm = warmup_length(optim)
    if optim.warmup_method == "cosine":
        t = epoch - 1
        if t < warm:
            start = optim.warmup_factor * optim.base_lr
            return start + t * (group_lr - start) / warm
        floor = optim.min_lr_factor * optim.base_lr
        return floor + 0.5 * (group_lr - floor) * (1.0 + math.cos(math.pi * t / num_epochs))
    factor = 1.0
    if epoch < warm:
        alpha = epoch / warm
        factor = optim.warmup_factor * (1.0 - alpha) + alpha
    return group_lr * factor * optim.gamma ** bisect.bisect_right(optim.lr_steps, epoch)


def set_epoch_lr(
    optimizer: torch.optim.Optimizer, epoch: int, optim: OptimParams, num_epochs: int
) -> None:
    for group in optimizer.param_groups:
        group["lr"] = epoch_lr(epoch, group[BASE_LR_KEY], optim, num_epochs)


def unused_settings_note(optim: OptimParams) -> str | None:
    """A TAO spec sets ``lr_steps`` next to ``warmup_method: cosine``, which ignores them."""
    if optim.warmup_method == "cosine" and optim.lr_steps:
        return (
            f"train.optim.lr_steps {optim.lr_steps} are unused: warmup_method 'cosine' "
            "selects TAO's cosine schedule (linear warmup, cosine decay to "
            "min_lr_factor x base_lr)"
        )
    return None


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
        out.append({"params": params, "lr": lr, BASE_LR_KEY: lr, "weight_decay": wd})
    return out


def make_optimizer(model: nn.Module, optim: OptimParams) -> torch.optim.Optimizer:
    groups = param_groups(model, optim)
    if optim.name == "SGD":
        return torch.optim.SGD(groups, lr=optim.base_lr, momentum=optim.momentum)
    if optim.name == "Adam":
        return torch.optim.Adam(groups, lr=optim.base_lr)
    return torch.optim.AdamW(groups, lr=optim.base_lr)
