"""The dataset registry: every source reidpipe reads, its layout, file names and statistics.

One table (``SOURCES``) holds what is fixed about each dataset: folder layout, file-name parser,
archive name and checksum, mirrors, how to obtain it, and the official statistics that
``validate --strict`` demands. ``dataset_source`` adds the per-run choices (CUHK03's variant,
custom folder names, the synthetic dataset's layout) and gives download, validate, split and
extract one object to scan a dataset with.

Identity conventions, the same for every source: pid ``-1`` is junk (dropped at evaluation), pid
``0`` a distractor (a negative for every query), real identities are >= 1. Sources that number
people from 0 (MSMT17) are shifted by one; MSMT17 numbers its train and test people separately,
so its test identities are moved to ``MSMT17_TEST_PID_BASE + 1`` and up to keep the two apart.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from reidpipe import market
from reidpipe.errors import ReidpipeError

SPLITS = ("train", "query", "gallery")
Split = Literal["train", "query", "gallery"]

# Market-1501's folder names, shared by DukeMTMC-reID, each CUHK03-NP variant and custom data.
MARKET_DIRS = market.SPLIT_DIRS
JUNK_PID = market.JUNK_PID
DISTRACTOR_PID = market.DISTRACTOR_PID
MSMT17_TEST_PID_BASE = 10000
CUHK03_VARIANTS = ("labeled", "detected")
# MSMT17 v1 and v2 differ only in the image folder names.
MSMT17_DIRS = {"MSMT17_V1": ("train", "test"), "MSMT17_V2": ("mask_train_v2", "mask_test_v2")}
MSMT17_LISTS = {
    "train": ("list_train.txt", "list_val.txt"),
    "query": ("list_query.txt",),
    "gallery": ("list_gallery.txt",),
}


@dataclass(frozen=True)
class ImageName:
    """What a file name (or list entry) says about one image."""

    pid: int
    camid: int
    seq: int = 0
    frame: int = 0


@dataclass(frozen=True)
class SplitScan:
    """The parsed images of one split, plus what could not be parsed or found."""

    images: list[tuple[Path, ImageName]]
    misnamed: list[Path]
    os_metadata: list[Path]
    missing: list[Path] = field(default_factory=list)  # listed in an index file but absent


# ------------------------------------------------------------------------------ name parsers

_DUKE = re.compile(r"^(\d+)_c(\d)_f(\d+)\.jpg$")
_CUHK03 = re.compile(r"^(\d+)_c([12])_(\d+)\.png$")
_CUSTOM = re.compile(
    r"^(-1|\d+)_c(\d+)(?:s(\d+))?(?:_(\d+))?(?:_[^/\\]*)?\.(?:jpe?g|png|bmp)$", re.IGNORECASE
)
_MSMT17 = re.compile(r"^(\d+)_(\d+)_(\d+)_([0-9a-z]+)_(\d+)_(\d+)\.jpg$")


def parse_market(name: str) -> ImageName | None:
    """``PPPP_cCsS_FFFFFF_BB.jpg`` (``market.parse_name``; the box index is not needed)."""
    parsed = market.parse_name(name)
    return None if parsed is None else ImageName(parsed.pid, parsed.camid, parsed.seq, parsed.frame)


def parse_duke(name: str) -> ImageName | None:
    """``0001_c2_f0046182.jpg``: person, camera, frame."""
    m = _DUKE.match(name)
    return None if m is None else ImageName(int(m[1]), int(m[2]), 0, int(m[3]))


def parse_cuhk03(name: str) -> ImageName | None:
    """``0001_c1_1.png``: person, camera of the pair (1 or 2), image index."""
    m = _CUHK03.match(name)
    return None if m is None else ImageName(int(m[1]), int(m[2]), 0, int(m[3]))


def parse_custom(name: str) -> ImageName | None:
    """Market names, or any ``PID_cCAM[...].jpg/png`` (what TAO accepts), anchored at the start."""
    return parse_market(name) or _parse_custom(name)


def _parse_custom(name: str) -> ImageName | None:
    m = _CUSTOM.match(name)
    if m is None:
        return None
    return ImageName(int(m[1]), int(m[2]), int(m[3] or 0), int(m[4] or 0))


def parse_msmt17(name: str) -> tuple[int, ImageName] | None:
    """``0000_000_01_0303morning_0015_0.jpg`` -> (the file's own person number, camera 01, frame);
    the protocol's pid comes from the list file."""
    m = _MSMT17.match(name)
    return None if m is None else (int(m[1]), ImageName(0, int(m[3]), 0, int(m[5])))


# ---------------------------------------------------------------------------------- layouts


def _scan_folder(folder: Path, parse: Callable[[str], ImageName | None]) -> SplitScan:
    images, misnamed, metadata = [], [], []
    for path in sorted(folder.iterdir()):
        if path.name in market.OS_METADATA_FILES:
            metadata.append(path)
            continue
        # Not only regular files: a directory, broken link or link loop under an image name is
        # an image that cannot be read, and is named as such where it is decoded.
        parsed = parse(path.name)
        if parsed is None:
            misnamed.append(path)
        else:
            images.append((path, parsed))
    return SplitScan(images, misnamed, metadata)


def _msmt17_version(root: Path) -> tuple[str, str] | None:
    for train_dir, test_dir in MSMT17_DIRS.values():
        if (root / train_dir).is_dir() and (root / test_dir).is_dir():
            return train_dir, test_dir
    return None


def _scan_msmt17(root: Path, split: str) -> SplitScan:
    """Read the split's list files (``rel/path.jpg label`` lines); train merges train and val."""
    version = _msmt17_version(root)
    if version is None:
        raise ReidpipeError(
            f"{root} is not an MSMT17 folder: expected train/ and test/ (v1) or "
            "mask_train_v2/ and mask_test_v2/ (v2)"
        )
    folder = root / (version[0] if split == "train" else version[1])
    base = 1 if split == "train" else MSMT17_TEST_PID_BASE + 1
    images, misnamed, missing = [], [], []
    for list_name in MSMT17_LISTS[split]:
        list_path = root / list_name
        try:
            lines = list_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise ReidpipeError(f"MSMT17 list file {list_path} does not exist") from None
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            fields = line.split()
            parsed = parse_msmt17(Path(fields[0]).name) if len(fields) == 2 else None
            if parsed is None or not fields[1].isdigit() or parsed[0] != int(fields[1]):
                misnamed.append(Path(f"{list_path}:{number}"))
                continue
            path = folder / fields[0]
            if not path.is_file():
                missing.append(path)
                continue
            name = parsed[1]
            images.append(
                (path, ImageName(base + int(fields[1]), name.camid, name.seq, name.frame))
            )
    return SplitScan(images, misnamed, [], missing)


# ------------------------------------------------------------------------------ the registry


@dataclass(frozen=True)
class SourceSpec:
    """What is fixed about one dataset."""

    name: str
    title: str
    layout: Literal["folders", "msmt17", "cuhk03"]
    name_pattern: str
    parse: Callable[[str], ImageName | None] | None
    folder: str  # its top folder, the default dataset_dir under data/
    archive_name: str = ""
    archive_md5: str = ""  # "" when no checksum is published
    urls: tuple[str, ...] = ()
    obtain: str = ""  # how to get it when no mirror works
    stats: Mapping[str, Mapping[str, int]] | None = None  # per split, for --strict
    cameras: int = 0  # camera count, for --strict
    image_size: tuple[int, int] | None = None  # (W, H) when fixed, for --strict


DUKEMTMC_STATS = {
    "train": {"images": 16522, "ids": 702},
    "query": {"images": 2228, "ids": 702},
    "gallery": {"images": 17661, "ids": 1110},
}
MSMT17_STATS = {
    "train": {"images": 32621, "ids": 1041},
    "query": {"images": 11659, "ids": 3060},
    "gallery": {"images": 82161, "ids": 3060},
}
CUHK03_STATS = {
    "labeled": {
        "train": {"images": 7368, "ids": 767},
        "query": {"images": 1400, "ids": 700},
        "gallery": {"images": 5328, "ids": 700},
    },
    "detected": {
        "train": {"images": 7365, "ids": 767},
        "query": {"images": 1400, "ids": 700},
        "gallery": {"images": 5332, "ids": 700},
    },
}

SOURCES: dict[str, SourceSpec] = {
    spec.name: spec
    for spec in (
        SourceSpec(
            "market1501",
            "Market-1501",
            "folders",
            "PPPP_cCsS_FFFFFF_BB.jpg",
            parse_market,
            market.TOP_FOLDER,
            market.ARCHIVE_NAME,
            market.ARCHIVE_MD5,
            market.MIRRORS,
            "Market-1501 is public (Zheng et al., ICCV 2015); the mirrors in data.urls serve it",
            market.MARKET1501_STATS,
            market.NUM_CAMERAS,
            (market.IMAGE_WIDTH, market.IMAGE_HEIGHT),
        ),
        SourceSpec(
            "dukemtmc",
            "DukeMTMC-reID",
            "folders",
            "PPPP_cC_fFFFFFFF.jpg",
            parse_duke,
            "DukeMTMC-reID",
            "DukeMTMC-reID.zip",
            obtain="DukeMTMC-reID was withdrawn by its authors in 2019 and has no official download; "
            "use a copy you already hold",
            stats=DUKEMTMC_STATS,
            cameras=8,
        ),
        SourceSpec(
            "msmt17",
            "MSMT17",
            "msmt17",
            "list entries PPPP/PPPP_NNN_CC_DDDDtime_FFFF_N.jpg PID",
            None,
            "MSMT17_V1",
            "MSMT17_V1.zip",
            obtain="MSMT17 is distributed by its authors on request (Wei et al., CVPR 2018: sign "
            "their release agreement); v1 (train/, test/) and v2 (mask_train_v2/, "
            "mask_test_v2/) both work",
            stats=MSMT17_STATS,
            cameras=15,
        ),
        SourceSpec(
            "cuhk03",
            "CUHK03-NP",
            "cuhk03",
            "PPPP_cC_N.png",
            parse_cuhk03,
            "cuhk03-np",
            "cuhk03-np.zip",
            obtain="CUHK03-NP (the 767/700 protocol of Zhong et al., CVPR 2017) is linked from "
            "github.com/zhunzhong07/person-re-ranking (CUHK03-NP) through cloud drives only",
            cameras=2,
        ),
        SourceSpec(
            "custom",
            "custom",
            "folders",
            "PID_cCAM[...].jpg/png",
            parse_custom,
            "custom",
            obtain="a custom dataset is your own folder: put it at data.dataset_dir in Market-1501 "
            "layout (or name TAO's three folders in data.split_dirs)",
        ),
        SourceSpec(
            "synthetic",
            "synthetic",
            "folders",
            "(the layout's names)",
            None,
            "synthetic-market",
            obtain="the synthetic dataset is generated (`reidpipe synth`)",
        ),
    )
}
SOURCE_NAMES = tuple(SOURCES)
SYNTH_LAYOUTS = ("market1501", "dukemtmc", "msmt17", "cuhk03", "custom")
# The folders the synthetic custom layout is written with: TAO's three folders, not Market's.
CUSTOM_SYNTH_DIRS = {"train": "train", "query": "query", "gallery": "test"}


def source_spec(name: str) -> SourceSpec:
    if name not in SOURCES:
        raise ReidpipeError(
            f"unknown dataset source {name!r}; expected one of {', '.join(SOURCE_NAMES)}"
        )
    return SOURCES[name]


@dataclass(frozen=True)
class DatasetSource:
    """A source with this run's choices, able to scan a dataset folder."""

    spec: SourceSpec
    layout_spec: SourceSpec  # whose layout and names (synthetic: the layout written)
    variant: str = ""  # CUHK03-NP: labeled or detected
    split_dirs: Mapping[str, str] = field(default_factory=lambda: dict(MARKET_DIRS))

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def stats(self) -> Mapping[str, Mapping[str, int]] | None:
        if self.spec.name == "cuhk03":
            return CUHK03_STATS[self.variant]
        return self.spec.stats

    def root(self, dataset_dir: str | Path) -> Path:
        """The folder holding the split folders (CUHK03-NP: its variant's subfolder)."""
        base = Path(dataset_dir)
        return base / self.variant if self.layout_spec.layout == "cuhk03" else base

    def describe_layout(self) -> str:
        layout = self.layout_spec.layout
        if layout == "msmt17":
            return "train/ and test/ (or mask_train_v2/ and mask_test_v2/) with " + ", ".join(
                n for names in MSMT17_LISTS.values() for n in names
            )
        prefix = f"{self.variant}/" if layout == "cuhk03" else ""
        return ", ".join(prefix + self.split_dirs[s] + "/" for s in SPLITS)

    def is_present(self, dataset_dir: str | Path) -> bool:
        root = self.root(dataset_dir)
        if self.layout_spec.layout == "msmt17":
            return _msmt17_version(root) is not None and all(
                (root / n).is_file() for names in MSMT17_LISTS.values() for n in names
            )
        return all((root / self.split_dirs[s]).is_dir() for s in SPLITS)

    def check_present(self, dataset_dir: str | Path) -> None:
        if not self.is_present(dataset_dir):
            raise ReidpipeError(
                f"{dataset_dir} is not a {self.layout_spec.title}-layout dataset: "
                f"expected {self.describe_layout()}"
            )

    def split_location(self, dataset_dir: str | Path, split: str) -> Path:
        """Where a split's images live (for messages)."""
        root = self.root(dataset_dir)
        if self.layout_spec.layout == "msmt17":
            return root / MSMT17_LISTS[split][0]
        return root / self.split_dirs[split]

    def scan(self, dataset_dir: str | Path, split: str) -> SplitScan:
        """Every image of one split in a stable order, with its parsed name."""
        if self.layout_spec.layout == "msmt17":
            self.check_present(dataset_dir)
            return _scan_msmt17(self.root(dataset_dir), split)
        folder = self.root(dataset_dir) / self.split_dirs[split]
        if not folder.is_dir():
            raise ReidpipeError(
                f"{dataset_dir} is not a {self.layout_spec.title}-layout dataset: "
                f"{folder} is missing (expected {self.describe_layout()})"
            )
        parse = self.layout_spec.parse
        assert parse is not None
        return _scan_folder(folder, parse)


def dataset_source(
    source: str,
    *,
    cuhk03_variant: str = "labeled",
    split_dirs: Mapping[str, str] | None = None,
    synthetic_layout: str = "market1501",
) -> DatasetSource:
    """The source ``source`` with the run's choices; refuses choices that do not apply."""
    spec = source_spec(source)
    layout = spec
    if source == "synthetic":
        if synthetic_layout not in SYNTH_LAYOUTS:
            raise ReidpipeError(
                f"synthetic layout {synthetic_layout!r}; expected one of {', '.join(SYNTH_LAYOUTS)}"
            )
        layout = SOURCES[synthetic_layout]
    if cuhk03_variant not in CUHK03_VARIANTS:
        raise ReidpipeError(
            f"CUHK03-NP variant {cuhk03_variant!r}; expected one of {', '.join(CUHK03_VARIANTS)}"
        )
    dirs = dict(MARKET_DIRS)
    if layout.name == "custom":
        if source == "synthetic":
            dirs = dict(CUSTOM_SYNTH_DIRS)
        unknown = sorted(set(split_dirs or {}) - set(SPLITS))
        if unknown:
            raise ReidpipeError(
                f"data.split_dirs: unknown split(s) {unknown}; expected keys {', '.join(SPLITS)}"
            )
        dirs.update({k: v for k, v in (split_dirs or {}).items() if v})
    elif any((split_dirs or {}).values()):
        raise ReidpipeError(
            f"data.split_dirs applies to data.source custom only, not {source!r} "
            f"({layout.title} has fixed folders)"
        )
    variant = cuhk03_variant if layout.layout == "cuhk03" else ""
    return DatasetSource(spec=spec, layout_spec=layout, variant=variant, split_dirs=dirs)
