import math

import pytest
import torch
from torch import nn

from reidpipe.params import OptimParams
from reidpipe.training.schedule import (
    lr_factor,
    make_optimizer,
    make_scheduler,
    param_groups,
)

BOT = OptimParams(base_lr=3.5e-4, warmup_factor=0.01, warmup_epochs=10, lr_steps=[40, 70],
                  gamma=0.1, warmup_method="linear")


@pytest.mark.parametrize("epoch, factor", [(0, 0.01), (5, 0.505), (9, 0.901), (10, 1.0),
                                           (39, 1.0), (40, 0.1), (69, 0.1), (70, 0.01),
                                           (119, 0.01)])
def test_bot_linear_warmup_multistep(epoch, factor):
    assert lr_factor(epoch * 7 + 3, 7, BOT, 120) == pytest.approx(factor)


def test_cosine_warmup():
    optim = OptimParams(warmup_factor=0.01, warmup_epochs=10, warmup_method="cosine")
    assert lr_factor(0, 1, optim, 120) == pytest.approx(0.01)
    # 0.01 + 0.99 * (1 - cos(0.2 pi)) / 2 = 0.01 + 0.99 * 0.0954915
    assert lr_factor(2, 1, optim, 120) == pytest.approx(0.104537, abs=1e-6)
    assert lr_factor(5, 1, optim, 120) == pytest.approx(0.505)


def test_cosine_decay_after_warmup():
    optim = OptimParams(scheduler="cosine", base_lr=1e-3, min_lr=1e-5, warmup_epochs=10)
    floor = 1e-5 / 1e-3
    assert lr_factor(10, 1, optim, 110) == pytest.approx(1.0)
    assert lr_factor(60, 1, optim, 110) == pytest.approx(floor + (1 - floor) * 0.5)
    assert lr_factor(110, 1, optim, 110) == pytest.approx(floor)


def test_iteration_warmup():
    optim = OptimParams(warmup_iters=100, warmup_factor=0.1, lr_steps=[8], warmup_epochs=0)
    assert lr_factor(0, 20, optim, 10) == pytest.approx(0.1)
    assert lr_factor(50, 20, optim, 10) == pytest.approx(0.55)
    assert lr_factor(100, 20, optim, 10) == pytest.approx(1.0)
    assert lr_factor(8 * 20 - 1, 20, optim, 10) == pytest.approx(1.0)
    assert lr_factor(8 * 20, 20, optim, 10) == pytest.approx(0.1)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(3, 4)
        self.classifier = nn.Linear(4, 2)


def test_param_groups_bias_and_classifier_lr():
    optim = OptimParams(base_lr=0.1, bias_lr_factor=2.0, weight_decay=5e-4,
                        weight_decay_bias=0.0, large_fc_lr=True)
    groups = param_groups(Tiny(), optim)
    by_setting = sorted((g["lr"], g["weight_decay"], len(g["params"])) for g in groups)
    assert by_setting == [(0.1, 5e-4, 1), (0.2, 0.0, 1), (0.2, 5e-4, 1), (0.4, 0.0, 1)]


def test_scheduler_drives_optimizer_lr_per_step():
    optim = OptimParams(name="SGD", base_lr=0.1, warmup_epochs=2, warmup_factor=0.1,
                        lr_steps=[3], gamma=0.5)
    opt = make_optimizer(Tiny(), optim)
    sched = make_scheduler(opt, 4, optim, 5)
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[0] == pytest.approx(0.01) and seen[4] == pytest.approx(0.055)
    assert seen[8] == pytest.approx(0.1) and seen[12] == pytest.approx(0.05)
    assert isinstance(opt, torch.optim.SGD) and not math.isnan(seen[-1])
