import os
import subprocess
import sys

import pytest
import timm
import torch
from safetensors.torch import save_file

from reidpipe.errors import ReidpipeError
from reidpipe.params import ModelParams
from reidpipe.training.model import build_model
from reidpipe.training.pretrained import load_backbone_weights

TINY_SWIN = {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2]}


def resnet(**kw):
    base = {
        "backbone": "resnet18",
        "pretrain_choice": "",
        "input_height": 64,
        "input_width": 32,
        "feat_dim": 64,
    }
    return ModelParams(**{**base, **kw})


def swin(**kw):
    base = {
        "backbone": "swin_tiny_patch4_window7_224",
        "pretrain_choice": "",
        "input_height": 128,
        "input_width": 64,
        "feat_dim": 128,
        "backbone_kwargs": TINY_SWIN,
    }
    return ModelParams(**{**base, **kw})


def test_bnneck_shapes_and_frozen_bias():
    net = build_model(resnet(), num_classes=7)
    x = torch.randn(4, 3, 64, 32)
    scores, feat = net(x)
    assert scores.shape == (4, 7) and feat.shape == (4, 64)
    assert net.classifier.bias is None
    assert not net.bottleneck.bias.requires_grad
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    (scores.sum() + feat.sum()).backward()
    opt.step()
    assert torch.count_nonzero(net.bottleneck.bias) == 0
    net.eval()
    after = net(x)
    assert after.shape == (4, 64)
    assert torch.allclose(after, net.bottleneck(net.reduction(net.backbone(x))))
    before = build_model(resnet(neck_feat="before"), 7)
    before.load_state_dict(net.state_dict())
    assert torch.allclose(before.eval()(x), net.reduction(net.backbone(x)))


def test_last_stride_one_and_feature_reduction():
    net = build_model(resnet(), 3)
    assert net.backbone.forward_features(torch.randn(1, 3, 64, 32)).shape[-2:] == (4, 2)
    assert isinstance(net.reduction, torch.nn.Linear) and net.reduction.in_features == 512
    assert isinstance(build_model(resnet(feat_dim=512), 3).reduction, torch.nn.Identity)
    native = build_model(resnet(feat_dim=0), 3)  # 0: the backbone's own width, no reduction
    assert isinstance(native.reduction, torch.nn.Identity) and native.feat_dim == 512
    assert native.classifier.in_features == 512
    with pytest.raises(ReidpipeError, match="reduce_feat_dim"):
        build_model(resnet(reduce_feat_dim=False), 3)


def test_swin_at_reid_size_is_batch_independent():
    net = build_model(swin(), 5).eval()
    x = torch.randn(3, 3, 128, 64)
    with torch.no_grad():
        full = net(x)
        single = net(x[1:2])
    assert full.shape == (3, 128)
    assert torch.allclose(full[1:2], single, atol=1e-5)


def test_self_weights_strip_prefixes_and_adapt_input_conv(tmp_path):
    source = timm.create_model("resnet18", num_classes=0)
    state = {f"module.backbone.{k}": v for k, v in source.state_dict().items()}
    state["module.head.weight"] = torch.zeros(3, 3)
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": state, "epoch": 3}, path)
    net = build_model(
        resnet(pretrain_choice="self", pretrained_model_path=str(path), input_channels=1), 4
    )
    expected = source.conv1.weight.sum(dim=1, keepdim=True)
    assert torch.allclose(net.backbone.conv1.weight, expected)
    assert torch.equal(net.backbone.layer3[0].conv1.weight, source.layer3[0].conv1.weight)
    report = load_backbone_weights(timm.create_model("resnet18", num_classes=0, in_chans=1), path)
    assert report.reshaped == ["conv1.weight"] and report.unexpected == ["head.weight"]
    assert report.missing == []


def test_self_weights_resize_swin_relative_position_tables(tmp_path):
    source = timm.create_model(
        "swin_tiny_patch4_window7_224", num_classes=0, window_size=6, **TINY_SWIN
    )
    path = tmp_path / "swin.safetensors"
    save_file({f"model.{k}": v.contiguous() for k, v in source.state_dict().items()}, path)
    target = build_model(swin(), 2).backbone
    tables = [f"layers.{i}.blocks.0.attn.relative_position_bias_table" for i in range(4)]
    assert (
        target.state_dict()[tables[0]].shape == (13 * 13, 1) != source.state_dict()[tables[0]].shape
    )
    report = load_backbone_weights(target, path)
    assert report.unexpected == [] and report.missing == [] and report.reshaped == tables
    assert torch.equal(target.patch_embed.proj.weight, source.patch_embed.proj.weight)


def test_missing_weights_and_offline_imagenet_are_clear_errors(tmp_path):
    with pytest.raises(ReidpipeError, match="does not exist"):
        build_model(
            resnet(pretrain_choice="self", pretrained_model_path=str(tmp_path / "x.pth")), 2
        )
    code = (
        "from reidpipe.training.model import build_model; from reidpipe.params import ModelParams\n"
        "build_model(ModelParams(backbone='resnet18', pretrain_choice='imagenet'), 2)"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert run.returncode != 0
    assert "ReidpipeError" in run.stderr and "pretrained_model_path" in run.stderr
