"""The shipped recipes against their sources.

Every epoch's logged learning rate of a 120-epoch run (one step an epoch) is compared with the
source's schedule written out below, and the recipes' settings with the values their sources use:
BoT = reid-strong-baseline's ``configs/softmax_triplet*.yml`` and ``WarmupMultiStepLR`` stepped at
each epoch start; TAO = the ReIdentificationNet Transformer example spec, whose
``warmup_method: cosine`` selects SOLIDER's ``CosineLRScheduler`` (stepped at each epoch end with
the epoch just finished).
"""

import dataclasses
import math
import random

import pandas as pd
import pytest
import torch
from support import ROOT
from support.market_fixtures import make_tiny_market
from torchvision.transforms import InterpolationMode, v2

from reidpipe.data.split import make_split
from reidpipe.params import load_params
from reidpipe.training.train import Runtime, train_arch
from reidpipe.training.transforms import train_transform


def bot_lr(epoch: int) -> float:
    """BoT ResNet-50: epoch e (from 1) runs at ``last_epoch = e``."""
    base, factor, warmup, steps, gamma = 3.5e-4, 0.01, 10, (40, 70), 0.1
    alpha = epoch / warmup
    warm = factor * (1 - alpha) + alpha if epoch < warmup else 1.0
    return base * warm * gamma ** sum(step <= epoch for step in steps)


def tao_cosine_lr(epoch: int) -> float:
    """TAO Swin: ``warmup_lr_init = 0.01 base``, ``lr_min = 0.002 base``, epoch e runs at t = e - 1."""
    base, warmup, epochs = 8e-4, 20, 120
    start, floor, t = 0.01 * base, 0.002 * base, epoch - 1
    if t < warmup:
        return start + t * (base - start) / warmup
    return floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * t / epochs))


def test_the_reference_curves_match_the_numbers_the_sources_quote():
    assert bot_lr(1) / 3.5e-4 == pytest.approx(0.109)
    assert [bot_lr(e) / 3.5e-4 for e in (10, 39, 40, 69, 70, 120)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )
    assert tao_cosine_lr(1) == pytest.approx(8e-6) and tao_cosine_lr(21) == pytest.approx(
        1.6e-6 + 0.5 * (8e-4 - 1.6e-6) * (1 + math.cos(math.pi / 6))
    )
    assert tao_cosine_lr(41) == pytest.approx(6.0e-4, rel=0.01)  # not 8e-5 as with steps 40/70


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipes")
    make_tiny_market(root / "market", train_ids=6)
    make_split(root / "market", root / "splits", val_ids=2, seed=0)
    return root / "splits"


def tiny_recipe(arch: str):
    """The shipped recipe with a small network and one step an epoch: the optimizer and the
    schedule stay the recipe's."""
    cfg = load_params([ROOT / "params.yaml"]).arch(arch)
    model = dataclasses.replace(
        cfg.model,
        backbone="resnet18",
        pretrain_choice="",
        pretrained_model_path="",
        backbone_kwargs={"channels": [8, 16, 32, 64], "layers": [1, 1, 1, 1]},
        input_width=16,
        input_height=32,
        feat_dim=16,
    )
    dataset = dataclasses.replace(
        cfg.dataset, batch_size=4, num_instances=2, num_workers=0, padding=2, val_batch_size=32
    )
    train = dataclasses.replace(
        cfg.train,
        num_gpus=0,
        max_steps_per_epoch=1,
        validation_interval=120,
        checkpoint_interval=120,
    )
    return dataclasses.replace(cfg, model=model, dataset=dataset, train=train)


@pytest.mark.parametrize("arch, reference", [("resnet50", bot_lr), ("swin_tiny", tao_cosine_lr)])
def test_every_epoch_runs_at_the_sources_learning_rate(tmp_path, splits, arch, reference):
    torch.set_num_threads(1)
    cfg = tiny_recipe(arch)
    assert cfg.train.num_epochs == 120
    train_arch(cfg, splits, tmp_path / "model", Runtime("cpu", 1, "32", "test"))
    log = pd.read_csv(tmp_path / "model" / "train_log.csv")
    trained = log[log["epoch"] > 0]
    assert trained["epoch"].tolist() == list(range(1, 121))
    assert (trained["steps"] == 1).all()
    expected = [reference(int(e)) for e in trained["epoch"]]
    assert trained["lr"].tolist() == pytest.approx(expected, rel=1e-6, abs=0)


