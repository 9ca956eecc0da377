"""Re-identification losses (Bag of Tricks, Luo et al. 2019).

ID loss: cross-entropy, optionally label-smoothed (epsilon 0.1) on the classifier scores. Metric
losses act on the feature before the BNNeck: batch-hard triplet (hardest positive and negative per
anchor, Euclidean distance, with a margin or the soft margin log(1 + exp(d_ap - d_an))) and center
loss (squared distance to a learned per-class center, trained by its own SGD).

Every loss runs in fp32 outside autocast whatever the training precision: batch-hard mining
compares distances that bf16 (3 significant digits) would tie or reorder, and a softmax over
hundreds of identities loses its small terms in half precision.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from reidpipe.params import DatasetParams, ModelParams, OptimParams

LABEL_SMOOTHING = 0.1


def fp32(tensor: torch.Tensor) -> AbstractContextManager:
    """A context where ``tensor``'s device runs without autocast (ops stay in their inputs' dtype)."""
    return torch.autocast(tensor.device.type, enabled=False)


def id_loss(scores: torch.Tensor, labels: torch.Tensor, label_smooth: bool) -> torch.Tensor:
    """Cross-entropy against (1 - e) * one_hot + e / C when smoothing (e = 0.1)."""
    with fp32(scores):
        return F.cross_entropy(
            scores.float(), labels, label_smoothing=LABEL_SMOOTHING if label_smooth else 0.0
        )


def pairwise_euclidean(x: torch.Tensor) -> torch.Tensor:
    sq = (x * x).sum(1, keepdim=True)
    d2 = sq + sq.t() - 2.0 * (x @ x.t())
    return d2.clamp(min=1e-12).sqrt()


def batch_hard_triplet(
    feat: torch.Tensor, labels: torch.Tensor, margin: float | None
) -> torch.Tensor:
    """Mean over anchors of max(0, d_ap - d_an + margin), or softplus(d_ap - d_an) if no margin."""
    with fp32(feat):
        return _batch_hard_triplet(feat.float(), labels, margin)


def _batch_hard_triplet(
    feat: torch.Tensor, labels: torch.Tensor, margin: float | None
) -> torch.Tensor:
    dist = pairwise_euclidean(feat)
    same = labels[:, None] == labels[None, :]
    hardest_pos = dist.masked_fill(~same, float("-inf")).max(1).values
    hardest_neg = dist.masked_fill(same, float("inf")).min(1).values
    gap = hardest_pos - hardest_neg
    if margin is None:
        return F.softplus(gap).mean()
    return F.relu(gap + margin).mean()


class CenterLoss(nn.Module):
    """Mean over the batch of ||x_i - c_{y_i}||^2 (Wen et al. 2016)."""

    def __init__(self, num_classes: int, feat_dim: int) -> None:
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim))

    def forward(self, feat: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with fp32(feat):
            diff = feat.float() - self.centers[labels].float()
            return (diff * diff).sum(1).clamp(1e-12, 1e12).mean()


@dataclass(frozen=True)
class LossPlan:
    """Which terms the recipe uses: ID loss unless sampler=triplet, triplet unless
    sampler=softmax, center when metric_loss_type names it or with_center_loss."""

    use_id: bool
    use_triplet: bool
    use_center: bool
    label_smooth: bool
    margin: float | None
    center_weight: float

    @classmethod
    def from_config(
        cls, model: ModelParams, dataset: DatasetParams, optim: OptimParams
    ) -> LossPlan:
        metric = model.metric_loss_type
        return cls(
            use_id=dataset.sampler != "triplet",
            use_triplet=dataset.sampler != "softmax" and metric in ("triplet", "triplet_center"),
            use_center=model.with_center_loss or metric in ("center", "triplet_center"),
            label_smooth=model.label_smooth,
            margin=None if model.no_margin else optim.triplet_loss_margin,
            center_weight=optim.center_loss_weight,
        )


def reid_loss(
    plan: LossPlan,
    scores: torch.Tensor,
    feat: torch.Tensor,
    labels: torch.Tensor,
    center: CenterLoss | None,
) -> dict[str, torch.Tensor]:
    """The loss terms and their weighted sum under ``"loss"``."""
    terms: dict[str, torch.Tensor] = {}
    if plan.use_id:
        terms["id_loss"] = id_loss(scores, labels, plan.label_smooth)
    if plan.use_triplet:
        terms["triplet_loss"] = batch_hard_triplet(feat, labels, plan.margin)
    if plan.use_center:
        assert center is not None
        terms["center_loss"] = center(feat, labels)
    total = sum(terms.get(k, 0.0) for k in ("id_loss", "triplet_loss"))
    if plan.use_center:
        total = total + plan.center_weight * terms["center_loss"]
    terms["loss"] = total  # type: ignore[assignment]
    return terms


def loss_scale(scaler: torch.amp.GradScaler | None) -> float:
    """The factor a (16-mixed) GradScaler multiplies the loss by now; 1 without one."""
    return scaler.get_scale() if scaler is not None and scaler.is_enabled() else 1.0


def center_step(
    center: CenterLoss, optimizer: torch.optim.Optimizer, weight: float, grad_scale: float = 1.0
) -> bool:
    """Undo the loss weight (BoT: centers move at center_lr) and the loss scale on the center
    gradient, then step; an overflowed gradient skips the step. Returns whether it stepped.

    ``grad_scale`` must be the scale the backward ran under: the main optimizer's step updates the
    GradScaler first (halving it after an overflow, doubling it every 2000 clean steps), so
    stepping the center optimizer through the scaler would unscale with the wrong factor."""
    grad = center.centers.grad
    if grad is None or weight <= 0:
        return False
    grad.mul_(1.0 / (weight * grad_scale))
    if not bool(torch.isfinite(grad).all()):
        return False
    optimizer.step()
    return True
