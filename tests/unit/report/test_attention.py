"""Grad-CAM of the retrieval similarity (reidpipe.report.attention): the formula against a separate
autograd computation on NCHW and NHWC feature maps, real ResNet and Swin backbones loaded from a
trained-model file, and a constructed pair whose shared region is the one the map highlights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from reidpipe.filenames import MODEL_FILE
from reidpipe.params import ArchConfig, DatasetParams, ExtractParams, ModelParams, TrainParams
from reidpipe.report.attention import AttentionModel, overlay, retrieval_cams
from reidpipe.training.model import arch_to_dict, build_model


class FeatureMaps(nn.Module):
    """A stem and a last stage with tanh (negative values for the ReLU to clip); NHWC out when
    ``layout`` says so, as Swin's last stage gives."""

    def __init__(self, layout: str) -> None:
        super().__init__()
        self.layout = layout
        self.stem = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.last = nn.Conv2d(6, 5, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = torch.tanh(self.last(torch.relu(self.stem(x))))
        return maps.permute(0, 2, 3, 1) if self.layout == "NHWC" else maps


def pool(maps: torch.Tensor, layout: str) -> torch.Tensor:
    return maps.mean(dim=(1, 2)) if layout == "NHWC" else maps.mean(dim=(2, 3))


class ToyReid(nn.Module):
    def __init__(self, layout: str) -> None:
        super().__init__()
        self.layout = layout
        self.maps = FeatureMaps(layout)
        self.head = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(pool(self.maps(x), self.layout))


def hand_cam(net: ToyReid, images: torch.Tensor, distance: str) -> torch.Tensor:
    """Selvaraju et al.'s formula written out per image: the query's target is its similarity to
    the top-1 (images[1]), gallery image i's its similarity to the query; the gradient of each
    image's own target alone, by autograd on the feature maps."""
    cams = []
    for index in range(len(images)):
        maps = net.maps(images).detach().requires_grad_(True)
        emb = F.normalize(net.head(pool(maps, net.layout)), dim=1)
        other = 1 if index == 0 else 0
        if distance == "cosine":
            score = torch.dot(emb[index], emb[other].detach())
        else:
            score = -torch.linalg.vector_norm(emb[index] - emb[other].detach())
        (grad,) = torch.autograd.grad(score, maps)
        a, g = maps[index].detach(), grad[index]
        if net.layout == "NCHW":  # to H x W x C
            a, g = a.permute(1, 2, 0), g.permute(1, 2, 0)
        alpha = g.mean(dim=(0, 1))  # one weight per channel k
        cams.append(torch.clamp(torch.einsum("hwk,k->hw", a, alpha), min=0))
    return torch.stack(cams)


def min_max(maps: torch.Tensor) -> torch.Tensor:
    up = F.interpolate(maps[:, None], size=(16, 12), mode="bilinear", align_corners=False)[:, 0]
    low = up.amin(dim=(1, 2), keepdim=True)
    return (up - low) / (up.amax(dim=(1, 2), keepdim=True) - low)


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_cam_is_the_grad_cam_formula(layout: str, distance: str) -> None:
    torch.manual_seed(0)
    net = ToyReid(layout).eval()
    images = torch.randn(4, 3, 16, 12)  # the query, then its top-3 gallery images
    got = retrieval_cams(net, net.maps, layout, images[0], images[1:], distance)
    expected = hand_cam(net, images, distance)
    assert (expected == 0).any() and (expected > 0).any()  # ReLU has something to clip
    np.testing.assert_allclose(got, min_max(expected).numpy(), atol=1e-5)


class ColourChannels(nn.Module):
    """Feature maps = the image's colour channels (a 1 x 1 identity convolution and ReLU), the
    embedding their spatial mean: a model whose CAM can be worked out by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.maps = nn.Sequential(nn.Conv2d(3, 3, 1, bias=False), nn.ReLU())
        with torch.no_grad():
            self.maps[0].weight.copy_(torch.eye(3)[:, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maps(x).mean(dim=(2, 3))


RED, GREY, BLACK = (1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.0, 0.0, 0.0)


def picture(background: tuple, corner: tuple | None) -> torch.Tensor:
    image = torch.tensor(background)[:, None, None].repeat(1, 16, 8)
    if corner is not None:
        image[:, :4, :4] = torch.tensor(corner)[:, None, None]  # the top-left 1/8
    return image


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_map_highlights_the_region_that_drives_the_similarity(distance: str) -> None:
    net = ColourChannels().eval()
    corner = np.zeros((16, 8), dtype=bool)
    corner[:4, :4] = True
    query = picture(GREY, RED)
    # The match shares only the red corner: that corner is what makes them similar.
    shared = retrieval_cams(net, net.maps, "NCHW", query, picture(BLACK, RED)[None], distance)[0]
    assert shared[corner].min() == 1.0 and shared[~corner].max() == 0.0
    # The match is the query without its red corner: the corner is what lowers the similarity.
    differs = retrieval_cams(net, net.maps, "NCHW", query, picture(GREY, None)[None], distance)[0]
    assert differs[corner].max() == 0.0 and differs[~corner].min() == 1.0


def write_person(path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (48, 24, 3), dtype=np.uint8)).save(path)


@pytest.mark.parametrize(
    "backbone,kwargs,height,layout",
    [
        ("resnet18", {}, 64, "NCHW"),
        (
            "swin_tiny_patch4_window7_224",
            {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2]},
            64,
            "NHWC",
        ),
    ],
)
def test_trained_model_maps_have_the_image_size(
    tmp_path, backbone: str, kwargs: dict, height: int, layout: str
) -> None:
    width = height // 2
    model = ModelParams(
        backbone=backbone,
        backbone_kwargs=kwargs,
        pretrain_choice="",
        input_height=height,
        input_width=width,
        feat_dim=0,
    )
    arch = ArchConfig(name="tiny", model=model, dataset=DatasetParams(), train=TrainParams())
    torch.manual_seed(0)
    net = build_model(model, num_classes=3, weights=False)
    torch.save(
        {"arch": arch_to_dict(arch), "num_classes": 3, "state_dict": net.state_dict()},
        tmp_path / MODEL_FILE,
    )
    paths = [tmp_path / f"{i}.jpg" for i in range(3)]
    for seed, path in enumerate(paths):
        write_person(path, seed)
    attention = AttentionModel.load(tmp_path, ExtractParams(), "cosine")
    assert attention.layout == layout
    maps = attention.maps(paths[0], paths[1:])
    assert maps.shape == (3, height, width) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0 and (maps.max(axis=(1, 2)) == 1.0).all()
    blended = overlay(attention.shown_image(paths[0]), maps[0])
    assert blended.shape == (height, width, 3) and blended.dtype == np.uint8