def test_resnet50_is_bag_of_tricks():
    cfg = load_params([ROOT / "params.yaml"]).arch("resnet50")
    m, d, o = cfg.model, cfg.dataset, cfg.train.optim
    assert m.backbone == "resnet50.tv_in1k" and m.pretrain_choice == "imagenet"
    assert (m.last_stride, m.neck, m.neck_feat, m.label_smooth, m.no_margin) == (
        1,
        "bnneck",
        "after",
        True,
        False,
    )
    assert (d.batch_size, d.num_instances, d.padding, d.prob, d.re_prob) == (64, 4, 10, 0.5, 0.5)
    assert d.pixel_mean == [0.485, 0.456, 0.406] and d.pixel_std == [0.229, 0.224, 0.225]
    assert (d.re_mode, d.train_interpolation) == ("mean", "bilinear")
    assert (o.name, o.base_lr, o.weight_decay, o.weight_decay_bias, o.bias_lr_factor) == (
        "Adam",
        3.5e-4,
        5e-4,
        5e-4,
        1.0,
    )
    assert (o.warmup_method, o.warmup_factor, o.lr_steps, o.gamma) == (
        "linear",
        0.01,
        [40, 70],
        0.1,
    )
    assert o.triplet_loss_margin == 0.3 and cfg.train.num_epochs == 120


def test_swin_tiny_is_taos_swin_spec():
    cfg = load_params([ROOT / "params.yaml"]).arch("swin_tiny")
    m, d, o = cfg.model, cfg.dataset, cfg.train.optim
    assert m.backbone.startswith("swin_tiny_patch4_window7_224")
    assert (m.label_smooth, m.no_margin, m.metric_loss_type, m.neck, m.neck_feat) == (
        False,
        True,
        "triplet",
        "bnneck",
        "after",
    )
    assert d.pixel_mean == [0.5] * 3 and d.pixel_std == [0.5] * 3
    assert (d.re_mode, d.train_interpolation) == ("pixel", "bicubic")  # its transforms' code
    assert (d.batch_size, d.num_instances, d.padding, d.prob, d.re_prob) == (64, 4, 10, 0.5, 0.5)
    assert (o.name, o.base_lr, o.momentum, o.bias_lr_factor) == ("SGD", 8e-4, 0.9, 2.0)
    assert (o.weight_decay, o.weight_decay_bias, o.large_fc_lr) == (1e-4, 1e-4, False)
    assert (o.warmup_method, o.warmup_factor, o.warmup_epochs, o.min_lr_factor) == (
        "cosine",
        0.01,
        20,
        0.002,
    )
    assert cfg.train.num_epochs == 120


def test_bot_random_erasing_fills_a_box_of_the_papers_size_with_the_pixel_mean():
    """Zhong et al. as BoT configures it: area 2-40 % of the image, aspect h/w 0.3-3.33, filled
    with ``pixel_mean`` (the values, in normalised units)."""
    cfg = load_params([ROOT / "params.yaml"]).arch("resnet50")
    dataset = dataclasses.replace(cfg.dataset, re_prob=1.0, prob=0.0)
    transform = train_transform(cfg.model, dataset)
    mean = torch.tensor(dataset.pixel_mean)[:, None, None]
    torch.manual_seed(0)
    black = torch.zeros(3, 256, 128, dtype=torch.uint8)  # padding adds black too
    areas = []
    for _ in range(200):
        out = transform(black)
        erased = (out == mean).all(0)
        if not erased.any():  # no box fitted in 100 tries
            continue
        rows, cols = erased.any(1).nonzero(), erased.any(0).nonzero()
        h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert erased.sum() == h * w  # one solid box
        areas.append(h * w / (256 * 128))
        assert (h - 0.5) / (w + 0.5) <= 1 / 0.3 and (h + 0.5) / (w - 0.5) >= 0.3  # rounded sides
    assert len(areas) == 200
    assert min(areas) >= 0.02 - 0.002 and max(areas) <= 0.4 + 0.01
    assert max(areas) > 0.34  # torchvision's default stops at 1/3


