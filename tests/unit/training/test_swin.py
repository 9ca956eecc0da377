"""SOLIDER/TAO Swin: checkpoints in mmseg names load into our timm Swin and compute what SOLIDER's
backbone computes (checked against tests/support/solider_reference.py, written from its definition)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from support.solider_reference import SwinConfig, patch_merge, solider_forward, solider_state
from timm.models.swin_transformer import PatchMerging

from reidpipe.errors import ReidpipeError
from reidpipe.params import ModelParams
from reidpipe.training.model import build_model
from reidpipe.training.pretrained import load_backbone_weights, unfold_to_concat

CFG = SwinConfig()
HEIGHT, WIDTH = 256, 128  # token grids 64x32 ... 8x4: none a multiple of the 7x7 window


def swin_params(**kw) -> ModelParams:
    base = {
        "backbone": "swin_tiny_patch4_window7_224",
        "backbone_kwargs": CFG.timm_kwargs(),
        "pretrain_choice": "",
        "input_height": HEIGHT,
        "input_width": WIDTH,
        "feat_dim": 0,
        "neck_feat": "before",
    }
    return ModelParams(**{**base, **kw})


def solider_backbone(semantic_weight: float = 0.2) -> torch.nn.Module:
    return build_model(swin_params(semantic_weight=semantic_weight), num_classes=5).backbone


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> torch.Tensor:
    """Person-sized JPEGs written to disk and decoded back, normalised as SOLIDER (mean/std 0.5)."""
    folder = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    batch = []
    for i in range(3):
        image = Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x0, y0 = int(rng.integers(0, WIDTH - 20)), int(rng.integers(0, HEIGHT - 40))
            draw.rectangle(
                (x0, y0, x0 + 20 + int(rng.integers(0, 40)), y0 + 40 + int(rng.integers(0, 80))),
                fill=tuple(int(c) for c in rng.integers(0, 256, 3)),
            )
        path = folder / f"{i:04d}_c1s1_000001_00.jpg"
        image.save(path, quality=90)
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
        batch.append(torch.from_numpy(pixels).permute(2, 0, 1))
    return (torch.stack(batch) - 0.5) / 0.5


def save_solider(path, state, wrap: str = "solider") -> None:
    if wrap == "solider":  # checkpoint_tea.pth: the DINO teacher, backbone and head
        teacher = {f"backbone.{k}": v for k, v in state.items()}
        teacher["head.last_layer.weight_g"] = torch.ones(1, 4)
        torch.save({"teacher": teacher}, path)
    else:  # a TAO ReIdentificationNet checkpoint: Lightning state dict of model.base
        torch.save(
            {"state_dict": {f"model.base.{k}": v for k, v in state.items()}, "epoch": 3}, path
        )


@pytest.mark.parametrize("wrap", ["solider", "tao"])
def test_solider_checkpoint_computes_solider_features(tmp_path, images, wrap):
    state = solider_state(CFG)
    path = tmp_path / "checkpoint_tea.pth"
    save_solider(path, state, wrap)
    net = build_model(
        swin_params(pretrain_choice="self", pretrained_model_path=str(path)), 5
    ).eval()
    report = load_backbone_weights(solider_backbone(0.2), path)
    with torch.no_grad():
        ours = net(images)  # the eval feature: feat_dim 0, before the BNNeck = the backbone's
        expected = solider_forward(state, images, CFG, semantic_weight=0.2)
    assert ours.shape == expected.shape == (3, CFG.width(3))
    assert (ours - expected).abs().max() < 1e-4
    assert report.missing == [] and report.fraction == 1.0
    assert report.unexpected == (["head.last_layer.weight_g"] if wrap == "solider" else [])
    assert len(report.reordered) == 3 * (len(CFG.depths) - 1)  # reduction, norm weight and bias
    assert report.identity == []
    assert {"norm0.weight", "norm2.bias", "semantic_embed_w.3.weight"} <= set(report.unused)
    # the semantic embedding matters: another lambda gives SOLIDER's other features, not these
    with torch.no_grad():
        other = solider_forward(state, images, CFG, semantic_weight=0.7)
    assert (other - expected).abs().max() > 1e-2


def test_weights_without_semantic_embedding_leave_it_identity(tmp_path, images):
    state = {k: v for k, v in solider_state(CFG, seed=1).items() if not k.startswith("semantic")}
    path = tmp_path / "swin.pth"
    save_solider(path, state)
    net = solider_backbone(0.2)
    report = load_backbone_weights(net, path)
    assert len(report.identity) == 4 * (len(CFG.depths) - 1) and report.fraction == 1.0
    with torch.no_grad():
        diff = net.eval()(images) - solider_forward(state, images, CFG, semantic_weight=None)
    assert diff.abs().max() < 1e-4


def test_too_few_tensors_is_a_clear_error(tmp_path):
    state = {k: v for k, v in solider_state(CFG).items() if not k.startswith("stages.2.")}
    path = tmp_path / "partial.pth"
    save_solider(path, state)
    with pytest.raises(ReidpipeError, match=r"fills only .*layers\.2\.blocks\.1\.mlp\.fc2\.bias"):
        load_backbone_weights(solider_backbone(), path)


def test_patch_merging_order_matches_unfold():
    state = {
        k.replace("stages.0.downsample.", ""): v
        for k, v in solider_state(CFG).items()
        if k.startswith("stages.0.downsample.")
    }
    x = torch.randn(2, 6, 10, CFG.embed_dim)
    expected, hw = patch_merge(
        x.reshape(2, 60, -1), (6, 10), {f"m.{k}": v for k, v in state.items()}, "m"
    )
    merging = PatchMerging(dim=CFG.embed_dim)
    merging.norm.weight.data = unfold_to_concat(state["norm.weight"])
    merging.norm.bias.data = unfold_to_concat(state["norm.bias"])
    merging.reduction.weight.data = unfold_to_concat(state["reduction.weight"])
    with torch.no_grad():
        ours = merging(x)
    assert hw == (3, 5)
    assert torch.allclose(ours.reshape(2, 15, -1), expected, atol=1e-5)


def neighbour_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """Which tokens of each shifted window may attend, from the definition: the grid is padded to
    whole windows, then rolled by -shift; two tokens of a window may attend iff they lie in the
    padded image exactly as they lie in the window (no wrap-around between them)."""
    hp, wp = -(-height // window) * window, -(-width // window) * window
    rows, cols = torch.meshgrid(torch.arange(hp), torch.arange(wp), indexing="ij")
    origin = torch.stack(
        [(rows + shift) % hp, (cols + shift) % wp], dim=-1
    )  # padded-image position
    here = torch.stack([rows, cols], dim=-1)
    masks = []
    for r in range(0, hp, window):
        for c in range(0, wp, window):
            o = origin[r : r + window, c : c + window].reshape(-1, 2)
            h = here[r : r + window, c : c + window].reshape(-1, 2)
            masks.append(((o[:, None] - o[None]) == (h[:, None] - h[None])).all(-1))
    return torch.stack(masks)


def test_shifted_windows_attend_only_padded_image_neighbours():
    net = solider_backbone()
    grid = (HEIGHT // 4, WIDTH // 4)
    shifted = 0
    for index, stage in enumerate(net.layers):
        size = (grid[0] >> index, grid[1] >> index)
        for number, block in enumerate(stage.blocks):
            assert block.window_size == (7, 7)  # no window shrinking, down to the 8x4 grid
            assert block.shift_size == ((3, 3) if number % 2 else (0, 0))
            if number % 2:
                allowed = block.attn_mask == 0
                assert torch.equal(allowed, neighbour_mask(*size, 7, 3)), (index, number)
                assert set(block.attn_mask.unique().tolist()) == {0.0, -100.0}
                shifted += 1
    assert shifted == len(CFG.depths)
