"""Market-1501 layout and file names: the one place that knows them (the dataset registry,
``dataset_registry``, scans them).

Names look like ``PPPP_cCsS_FFFFFF_BB.jpg``: person id (``-1`` junk, ``0000`` distractor), camera,
sequence, frame, box index. Parsing is anchored on the whole name so that ``-1_c1...`` is junk
(TAO's ``(\\d+)_c(\\d+)`` reads it as person 1) and any stray file is reported, not guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ARCHIVE_NAME = "Market-1501-v15.09.15.zip"
TOP_FOLDER = "Market-1501-v15.09.15"
ARCHIVE_MD5 = "65005ab7d12ec1c44de4eeafe813e68a"
# The mirror the torchreid and fast-reid loaders use; data.urls replaces the list.
MIRRORS = ("http://188.138.127.15:81/Datasets/Market-1501-v15.09.15.zip",)

TRAIN_DIR = "bounding_box_train"
GALLERY_DIR = "bounding_box_test"
QUERY_DIR = "query"
SPLIT_DIRS = {"train": TRAIN_DIR, "query": QUERY_DIR, "gallery": GALLERY_DIR}

JUNK_PID = -1
DISTRACTOR_PID = 0
NUM_CAMERAS = 6
IMAGE_WIDTH = 64
IMAGE_HEIGHT = 128

NAME_PATTERN = re.compile(r"^([-\d]+)_c(\d)s(\d)_(\d+)_(\d+)\.jpg$")

# Exact statistics of the released dataset (as its loaders record them), checked by
# ``validate --strict``.
MARKET1501_STATS = {
    "train": {"images": 12936, "ids": 751},
    "query": {"images": 3368, "ids": 750},
    "gallery": {"images": 19732, "junk": 3819, "distractors": 2793},
}


@dataclass(frozen=True)
class MarketName:
    pid: int
    camid: int
    seq: int
    frame: int
    box: int


def parse_name(name: str) -> MarketName | None:
    """Parse a Market-1501 file name; ``None`` when it does not follow the pattern."""
    match = NAME_PATTERN.match(name)
    if match is None:
        return None
    pid_text = match.group(1)
    if pid_text != "-1" and not pid_text.isdigit():
        return None
    return MarketName(
        pid=int(pid_text),
        camid=int(match.group(2)),
        seq=int(match.group(3)),
        frame=int(match.group(4)),
        box=int(match.group(5)),
    )


def format_name(pid: int, camid: int, seq: int, frame: int, box: int) -> str:
    pid_text = "-1" if pid == JUNK_PID else f"{pid:04d}"
    return f"{pid_text}_c{camid}s{seq}_{frame:06d}_{box:02d}.jpg"


# Files operating systems drop into image folders; listed in reports, never parsed as images.
OS_METADATA_FILES = frozenset({"Thumbs.db", ".DS_Store", "desktop.ini"})
