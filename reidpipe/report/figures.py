"""The report's figures (matplotlib, Agg backend, PNG): CMC curves, sampled matches (and their
attention maps), training."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image, UnidentifiedImageError  # noqa: E402

from reidpipe.errors import ReidpipeError  # noqa: E402
from reidpipe.market import DISTRACTOR_PID  # noqa: E402

RANKING_LABELS = {"plain": "plain", "reranked": "re-ranked"}
MATCH_COLOR = "#1a9641"
ERROR_COLOR = "#d7191c"
QUERY_COLOR = "#2b5fad"
DPI = 110


def _save(fig: plt.Figure, path: Path) -> None:
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)


def cmc_figure(curves: Mapping[str, pd.DataFrame], path: Path) -> None:
    """All archs' CMC curves on one axis: one colour per arch, plain solid, re-ranked dashed."""
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    max_rank = 1
    for index, (arch, cmc) in enumerate(curves.items()):
        color = colors[index % len(colors)]
        for ranking, style in (("plain", "-"), ("reranked", "--")):
            if ranking not in cmc.columns:
                continue
            values = 100.0 * cmc[ranking].to_numpy(dtype=float)
            ax.plot(
                cmc["rank"],
                values,
                style,
                color=color,
                linewidth=1.8,
                drawstyle="steps-post",
                label=f"{arch}, {RANKING_LABELS[ranking]} (R1 {values[0]:.1f}%)",
            )
        max_rank = max(max_rank, int(cmc["rank"].max()))
    ax.set_xlim(1, max_rank)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("rank k")
    ax.set_ylabel("matching rate within the top k (%)")
    ax.set_title("Cumulative matching characteristic (query vs gallery)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    _save(fig, path)


@dataclass
class SampledQuery:
    """One row of the matches figure: a query and its top-ranked gallery items (indices)."""

    path: str
    pid: int
    camid: int
    ap: float
    top: list[int]


TILE_W, TILE_H = 80, 160  # thumbnails are resized to this (Market images are 64 x 128)
BORDER = 5
GAP = 8
QUERY_GAP = 28  # extra space between the query and its ranked list
LABEL_H = 44  # room above each tile for three lines of text
MIN_WIDTH = 760  # pixels: room for the title when top_k is small


def _image_tile(path: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise ReidpipeError(
            f"image {path} (listed in the embeddings CSVs) does not exist; the "
            "matches figure reads the images from disk"
        ) from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ReidpipeError(f"image {path} cannot be read: {exc}") from None


def _framed(image: Image.Image, color: str) -> np.ndarray:
    tile = image.resize((TILE_W, TILE_H), Image.Resampling.BILINEAR)
    rgb = np.array(matplotlib.colors.to_rgb(color)) * 255
    framed = np.empty((TILE_H + 2 * BORDER, TILE_W + 2 * BORDER, 3), dtype=np.uint8)
    framed[:] = rgb.astype(np.uint8)
    framed[BORDER:-BORDER, BORDER:-BORDER] = np.asarray(tile)
    return framed


def matches_figure(
    arch: str,
    ranking: str,
    queries: Sequence[SampledQuery],
    gallery: pd.DataFrame,
    top_k: int,
    path: Path,
) -> None:
    """TAO-style sampled matches: each row a query, then its top-k gallery thumbnails, with
    green borders on true matches and red on errors (distractors are errors)."""
    _rank_rows_figure(
        f"{arch}: sampled queries and their top-{top_k} gallery matches "
        f"({RANKING_LABELS[ranking]} ranking)",
        queries,
        gallery,
        top_k,
        path,
        lambda row, column, image_path: _image_tile(image_path),
    )


def attention_figure(
    title: str,
    queries: Sequence[SampledQuery],
    gallery: pd.DataFrame,
    top_k: int,
    overlays: Sequence[np.ndarray],
    path: Path,
) -> None:
    """The matches figure's rows with each image replaced by its attention overlay:
    ``overlays[row]`` holds the query's and then its ranked gallery images' (H x W x 3 uint8)."""
    _rank_rows_figure(
        title,
        queries,
        gallery,
        top_k,
        path,
        lambda row, column, image_path: Image.fromarray(overlays[row][column]),
    )


TileLabel = tuple[float, float, str, str]  # x, y (pixels of the canvas), text, colour


def _rank_rows_canvas(
    queries: Sequence[SampledQuery],
    gallery: pd.DataFrame,
    top_k: int,
    tile: Callable[[int, int, str], Image.Image],
) -> tuple[np.ndarray, list[TileLabel]]:
    """The framed tiles of every row composed into one RGB image, and the label above each."""
    cell_w, cell_h = TILE_W + 2 * BORDER + GAP, TILE_H + 2 * BORDER + LABEL_H + GAP
    width = QUERY_GAP + (top_k + 1) * cell_w
    height = len(queries) * cell_h
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    labels: list[TileLabel] = []
    g_paths = gallery["path"].tolist()
    g_pids = gallery["pid"].to_numpy()
    g_cams = gallery["camid"].to_numpy()

    def place(row: int, column: int, image_path: str, color: str, text: str) -> None:
        x = column * cell_w + (QUERY_GAP if column else 0)
        y = row * cell_h + LABEL_H
        canvas[y : y + TILE_H + 2 * BORDER, x : x + TILE_W + 2 * BORDER] = _framed(
            tile(row, column, image_path), color
        )
        labels.append((x + BORDER + TILE_W / 2, y - 4, text, color))

    for row, query in enumerate(queries):
        ap = "no true match" if math.isnan(query.ap) else f"AP {100 * query.ap:.1f}%"
        place(row, 0, query.path, QUERY_COLOR, f"query\nid {query.pid} cam {query.camid}\n{ap}")
        for rank, index in enumerate(query.top[:top_k], start=1):
            pid, cam = int(g_pids[index]), int(g_cams[index])
            color = MATCH_COLOR if pid == query.pid else ERROR_COLOR
            label = "distractor" if pid == DISTRACTOR_PID else f"id {pid}"
            place(row, rank, g_paths[index], color, f"rank {rank}\n{label}\ncam {cam}")
    return canvas, labels


def _save_rank_rows(
    title: str, canvas: np.ndarray, labels: Sequence[TileLabel], path: Path
) -> None:
    """The canvas at one pixel per pixel under three title lines (``title`` and the legend)."""
    height, width = canvas.shape[:2]
    header = 0.75  # inches for the three title lines
    fig_w = max(width, MIN_WIDTH)
    fig = plt.figure(figsize=(fig_w / DPI, height / DPI + header))
    ax = fig.add_axes((0, 0, width / fig_w, height / (height + header * DPI)))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    for x, y, text, color in labels:
        ax.text(x, y, text, ha="center", va="bottom", fontsize=7.5, color=color, linespacing=1.1)
    fig.text(
        0.01,
        1 - 0.1 / fig.get_figheight(),
        (
            f"{title}\n"
            "green border = same identity (true match); red border = wrong identity or distractor\n"
            "not shown: junk images and same-camera images of the query's identity (excluded by the "
            "protocol)"
        ),
        ha="left",
        va="top",
        fontsize=9,
    )
    fig.savefig(path, dpi=DPI, facecolor="white")
    plt.close(fig)


def _rank_rows_figure(
    title: str,
    queries: Sequence[SampledQuery],
    gallery: pd.DataFrame,
    top_k: int,
    path: Path,
    tile: Callable[[int, int, str], Image.Image],
) -> None:
    """Each row a query, then its top-k gallery tiles (``tile(row, column, image path)``, column
    0 the query), with green borders on true matches and red on errors.

    The tiles are composed into one image (drawn once) rather than one axis per thumbnail,
    which keeps the figure fast to draw at 8 x 11 tiles."""
    canvas, labels = _rank_rows_canvas(queries, gallery, top_k, tile)
    _save_rank_rows(title, canvas, labels, path)


LOSS_COLUMNS = ("loss", "id_loss", "triplet_loss", "center_loss")
LOSS_LABELS = {
    "loss": "total",
    "id_loss": "ID (cross-entropy)",
    "triplet_loss": "triplet",
    "center_loss": "center",
}


def training_figure(arch: str, log: pd.DataFrame, path: Path) -> None:
    """Loss terms, learning rate and validation mAP/R1 per epoch from a train_log.csv."""
    fig, (loss_ax, lr_ax, val_ax) = plt.subplots(1, 3, figsize=(15, 4))
    epochs = log["epoch"].to_numpy()
    for column in LOSS_COLUMNS:
        values = log[column].to_numpy(dtype=float)
        # A loss term the recipe does not use is logged as 0 (or NaN) every epoch: leave it out.
        if np.all(np.isnan(values) | (values == 0)):
            continue
        loss_ax.plot(epochs, values, marker=".", label=LOSS_LABELS[column])
    loss_ax.set_title("Training loss (epoch mean)")
    loss_ax.set_ylabel("loss")
    loss_ax.legend(fontsize=8)
    lr = log["lr"].to_numpy(dtype=float)
    lr_ax.plot(epochs, lr, marker=".", color="#555555", drawstyle="steps-mid")
    lr_ax.set_title("Learning rate (first parameter group)")
    lr_ax.set_ylabel("learning rate")
    if np.nanmin(lr, initial=np.inf) > 0:
        lr_ax.set_yscale("log")  # warm-up and step decay span orders of magnitude
        lr_ax.set_ylabel("learning rate (log scale)")
    validated = log.dropna(subset=["val_mAP", "val_rank1"], how="all")
    if len(validated):
        for column, label in (("val_mAP", "mAP"), ("val_rank1", "rank-1")):
            val_ax.plot(
                validated["epoch"], 100.0 * validated[column].astype(float), marker="o", label=label
            )
        val_ax.set_ylim(0, 100)
        val_ax.legend(fontsize=8)
    else:
        val_ax.text(
            0.5,
            0.5,
            "no validation epochs logged",
            ha="center",
            va="center",
            transform=val_ax.transAxes,
        )
    val_ax.set_title("Validation (held-out train identities)")
    val_ax.set_ylabel("validation metric (%)")
    for ax in (loss_ax, lr_ax, val_ax):
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.set_xlim(0.5, max(1, int(epochs.max()) if len(epochs) else 1) + 0.5)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(f"{arch}: training curves", fontsize=11)
    fig.tight_layout()
    _save(fig, path)


GENUINE_COLOR = MATCH_COLOR
IMPOSTOR_COLOR = ERROR_COLOR


def verification_figure(arch: str, verification: Mapping[str, object], path: Path) -> None:
    """verification.json's genuine and impostor distance histograms, each as the share of its
    pairs per bin (log scale: the thresholds sit in the impostors' thin lower tail), with the
    threshold of each target FAR marked."""
    edges = np.asarray(verification["histogram_edges"], dtype=float)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key, label, color in (
        ("genuine_histogram", "genuine pairs (same id, other camera)", GENUINE_COLOR),
        ("impostor_histogram", "impostor pairs (other id)", IMPOSTOR_COLOR),
    ):
        counts = np.asarray(verification[key], dtype=float)
        total = counts.sum()
        if not total:
            continue
        ax.stairs(
            counts / total, edges, color=color, linewidth=1.6, label=f"{label}, {int(total):,}"
        )
    styles = (":", "--", "-.")
    for index, point in enumerate(verification["operating_points"]):  # type: ignore[arg-type]
        if point.get("threshold") is None:
            continue
        tar = point.get("tar")
        ax.axvline(
            point["threshold"],
            color="#333333",
            linestyle=styles[index % len(styles)],
            linewidth=1.2,
            label=f"threshold at FAR {point['far']:g}: "
            f"{point['threshold']:.3f}" + ("" if tar is None else f" (TAR {100 * tar:.1f}%)"),
        )
    ax.set_yscale("log")
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel(f"{verification.get('distance', '')} distance".strip())
    ax.set_ylabel("share of the pairs per bin (log scale)")
    ax.set_title(
        f"{arch}: genuine and impostor distances; a pair is accepted at distance <= threshold",
        fontsize=10,
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower center")
    _save(fig, path)
