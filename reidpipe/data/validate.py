"""Dataset validation: every name parsed, every image decoded, the protocol's invariants checked.

Each source is read in its own layout (``sources``). Without ``strict`` any consistent dataset
passes (TAO's "users' dataset"); ``strict`` also demands the dataset's official statistics.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reidpipe import atomic, images
from reidpipe.dataset_registry import (
    DISTRACTOR_PID,
    JUNK_PID,
    SPLITS,
    DatasetSource,
    SplitScan,
    dataset_source,
)
from reidpipe.errors import ReidpipeError

SHOWN_PROBLEMS = 20
STRICT_PREFIX = "strict: "  # problems only strict validation (the official statistics) finds


@dataclass
class Problem:
    file: str
    problem: str


@dataclass
class ValidationReport:
    dataset_dir: str
    strict: bool
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset_dir": self.dataset_dir,
            "strict": self.strict,
            "valid": self.valid,
            "splits": self.splits,
            "num_problems": len(self.problems),
            "problems": [vars(p) for p in self.problems],
            "warnings": self.warnings,
            "ignored_files": self.ignored_files,
        }

    def failure_message(self) -> str:
        lines = [f"dataset {self.dataset_dir} failed validation: {len(self.problems)} problem(s)"]
        lines += [f"  {p.file}: {p.problem}" for p in self.problems[:SHOWN_PROBLEMS]]
        if len(self.problems) > SHOWN_PROBLEMS:
            lines.append(f"  ... and {len(self.problems) - SHOWN_PROBLEMS} more (see the report)")
        if any(p.problem.startswith(STRICT_PREFIX) for p in self.problems):
            lines.append(
                "  strict validation expects the official dataset itself; to check another "
                "dataset in its layout, run `reidpipe validate --no-strict` or set "
                "`data.strict: false` in the params"
            )
        return "\n".join(lines)


def _split_summary(scan: SplitScan, checks: list[images.ImageCheck]) -> dict[str, Any]:
    pids = [name.pid for _, name in scan.images]
    cameras = sorted({name.camid for _, name in scan.images})
    sizes = Counter(f"{c.size[0]}x{c.size[1]}" for c in checks if c.size)
    return {
        "images": len(scan.images),
        "ids": len({p for p in pids if p > 0}),
        "cameras": cameras,
        "junk": sum(p == JUNK_PID for p in pids),
        "distractors": sum(p == DISTRACTOR_PID for p in pids),
        "image_sizes": dict(sizes.most_common()),
    }


def _check_strict_stats(report: ValidationReport, source: DatasetSource, dataset_dir: Path) -> None:
    title = source.spec.title
    if source.stats is None:
        raise ReidpipeError(
            f"--strict: {title} has no official statistics to check; validate it without --strict"
        )
    for split, expected in source.stats.items():
        actual = report.splits[split]
        for key, value in expected.items():
            if actual[key] != value:
                report.problems.append(
                    Problem(
                        str(source.split_location(dataset_dir, split)),
                        f"{STRICT_PREFIX}{title} has {value} {key} here, found {actual[key]}",
                    )
                )
    all_cams = set().union(*(set(report.splits[s]["cameras"]) for s in SPLITS))
    if all_cams != set(range(1, source.spec.cameras + 1)):
        report.problems.append(
            Problem(
                ".",
                f"{STRICT_PREFIX}{title} has cameras 1-{source.spec.cameras}, "
                f"found {sorted(all_cams)}",
            )
        )


def validate_dataset(
    dataset_dir: str | Path, strict: bool = False, source: DatasetSource | None = None
) -> ValidationReport:
    """Check a dataset folder in ``source``'s layout (default Market-1501); never raises for
    dataset content, only reports it."""
    dataset_dir = Path(dataset_dir)
    source = source or dataset_source("market1501")
    source.check_present(dataset_dir)
    report = ValidationReport(dataset_dir=str(dataset_dir), strict=strict)
    scans = {split: source.scan(dataset_dir, split) for split in SPLITS}
    for scan in scans.values():
        report.ignored_files += [str(p) for p in scan.os_metadata]
        pattern = source.layout_spec.name_pattern
        report.problems += [
            Problem(str(p), f"name does not match {pattern}") for p in scan.misnamed
        ]
        report.problems += [Problem(str(p), "listed but missing") for p in scan.missing]

    size = source.spec.image_size if strict else None
    digests: dict[str, list[tuple[str, Path]]] = defaultdict(list)
    for split, scan in scans.items():
        checks = images.check_images([path for path, _ in scan.images])
        for check in checks:
            if check.error:
                report.problems.append(Problem(str(check.path), check.error))
            elif size and check.size != size:
                report.problems.append(
                    Problem(
                        str(check.path),
                        f"{STRICT_PREFIX}size {check.size[0]}x{check.size[1]}, "
                        f"{source.spec.title} images are {size[0]}x{size[1]}",
                    )
                )
            if check.digest:
                digests[check.digest].append((split, check.path))
        report.splits[split] = _split_summary(scan, checks)

    for split, scan in scans.items():
        if not scan.images:
            report.problems.append(
                Problem(str(source.split_location(dataset_dir, split)), "holds no images")
            )
    _check_identities(scans, report, source.spec.cameras if strict else 0)
    _check_duplicates(digests, report)
    if strict:
        _check_strict_stats(report, source, dataset_dir)
    return report


def _check_identities(scans: dict[str, SplitScan], report: ValidationReport, cameras: int) -> None:
    """``cameras`` > 0: camera ids must lie in 1..cameras (strict); otherwise just be >= 1."""
    for split, scan in scans.items():
        for path, name in scan.images:
            if name.camid < 1 or (cameras and name.camid > cameras):
                allowed = f"1-{cameras}" if cameras else ">= 1"
                report.problems.append(Problem(str(path), f"camera {name.camid} outside {allowed}"))
            if split != "gallery" and name.pid <= 0:
                report.problems.append(
                    Problem(
                        str(path),
                        f"pid {name.pid} (junk/distractor) is only allowed in the gallery",
                    )
                )

    gallery_cams: dict[int, set[int]] = defaultdict(set)
    for _, name in scans["gallery"].images:
        gallery_cams[name.pid].add(name.camid)
    for path, name in scans["query"].images:
        if name.pid > 0 and not gallery_cams.get(name.pid, set()) - {name.camid}:
            report.problems.append(
                Problem(str(path), f"query pid {name.pid} has no gallery image from another camera")
            )

    train_ids = {name.pid for _, name in scans["train"].images if name.pid > 0}
    test_ids = {
        name.pid
        for split in ("query", "gallery")
        for _, name in scans[split].images
        if name.pid > 0
    }
    shared = sorted(train_ids & test_ids)
    if shared:
        report.problems.append(
            Problem("train", f"{len(shared)} identities appear in train and test: {shared[:10]}")
        )


def _check_duplicates(digests: dict[str, list[tuple[str, Path]]], report: ValidationReport) -> None:
    """Byte-identical images across train and test leak; within the test side they only warn."""
    for copies in digests.values():
        if len(copies) < 2:
            continue
        splits = {split for split, _ in copies}
        names = ", ".join(str(p) for _, p in copies)
        if "train" in splits and splits - {"train"}:
            report.problems.append(
                Problem(str(copies[0][1]), f"identical image in train and test: {names}")
            )
        else:
            report.warnings.append(f"identical images: {names}")


def run_validation(
    dataset_dir: str | Path,
    report_path: str | Path,
    strict: bool,
    source: DatasetSource | None = None,
) -> ValidationReport:
    """Validate, write the JSON report (also on failure), raise if the dataset is invalid."""
    report = validate_dataset(dataset_dir, strict=strict, source=source)
    atomic.write_json(report_path, report.to_dict())
    if not report.valid:
        raise ReidpipeError(report.failure_message())
    return report