def _erased_boxes(transform, background: torch.Tensor, runs: int = 200):
    """(h, w, values) of the box each run erased: the pixels that differ from ``background``."""
    torch.manual_seed(0)
    random.seed(0)
    black = torch.zeros(3, 256, 128, dtype=torch.uint8)
    for _ in range(runs):
        out = transform(black)
        erased = (out != background).any(0)
        if erased.any():
            rows, cols = erased.any(1).nonzero(), erased.any(0).nonzero()
            h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
            box = out[
                :, int(rows.min()) : int(rows.max()) + 1, int(cols.min()) : int(cols.max()) + 1
            ]
            yield h, w, box


def test_swin_random_erasing_is_solider_and_taos_per_pixel_noise():
    """timm's RandomErasing(mode='pixel') as SOLIDER and TAO call it: one box of 2-33 % of the
    image, aspect 0.3-3.33, every value drawn from N(0, 1)."""
    cfg = load_params([ROOT / "params.yaml"]).arch("swin_tiny")
    dataset = dataclasses.replace(cfg.dataset, re_prob=1.0, prob=0.0)
    transform = train_transform(cfg.model, dataset)
    background = torch.full((3, 1, 1), -1.0)  # black in mean/std 0.5 units
    boxes = list(_erased_boxes(transform, background))
    assert len(boxes) > 150
    areas = [h * w / (256 * 128) for h, w, _ in boxes]
    assert min(areas) >= 0.02 - 0.002 and max(areas) <= 1 / 3 + 0.01
    assert all(
        (h - 0.5) / (w + 0.5) <= 1 / 0.3 and (h + 0.5) / (w - 0.5) >= 0.3 for h, w, _ in boxes
    )
    values = torch.cat([box.flatten() for _, _, box in boxes])
    assert abs(float(values.mean())) < 0.01 and abs(float(values.std()) - 1) < 0.01
    resize = next(t for t in transform.transforms if isinstance(t, v2.Resize))
    assert resize.interpolation == InterpolationMode.BICUBIC


def bot_erasing_box(height: int, width: int, rng: random.Random) -> tuple[int, int] | None:
    """BoT's RandomErasing box (h, w): area 0.02-0.4 and aspect h/w 0.3-3.33 drawn uniformly,
    100 tries for one that fits strictly inside."""
    for _ in range(100):
        area = rng.uniform(0.02, 0.4) * height * width
        aspect = rng.uniform(0.3, 1 / 0.3)
        h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if w < width and h < height:
            return h, w
    return None


def test_bot_random_erasing_draws_boxes_as_bot_does():
    cfg = load_params([ROOT / "params.yaml"]).arch("resnet50")
    transform = train_transform(cfg.model, dataclasses.replace(cfg.dataset, re_prob=1.0))
    erasing = next(t for t in transform.transforms if isinstance(t, v2.RandomErasing))
    torch.manual_seed(0)
    image = torch.zeros(3, 256, 128)
    params = [erasing.make_params([image]) for _ in range(2000)]
    ours = [(p["h"], p["w"]) for p in params if p["v"] is not None]
    rng = random.Random(0)
    reference = [box for box in (bot_erasing_box(256, 128, rng) for _ in range(2000)) if box]

    def tall_share_and_mean_area(boxes):
        return (
            sum(h > w for h, w in boxes) / len(boxes),
            sum(h * w for h, w in boxes) / len(boxes) / (256 * 128),
        )

    (tall, area), (ref_tall, ref_area) = map(tall_share_and_mean_area, (ours, reference))
    assert len(ours) == len(reference) == 2000  # a 256x128 image always fits a box
    assert abs(tall - ref_tall) < 0.04 and ref_tall > 0.75  # log-uniform aspects give ~0.6
    assert abs(area - ref_area) < 0.015
