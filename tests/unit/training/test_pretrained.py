"""``pretrain_choice: self`` file formats: Microsoft Swin, Lightning, reidpipe model files, torchvision
ResNets; the 95 % rule and the load report. (SOLIDER/TAO mmseg files: tests/unit/training/test_swin.py.)"""

from __future__ import annotations

import logging
import re

import pytest
import timm
import torch

from reidpipe.errors import ReidpipeError
from reidpipe.filenames import MODEL_FILE
from reidpipe.params import ModelParams
from reidpipe.training.model import build_model
from reidpipe.training.pretrained import MIN_FILLED, load_backbone_weights

TINY = {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2]}


def swin(**kw) -> ModelParams:
    base = {
        "backbone": "swin_tiny_patch4_window7_224",
        "pretrain_choice": "",
        "input_height": 128,
        "input_width": 64,
        "feat_dim": 32,
        "backbone_kwargs": TINY,
    }
    return ModelParams(**{**base, **kw})


def randomised(net: torch.nn.Module) -> torch.nn.Module:
    """Every tensor random, the frozen semantic embedding included, so a copy is recognisable."""
    torch.manual_seed(3)
    with torch.no_grad():
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor))
    return net


def same_backbone(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_microsoft_swin_layout_moves_patch_merging_to_the_next_stage(tmp_path):
    source = randomised(build_model(swin(), 3).backbone)
    # Microsoft's checkpoints merge at the end of a stage: timm's layers.N+1.downsample is layers.N's
    state = {
        re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m[1]) - 1}.downsample", k): v
        for k, v in source.state_dict().items()
        if not k.startswith("semantic")
    }
    state |= {"head.weight": torch.zeros(10, 128), "head.bias": torch.zeros(10)}
    path = tmp_path / "swin_tiny_patch4_window7_224.pth"
    torch.save({"model": state}, path)
    target = build_model(swin(), 3).backbone
    report = load_backbone_weights(target, path)
    assert report.layout.startswith("Microsoft") and report.fraction == 1.0
    assert report.unexpected == ["head.bias", "head.weight"] and len(report.identity) == 12
    state = target.state_dict()
    for key, value in source.state_dict().items():
        assert key.startswith("semantic") or torch.equal(state[key], value), key


def test_lightning_and_reidpipe_checkpoints(tmp_path):
    trained = randomised(build_model(swin(), 3))
    ckpt = tmp_path / "last.ckpt"
    torch.save(
        {"epoch": 7, "state_dict": {f"net.{k}": v for k, v in trained.state_dict().items()}}, ckpt
    )
    ours = tmp_path / MODEL_FILE
    torch.save({"arch": {}, "num_classes": 3, "state_dict": trained.state_dict()}, ours)
    for path in (ckpt, ours):
        net = build_model(swin(pretrain_choice="self", pretrained_model_path=str(path)), 3)
        assert same_backbone(net.backbone, trained.backbone), path
        report = load_backbone_weights(build_model(swin(), 3).backbone, path)
        assert report.identity == [] and report.missing == [] and report.layout == "timm names"
        assert {"bottleneck.weight", "classifier.weight", "reduction.weight"} <= set(
            report.unexpected
        )


def test_torchvision_resnet_without_batch_counters(tmp_path, caplog):
    source = randomised(timm.create_model("resnet18", num_classes=0))
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(state, path)
    target = timm.create_model("resnet18", num_classes=0)
    logger = logging.getLogger("reidpipe.training.pretrained")
    logger.addHandler(caplog.handler)  # the CLI's log setup stops propagation to the root logger
    try:
        with caplog.at_level(logging.INFO, logger="reidpipe"):
            report = load_backbone_weights(target, path)
    finally:
        logger.removeHandler(caplog.handler)
    assert report.fraction == 1.0 and report.missing == [] and report.unexpected == []
    assert torch.equal(target.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)
    assert f"pretrained weights {path} (timm names): filled {len(report.filled)}/" in caplog.text


def test_the_wrong_backbone_is_a_clear_error_naming_what_is_missing(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet18", num_classes=0).state_dict(), path)
    with pytest.raises(
        ReidpipeError,
        match=r"fills only 0/\d+ .*need 95%.*missing: .*"
        r"layers\.0\.blocks\.0\.attn\.qkv\.weight",
    ):
        build_model(swin(pretrain_choice="self", pretrained_model_path=str(path)), 3)
    assert MIN_FILLED == 0.95


def test_report_lists_each_kind(tmp_path):
    source = build_model(swin(), 3).backbone
    state = {
        f"backbone.{k}": v
        for k, v in source.state_dict().items()
        if k != "layers.2.blocks.0.mlp.fc2.bias"
    }
    state["backbone.layers.0.blocks.0.attn.relative_position_bias_table"] = torch.zeros(11 * 11, 1)
    state["head.fc.weight"] = torch.zeros(2, 2)
    path = tmp_path / "w.pth"
    torch.save(state, path)
    report = load_backbone_weights(build_model(swin(), 3).backbone, path)
    text = report.describe()
    assert report.missing == ["layers.2.blocks.0.mlp.fc2.bias"] and MIN_FILLED < report.fraction < 1
    assert "missing (left at init) 1: layers.2.blocks.0.mlp.fc2.bias" in text
    assert "unexpected (ignored) 1: head.fc.weight" in text
    assert "reshaped 1: layers.0.blocks.0.attn.relative_position_bias_table" in text
