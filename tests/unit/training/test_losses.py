import math

import pytest
import torch

from reidpipe.params import DatasetParams, ModelParams, OptimParams
from reidpipe.training.losses import (
    CenterLoss,
    LossPlan,
    batch_hard_triplet,
    center_step,
    id_loss,
    reid_loss,
)

# Four 2-D features, identities [0, 0, 1, 1]. Pairwise distances:
# d01 = 5, d02 = 1, d03 = 2, d12 = sqrt(20), d13 = sqrt(13), d23 = sqrt(5).
FEATS = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
LABELS = torch.tensor([0, 0, 1, 1])
# Per anchor: (hardest positive, hardest negative).
HARD = [(5.0, 1.0), (5.0, math.sqrt(13)), (math.sqrt(5), 1.0), (math.sqrt(5), 2.0)]


def test_batch_hard_triplet_with_margin():
    expected = sum(max(0.0, ap - an + 0.3) for ap, an in HARD) / 4
    assert batch_hard_triplet(FEATS, LABELS, 0.3).item() == pytest.approx(expected, rel=1e-5)


def test_batch_hard_triplet_soft_margin():
    expected = sum(math.log1p(math.exp(ap - an)) for ap, an in HARD) / 4
    assert batch_hard_triplet(FEATS, LABELS, None).item() == pytest.approx(expected, rel=1e-5)


def test_triplet_is_zero_when_identities_are_separated_by_the_margin():
    feats = torch.tensor([[0.0], [0.1], [5.0], [5.1]])
    assert batch_hard_triplet(feats, LABELS, 0.3).item() == 0.0


def test_label_smoothed_cross_entropy():
    scores = torch.tensor([[1.0, 2.0, 0.5], [0.1, 0.2, 3.0]])
    labels = torch.tensor([1, 2])
    expected = 0.0
    for row, y in zip(scores.tolist(), labels.tolist()):
        log_z = math.log(sum(math.exp(s) for s in row))
        target = [0.9 * (j == y) + 0.1 / 3 for j in range(3)]
        expected -= sum(t * (s - log_z) for t, s in zip(target, row))
    expected /= 2
    assert id_loss(scores, labels, True).item() == pytest.approx(expected, rel=1e-5)
    plain = (
        -sum(
            row[y] - math.log(sum(math.exp(s) for s in row))
            for row, y in zip(scores.tolist(), labels.tolist())
        )
        / 2
    )
    assert id_loss(scores, labels, False).item() == pytest.approx(plain, rel=1e-5)


def test_center_loss_value_and_update():
    center = CenterLoss(2, 2)
    with torch.no_grad():
        center.centers.copy_(torch.tensor([[1.0, 1.0], [-1.0, 0.0]]))
    feats = torch.tensor([[2.0, 1.0], [1.0, 3.0], [-1.0, 2.0]])
    labels = torch.tensor([0, 0, 1])
    loss = center(feats, labels)
    assert loss.item() == pytest.approx((1 + 4 + 4) / 3)
    weight, lr = 5e-4, 0.5
    optimizer = torch.optim.SGD(center.parameters(), lr=lr)
    (weight * loss).backward()
    center_step(center, optimizer, weight)
    # d loss / d c_y = -2/B * sum over the class's samples of (x - c_y); the 1/weight undoes weight.
    grad0 = [-2 / 3 * (1 + 0), -2 / 3 * (0 + 2)]
    grad1 = [-2 / 3 * 0, -2 / 3 * 2]
    expected = torch.tensor(
        [[1 - lr * grad0[0], 1 - lr * grad0[1]], [-1 - lr * grad1[0], 0 - lr * grad1[1]]]
    )
    assert torch.allclose(center.centers.detach(), expected)


def test_loss_plan_and_total():
    optim = OptimParams(center_loss_weight=0.5)
    plan = LossPlan.from_config(
        ModelParams(metric_loss_type="triplet_center"),
        DatasetParams(sampler="softmax_triplet"),
        optim,
    )
    assert (plan.use_id, plan.use_triplet, plan.use_center) == (True, True, True)
    center = CenterLoss(3, 2)
    scores = torch.randn(4, 3)
    terms = reid_loss(plan, scores, FEATS, LABELS, center)
    expected = terms["id_loss"] + terms["triplet_loss"] + 0.5 * terms["center_loss"]
    assert terms["loss"].item() == pytest.approx(expected.item())
    softmax = LossPlan.from_config(ModelParams(), DatasetParams(sampler="softmax"), optim)
    assert (softmax.use_id, softmax.use_triplet, softmax.use_center) == (True, False, False)
    triplet = LossPlan.from_config(
        ModelParams(no_margin=True), DatasetParams(sampler="triplet"), optim
    )
    assert (triplet.use_id, triplet.use_triplet, triplet.margin) == (False, True, None)
