"""Grad-CAM attention maps of a re-identification embedding, for the report's rank lists.

A re-id model has no class score, so the target is the retrieval score (the usual way CAM is
applied to retrieval models): the similarity between the query's embedding and a gallery image's,
under the ranking's distance: ``q . g`` for cosine (features L2-normalised, as extraction does;
distance = 1 - that), ``-||q - g||`` for Euclidean. The query's map is for its similarity to its
top-1 match; each gallery image's map is for its similarity to the query. The embedding is the
network's plain eval output, without the mirrored image's (``model.with_flip_feature``), so the
map explains one forward pass. Where the report shows the re-ranked list, the maps are of the same
plain similarity to the images of that list (re-ranking's k-reciprocal distance has no gradient).

Grad-CAM as Selvaraju et al. define it, on the feature maps ``A`` of the backbone's last stage
(ResNet's ``layer4``, B x C x H x W; Swin's last stage, B x H x W x C): ``alpha_k`` is the spatial
mean of ``dy/dA_k`` and the map is ``ReLU(sum_k alpha_k A_k)``, upsampled bilinearly to the input
size and scaled to [0, 1] by its minimum and maximum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.models.swin_transformer import SwinTransformer
from torch import nn

from reidpipe.errors import ReidpipeError
from reidpipe.filenames import FIGURES_DIR, MODEL_FILE
from reidpipe.images import decode_file
from reidpipe.input_contract import Preprocess, load_image
from reidpipe.params import ExtractParams
from reidpipe.report import figures as report_figures
from reidpipe.report.document import Block, Figure, Heading, Paragraph
from reidpipe.report.readers import ArchResults
from reidpipe.training.model import load_trained_model

Layout = Literal["NCHW", "NHWC"]
COLORMAP = "jet"
OVERLAY_ALPHA = 0.5  # share of the heat map in the blend with the image


def last_stage(backbone: nn.Module) -> tuple[nn.Module, Layout]:
    """The module whose output is the backbone's last-stage feature maps, and their layout."""
    if hasattr(backbone, "layer4"):
        return backbone.layer4, "NCHW"
    if isinstance(backbone, SwinTransformer):
        # reidpipe's Swin calls each stage's downsample and blocks separately (SOLIDER's semantic
        # embedding sits between them), so the stage's blocks are what runs last
        return backbone.layers[-1].blocks, "NHWC"
    raise ReidpipeError(
        f"attention maps: backbone {type(backbone).__name__} has no known last "
        "stage (ResNet's layer4 or a Swin's last stage)"
    )


def similarity(query: torch.Tensor, gallery: torch.Tensor, distance: str) -> torch.Tensor:
    """Row-wise similarity of L2-normalised embeddings under the ranking's distance."""
    if distance == "cosine":
        return (query * gallery).sum(dim=-1)
    if distance == "euclidean":
        return -(query - gallery).norm(dim=-1)
    raise ReidpipeError(f"evaluate.distance {distance!r}: expected cosine or euclidean")


def grad_cam(activations: torch.Tensor, gradients: torch.Tensor, layout: Layout) -> torch.Tensor:
    """``ReLU(sum_k alpha_k A_k)`` with ``alpha_k`` the spatial mean of the gradient: B x H x W."""
    if layout == "NHWC":
        activations, gradients = activations.permute(0, 3, 1, 2), gradients.permute(0, 3, 1, 2)
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    return F.relu((weights * activations).sum(dim=1))


def to_image_size(cams: torch.Tensor, height: int, width: int) -> np.ndarray:
    """B x h x w maps upsampled bilinearly to ``height`` x ``width`` and scaled to [0, 1] each
    (a map without any positive value stays all 0)."""
    maps = F.interpolate(cams[:, None], size=(height, width), mode="bilinear", align_corners=False)[
        :, 0
    ]
    low = maps.amin(dim=(1, 2), keepdim=True)
    span = maps.amax(dim=(1, 2), keepdim=True) - low
    scaled = torch.where(span > 0, (maps - low) / span.clamp_min(1e-12), torch.zeros_like(maps))
    return scaled.detach().cpu().numpy().astype(np.float32)


def retrieval_cams(
    module: nn.Module,
    stage: nn.Module,
    layout: Layout,
    query: torch.Tensor,
    gallery: torch.Tensor,
    distance: str,
) -> np.ndarray:
    """Maps of a query (3 x H x W) and its ranked gallery images (k x 3 x H x W, top-1 first):
    row 0 for the query's similarity to the top-1, row i for gallery image i-1's similarity to the
    query; (1 + k) x H x W in [0, 1].

    One forward and one backward: the target sums the query's score against the detached top-1
    and each gallery score against the detached query, so each image's gradient is that of its
    own target (eval mode: no image's output depends on another's)."""
    captured: list[torch.Tensor] = []
    handle = stage.register_forward_hook(lambda _module, _inputs, output: captured.append(output))
    try:
        with torch.enable_grad():
            batch = torch.cat([query[None], gallery]).requires_grad_(True)
            embeddings = F.normalize(module(batch).float(), dim=1)
            q, g = embeddings[:1], embeddings[1:]
            target = (
                similarity(q, g[:1].detach(), distance).sum()
                + similarity(q.detach(), g, distance).sum()
            )
            (gradients,) = torch.autograd.grad(target, captured[-1])
    finally:
        handle.remove()
    cams = grad_cam(captured[-1].detach(), gradients, layout)
    return to_image_size(cams, batch.shape[2], batch.shape[3])


