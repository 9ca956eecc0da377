"""Re-identification losses (Bag of Tricks, Luo et al. 2019).

ID loss: cross-entropy, optionally label-smoothed (epsilon 0.1) on the classifier scores. Metric
losses act on the feature before the BNNeck: batch-hard triplet (hardest positive and negative per
anchor, Euclidean distance, with a margin or the soft margin log(1 + exp(d_ap - d_an))) and center
loss (squared distance to a learned per-class center, trained by its own SGD).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from reidpipe.params import DatasetParams, ModelParams, OptimParams

LABEL_SMOOTHING = 0.1


def id_loss(scores: torch.Tensor, labels: torch.Tensor, label_smooth: bool) -> torch.Tensor:
    """Cross-entropy against (1 - e) * one_hot + e / C when smoothing (e = 0.1)."""
    return F.cross_entropy(scores, labels, label_smoothing=LABEL_SMOOTHING if label_smooth else 0.0)


def pairwise_euclidean(x: torch.Tensor) -> torch.Tensor:
    sq = (x * x).sum(1, keepdim=True)
    d2 = sq + sq.t() - 2.0 * (x @ x.t())
    return d2.clamp(min=1e-12).sqrt()


def batch_hard_triplet(feat: torch.Tensor, labels: torch.Tensor,
                       margin: float | None) -> torch.Tensor:
    """Mean over anchors of max(0, d_ap - d_an + margin), or softplus(d_ap - d_an) if no margin."""
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
        diff = feat - self.centers[labels]
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
    def from_config(cls, model: ModelParams, dataset: DatasetParams,
                    optim: OptimParams) -> LossPlan:
        metric = model.metric_loss_type
        return cls(
            use_id=dataset.sampler != "triplet",
            use_triplet=dataset.sampler != "softmax" and metric in ("triplet", "triplet_center"),
            use_center=model.with_center_loss or metric in ("center", "triplet_center"),
            label_smooth=model.label_smooth,
            margin=None if model.no_margin else optim.triplet_loss_margin,
            center_weight=optim.center_loss_weight,
        )


def reid_loss(plan: LossPlan, scores: torch.Tensor, feat: torch.Tensor, labels: torch.Tensor,
              center: CenterLoss | None) -> dict[str, torch.Tensor]:
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


def center_step(center: CenterLoss, optimizer: torch.optim.Optimizer, weight: float) -> None:
    """Undo the loss weight on the center gradient, then step (BoT): centers move at center_lr."""
    if center.centers.grad is not None and weight > 0:
        center.centers.grad.mul_(1.0 / weight)
    optimizer.step()
