"""Tiny Market-1501-layout datasets of real JPEG files, built per test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from reidpipe import market


def write_jpeg(path: Path, seed: int, size: tuple[int, int] = (64, 128)) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, "JPEG", quality=90)
    return path


def make_tiny_market(root: Path, train_ids: int = 6, test_ids: int = 4) -> Path:
    """Train ids 1..train_ids over 3 cameras (2 images each); test ids with query c1, gallery c2/c3,
    one junk and one distractor gallery image."""
    seed = 0
    for pid in range(1, train_ids + 1):
        for cam in (1, 2, 3):
            for frame in (1, 2):
                seed += 1
                name = market.format_name(pid, cam, 1, 100 * cam + frame, 1)
                write_jpeg(root / market.TRAIN_DIR / name, seed)
    for pid in range(train_ids + 1, train_ids + test_ids + 1):
        seed += 1
        write_jpeg(root / market.QUERY_DIR / market.format_name(pid, 1, 1, 10, 1), seed)
        for cam in (2, 3):
            seed += 1
            write_jpeg(root / market.GALLERY_DIR / market.format_name(pid, cam, 1, 20, 1), seed)
    write_jpeg(
        root / market.GALLERY_DIR / market.format_name(market.JUNK_PID, 2, 1, 30, 1), seed + 1
    )
    write_jpeg(
        root / market.GALLERY_DIR / market.format_name(market.DISTRACTOR_PID, 3, 1, 31, 1), seed + 2
    )
    return root
