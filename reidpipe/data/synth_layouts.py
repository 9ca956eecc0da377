"""Synthetic data in every dataset layout, so each parser, validator and split runs end to end.

The images are the synthetic Market-1501 ones (``synth``); only the folders and file names change,
plus what a layout cannot express: DukeMTMC-reID has no junk and gives distractors their own
gallery-only identities, MSMT17 and CUHK03-NP have neither, and CUHK03-NP's camera pairs have two
cameras (each identity's first camera becomes c1, the others c2, so every query keeps a match
from the other camera).
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from PIL import Image

from reidpipe.atomic import atomic_dir, write_json
from reidpipe.data.synth import (
    MARKER_FILE,
    SynthSummary,
    check_replaceable,
    generate_synthetic_market,
)
from reidpipe.dataset_registry import (
    CUHK03_VARIANTS,
    CUSTOM_SYNTH_DIRS,
    DISTRACTOR_PID,
    JUNK_PID,
    MARKET_DIRS,
    MSMT17_DIRS,
    MSMT17_LISTS,
    SPLITS,
    SYNTH_LAYOUTS,
    ImageName,
    dataset_source,
    parse_market,
)
from reidpipe.errors import ReidpipeError

Item = tuple[str, Path, ImageName]  # split, file, parsed Market name
_WORK_DIR = ".market"


def _market_items(src: Path) -> list[Item]:
    items = []
    for split in SPLITS:
        for path in sorted((src / MARKET_DIRS[split]).iterdir()):
            name = parse_market(path.name)
            if name is not None:
                items.append((split, path, name))
    return items


def _write_duke(items: list[Item], dst: Path) -> None:
    for folder in MARKET_DIRS.values():
        (dst / folder).mkdir()
    next_pid = max(n.pid for _, _, n in items) + 1
    for frame, (split, path, name) in enumerate(items, start=1):
        pid = name.pid
        if pid == JUNK_PID:
            continue
        if pid == DISTRACTOR_PID:
            pid, next_pid = next_pid, next_pid + 1
        path.replace(dst / MARKET_DIRS[split] / f"{pid:04d}_c{name.camid}_f{frame:07d}.jpg")


def _write_msmt17(items: list[Item], dst: Path) -> None:
    train_dir, test_dir = MSMT17_DIRS["MSMT17_V1"]
    people = [n.pid for split, _, n in items if split == "train"]
    test_people = [n.pid for split, _, n in items if split != "train" and n.pid > 0]
    local = {pid: i for i, pid in enumerate(sorted(set(people)))}
    local |= {pid: i for i, pid in enumerate(sorted(set(test_people)))}
    lines: dict[str, list[str]] = defaultdict(list)
    counts: dict[tuple[str, int], int] = defaultdict(int)
    for frame, (split, path, name) in enumerate(items, start=1):
        if name.pid <= 0:
            continue
        number = local[name.pid]
        folder = train_dir if split == "train" else test_dir
        side = "train" if split == "train" else "test"
        index = counts[side, number]
        counts[side, number] += 1
        rel = (
            f"{number:04d}/{number:04d}_{index:03d}_{name.camid:02d}_0113morning_{frame:04d}_0.jpg"
        )
        (dst / folder / rel).parent.mkdir(parents=True, exist_ok=True)
        path.replace(dst / folder / rel)
        # As in MSMT17, a tenth of the train images are listed as validation images.
        lists = MSMT17_LISTS[split]
        list_name = lists[1] if split == "train" and index % 10 == 9 else lists[0]
        lines[list_name].append(f"{rel} {number}")
    for list_name in (n for names in MSMT17_LISTS.values() for n in names):
        (dst / list_name).write_text("".join(line + "\n" for line in lines[list_name]))


def _write_cuhk03(items: list[Item], dst: Path) -> None:
    first_camera: dict[int, int] = {}
    for _, _, name in sorted(items, key=lambda item: item[2].camid):
        first_camera.setdefault(name.pid, name.camid)
    counts: dict[int, int] = defaultdict(int)
    for split, path, name in items:
        if name.pid <= 0:
            continue
        camera = 1 if name.camid == first_camera[name.pid] else 2
        counts[name.pid] += 1
        file_name = f"{name.pid:04d}_c{camera}_{counts[name.pid]}.png"
        with Image.open(path) as image:
            for variant in CUHK03_VARIANTS:
                target = dst / variant / MARKET_DIRS[split] / file_name
                target.parent.mkdir(parents=True, exist_ok=True)
                image.save(target, format="PNG")
    for variant in CUHK03_VARIANTS:  # a split may have lost all its images, not its folder
        for folder in MARKET_DIRS.values():
            (dst / variant / folder).mkdir(parents=True, exist_ok=True)


def _write_custom(items: list[Item], dst: Path) -> None:
    """TAO's three folders, with the looser names custom data may have."""
    for folder in CUSTOM_SYNTH_DIRS.values():
        (dst / folder).mkdir()
    for index, (split, path, name) in enumerate(items, start=1):
        pid = "-1" if name.pid == JUNK_PID else f"{name.pid:04d}"
        path.replace(dst / CUSTOM_SYNTH_DIRS[split] / f"{pid}_c{name.camid}_{index:05d}.jpg")


WRITERS: dict[str, Callable[[list[Item], Path], None]] = {
    "dukemtmc": _write_duke,
    "msmt17": _write_msmt17,
    "cuhk03": _write_cuhk03,
    "custom": _write_custom,
}


def generate_synthetic(
    out_dir: str | Path, layout: str, num_ids: int, seed: int, workers: int | None = None
) -> SynthSummary:
    """Write the synthetic dataset in ``layout`` (a name of ``SYNTH_LAYOUTS``), atomically."""
    if layout not in SYNTH_LAYOUTS:
        raise ReidpipeError(
            f"synthetic layout {layout!r}; expected one of {', '.join(SYNTH_LAYOUTS)}"
        )
    if layout == "market1501":
        return generate_synthetic_market(out_dir, num_ids, seed, workers)
    out = Path(out_dir)
    check_replaceable(out)
    with atomic_dir(out, owned_by=(MARKER_FILE,)) as tmp:
        market = generate_synthetic_market(tmp / _WORK_DIR, num_ids, seed, workers)
        WRITERS[layout](_market_items(tmp / _WORK_DIR), tmp)
        shutil.rmtree(tmp / _WORK_DIR)
        source = dataset_source("synthetic", synthetic_layout=layout)
        scans = {split: source.scan(tmp, split) for split in SPLITS}
        pids = {split: [n.pid for _, n in scan.images] for split, scan in scans.items()}
        summary = replace(
            market,
            out_dir=out,
            train_ids=len({p for p in pids["train"] if p > 0}),
            test_ids=len({p for s in ("query", "gallery") for p in pids[s] if p > 0}),
            train_images=len(pids["train"]),
            query_images=len(pids["query"]),
            gallery_images=len(pids["gallery"]),
            distractors=pids["gallery"].count(DISTRACTOR_PID),
            junk=pids["gallery"].count(JUNK_PID),
        )
        write_json(
            tmp / MARKER_FILE,
            {
                "generator": "reidpipe synth",
                "layout": layout,
                "num_ids": num_ids,
                "seed": seed,
                **{
                    k: getattr(summary, k)
                    for k in (
                        "train_ids",
                        "test_ids",
                        "train_images",
                        "query_images",
                        "gallery_images",
                        "distractors",
                        "junk",
                    )
                },
            },
        )
    return summary
