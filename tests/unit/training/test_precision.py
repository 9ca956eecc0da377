"""Mixed precision: the automatic choice, fp32 losses under autocast, and the center-loss
optimizer's unscaling under 16-mixed."""

import math

import pytest
import torch

from reidpipe.training.losses import (
    CenterLoss,
    batch_hard_triplet,
    center_step,
    id_loss,
    loss_scale,
)
from reidpipe.training.train import auto_precision


@pytest.mark.parametrize(
    "capability, precision",
    [
        (None, "32"),  # CPU
        ((6, 0), "16-mixed"),  # P100
        ((7, 0), "16-mixed"),  # V100: is_bf16_supported() says yes, through emulation
        ((7, 5), "16-mixed"),  # T4
        ((8, 0), "bf16-mixed"),  # A100
        ((8, 6), "bf16-mixed"),
        ((9, 0), "bf16-mixed"),  # H100
    ],
)
def test_auto_precision_uses_bf16_only_with_native_support(capability, precision):
    assert auto_precision(capability) == precision


def _batch():
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(16, 64, generator=gen) * 3
    labels = torch.arange(4).repeat_interleave(4)
    return feats, labels


def reference_triplet(feats: torch.Tensor, labels: torch.Tensor, margin: float | None) -> float:
    """Batch-hard triplet in float64, one anchor at a time."""
    x = feats.double()
    total = 0.0
    for i in range(len(x)):
        d = (x - x[i]).norm(dim=1)
        same = labels == labels[i]
        gap = float(d[same].max() - d[~same].min())
        total += math.log1p(math.exp(gap)) if margin is None else max(0.0, gap + margin)
    return total / len(x)


@pytest.mark.parametrize("margin", [0.3, None])
def test_triplet_loss_under_bf16_autocast_is_the_fp32_loss(margin):
    feats, labels = _batch()
    fp32 = batch_hard_triplet(feats, labels, margin)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = batch_hard_triplet(feats, labels, margin)
        mixed_from_bf16 = batch_hard_triplet(feats.bfloat16(), labels, margin)
    assert mixed.dtype == torch.float32
    assert mixed.item() == pytest.approx(fp32.item(), rel=1e-6, abs=0)
    assert fp32.item() == pytest.approx(reference_triplet(feats, labels, margin), rel=1e-5)
    # A bf16 feature is rounded once (~3 significant digits), then everything is fp32.
    assert mixed_from_bf16.item() == pytest.approx(
        reference_triplet(feats.bfloat16().float(), labels, margin), rel=1e-5
    )


def test_id_and_center_losses_under_bf16_autocast_are_fp32():
    feats, labels = _batch()
    scores = feats[:, :10]
    center = CenterLoss(4, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ce, cl = id_loss(scores, labels, True), center(feats, labels)
    assert ce.dtype == cl.dtype == torch.float32
    assert ce.item() == pytest.approx(id_loss(scores, labels, True).item(), rel=1e-6, abs=0)
    assert cl.item() == pytest.approx(center(feats, labels).item(), rel=1e-6, abs=0)


def test_center_step_unscales_with_the_scale_its_gradient_was_made_with():
    """The main optimizer's step updates the GradScaler (here: it found an inf and halved the
    scale) before the center optimizer steps; the center gradient was made under the old scale."""
    weight, center_lr = 5e-4, 0.5
    feats = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.0, 4.0]])
    labels = torch.tensor([0, 1, 0])
    center = CenterLoss(2, 2)
    with torch.no_grad():
        center.centers.copy_(torch.tensor([[0.5, 0.5], [-1.0, 2.0]]))
    before = center.centers.detach().clone()
    optimizer = torch.optim.SGD(center.parameters(), lr=center_lr)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    scaler.scale(weight * center(feats, labels)).backward()
    made_with = loss_scale(scaler)
    scaler.update(new_scale=2.0**9)
    assert made_with == 2.0**10 and loss_scale(scaler) == 2.0**9

    assert center_step(center, optimizer, weight, made_with)
    # d/dc_y of mean_i ||x_i - c_{y_i}||^2 = -2/B * sum_{i: y_i = y} (x_i - c_y)
    grad = torch.zeros(2, 2)
    for x, y in zip(feats, labels.tolist()):
        grad[y] -= 2.0 / len(feats) * (x - before[y])
    assert torch.allclose(center.centers.detach(), before - center_lr * grad, rtol=1e-6, atol=1e-7)


def test_center_step_skips_an_overflowed_gradient_and_loss_scale_without_a_scaler():
    center = CenterLoss(2, 2)
    before = center.centers.detach().clone()
    center.centers.grad = torch.tensor([[math.inf, 0.0], [0.0, 0.0]])
    assert not center_step(center, torch.optim.SGD(center.parameters(), lr=0.5), 5e-4, 1024.0)
    assert torch.equal(center.centers.detach(), before)
    assert loss_scale(None) == 1.0
    assert loss_scale(torch.amp.GradScaler("cpu", enabled=False)) == 1.0


def test_loss_scale_reads_lightnings_16_mixed_scaler():
    """The module reads the scale from ``trainer.precision_plugin.scaler``: Lightning's name."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=8.0))
    assert loss_scale(getattr(plugin, "scaler", None)) == 8.0
    assert getattr(MixedPrecision("bf16-mixed", "cpu"), "scaler", None) is None