def overlay(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """The map as a heat map (``COLORMAP``) blended into an H x W x 3 uint8 image of its size."""
    heat = matplotlib.colormaps[COLORMAP](cam)[..., :3]
    blend = (1 - OVERLAY_ALPHA) * image.astype(np.float32) / 255.0 + OVERLAY_ALPHA * heat
    return np.clip(np.rint(blend * 255.0), 0, 255).astype(np.uint8)


@dataclass
class AttentionModel:
    """A trained model loaded as extraction loads it (its own input contract), on the CPU in
    eval mode, with its last stage found."""

    module: nn.Module
    stage: nn.Module
    layout: Layout
    pre: Preprocess
    distance: str

    @classmethod
    def load(cls, model_dir: str | Path, extract: ExtractParams, distance: str) -> AttentionModel:
        module, arch = load_trained_model(Path(model_dir))
        module = module.to("cpu").eval()
        stage, layout = last_stage(module.backbone)
        return cls(module, stage, layout, Preprocess.from_params(arch, extract), distance)

    def shown_image(self, path: str | Path) -> np.ndarray:
        """The image as the model sees it (resized to its input), RGB uint8, for the overlay."""
        with decode_file(path) as image:
            resized = image.convert("RGB").resize(
                (self.pre.width, self.pre.height), Image.Resampling.BILINEAR
            )
            return np.asarray(resized, dtype=np.uint8)

    def maps(self, query_path: str | Path, gallery_paths: Sequence[str | Path]) -> np.ndarray:
        """``retrieval_cams`` of a query and its ranked gallery images (top-1 first)."""
        if not gallery_paths:
            raise ReidpipeError(f"attention map of {query_path}: no ranked gallery image")
        query = torch.from_numpy(load_image(query_path, self.pre))
        gallery = torch.from_numpy(np.stack([load_image(p, self.pre) for p in gallery_paths]))
        return retrieval_cams(self.module, self.stage, self.layout, query, gallery, self.distance)


CAPTION = (
    "Grad-CAM of the last backbone stage (red = drives the similarity most): the query's map "
    "is for its similarity to its top-1, each gallery image's for its similarity to the "
    "query"
)


def attention_model(
    arch: ArchResults, models_dir: Path, extract: ExtractParams
) -> AttentionModel | None:
    """The arch's trained model for its maps, under the distance its ranking used; None when
    ``models_dir`` has none (the report then says so)."""
    if not (models_dir / arch.name / MODEL_FILE).exists():
        return None
    distance = arch.metrics["plain"].get("distance")
    if distance is None:
        raise ReidpipeError(
            f"{arch.name}'s metrics.json has no plain.distance (the ranking's "
            "distance, which the attention maps explain); re-run `reidpipe evaluate`"
        )
    return AttentionModel.load(models_dir / arch.name, extract, str(distance))


def attention_blocks(
    arch: ArchResults,
    model: AttentionModel | None,
    models_dir: Path,
    queries: Sequence[report_figures.SampledQuery],
    top_k: int,
    which: str,
    out_dir: Path,
) -> list[Block]:
    """A heading and a figure of ``queries`` (``which``: the figure's name, e.g. sampled) with
    each image's map, in the rank-list layout of the matches figure."""
    heading = Heading(3, f"Attention maps: {which} queries")
    if model is None:
        return [
            heading,
            Paragraph(
                f"No trained model (`{models_dir / arch.name / MODEL_FILE}`): no attention maps."
            ),
        ]
    queries = [q for q in queries if q.top]  # a query needs a top-1 for its target
    paths = arch.gallery["path"].tolist()
    overlays = []
    for query in queries:
        ranked = [paths[i] for i in query.top[:top_k]]
        maps = model.maps(query.path, ranked)
        overlays.append(
            [overlay(model.shown_image(p), cam) for p, cam in zip([query.path, *ranked], maps)]
        )
    file = f"{FIGURES_DIR}/{arch.name}_attention_{which}.png"
    report_figures.attention_figure(
        f"{arch.name}: attention maps of {which} queries and their top-{top_k} gallery images "
        f"({report_figures.RANKING_LABELS[arch.ranking]} ranking)",
        queries,
        arch.gallery,
        max(top_k, 1),
        overlays,
        out_dir / file,
    )
    return [heading, Figure(file, f"{arch.name}: {len(queries)} {which} queries. {CAPTION}")]
