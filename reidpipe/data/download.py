"""Fetch the Market-1501 archive, verify its MD5 and extract it safely and atomically.

Order of work: reuse a dataset folder that a previous run completed (it holds ``MARKER_NAME``,
recording the archive MD5) -> otherwise take the archive from ``data.archive_path``/``--archive``,
or the kept copy next to the dataset folder, or download it from ``data.urls`` in order -> check
the MD5 before anything is unpacked -> unpack into a temporary sibling and rename it into place.

Downloading is ``http_transfer``'s, the entry checks ``unzip``'s. The verified archive is KEPT next to the dataset folder
(``<dataset_dir>/../Market-1501-v15.09.15.zip``) so the dataset can be unpacked again without a
download; delete it by hand to save the ~150 MB. An archive whose download fails its MD5 check is
deleted, so the next run does not resume onto bad bytes. With ``data.allow_unknown_checksum``
any completed dataset folder is reused; delete it to fetch a different archive.
"""

from __future__ import annotations

import json
import shutil
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from reidpipe import atomic
from reidpipe.data.http_transfer import (
    CHUNK_BYTES,
    PROGRESS_EVERY_BYTES,
    Log,
    check_md5,
    default_log,
    download_archive,
    file_md5,
)
from reidpipe.data.market import ARCHIVE_NAME, SPLIT_DIRS, is_market_layout
from reidpipe.data.synth import generate_synthetic_market
from reidpipe.data.unzip import plan_entries
from reidpipe.errors import ReidpipeError
from reidpipe.params import DataParams

MARKER_NAME = ".reidpipe-download.json"


@dataclass(frozen=True)
class FetchResult:
    dataset_dir: Path
    md5: str
    source: str  # the URL or archive path the dataset came from
    reused: bool  # True: an existing complete dataset folder was kept as it was


def fetch_dataset(data: DataParams, *, urls: Sequence[str] | None = None,
                  archive: str | Path | None = None, dataset_dir: str | Path | None = None,
                  timeout: float = 60.0, progress_every: int = PROGRESS_EVERY_BYTES,
                  log: Log = default_log) -> FetchResult:
    """Make ``dataset_dir`` (default ``data.dataset_dir``) hold the extracted Market-1501 archive.

    ``urls``, ``archive`` and ``dataset_dir`` override ``data.urls``, ``data.archive_path`` and
    ``data.dataset_dir`` (the CLI's ``--url``, ``--archive`` and ``--out``).
    """
    if data.source == "synthetic":
        raise ReidpipeError(
            "data.source is 'synthetic': that dataset is generated (`reidpipe synth`, or "
            "`reidpipe download`, which dispatches on data.source), not fetched from an archive")
    target = Path(dataset_dir if dataset_dir is not None else data.dataset_dir)
    url_list = list(urls) if urls else list(data.urls)
    local = archive if archive is not None else (data.archive_path or None)
    expected = data.md5.lower()

    if local is not None:
        path = Path(local)
        if not path.is_file():
            raise ReidpipeError(f"archive {path} (--archive / data.archive_path) does not exist "
                                "or is not a file")
        md5 = file_md5(path)
        check_md5(md5, expected, data.allow_unknown_checksum, str(path), log)
        marker = read_marker(target)
        if marker is not None and marker.get("md5") == md5:
            log(f"{target} already holds the dataset from an archive with MD5 {md5}; reusing it")
            return FetchResult(target, md5, str(path), reused=True)
        extract_archive(path, target, md5=md5, source=str(path),
                        max_bytes=data.max_extract_bytes, log=log)
        return FetchResult(target, md5, str(path), reused=False)

    marker = read_marker(target)
    if marker is not None and (marker.get("md5") == expected or data.allow_unknown_checksum):
        log(f"{target} already holds the dataset (archive MD5 {marker.get('md5')}); reusing it")
        return FetchResult(target, str(marker.get("md5")), str(target), reused=True)

    kept = archive_path_for(target)
    source = str(kept)
    md5 = file_md5(kept) if kept.is_file() else ""
    if md5 and md5 != expected and not data.allow_unknown_checksum:
        log(f"kept archive {kept} has MD5 {md5}, expected {expected}: downloading it again")
        md5 = ""
    if md5:
        check_md5(md5, expected, data.allow_unknown_checksum, str(kept), log)
        log(f"using the kept archive {kept} (MD5 {md5})")
    else:
        source, md5 = download_archive(url_list, kept, expected_md5=expected,
                                       allow_unknown_checksum=data.allow_unknown_checksum,
                                       timeout=timeout, progress_every=progress_every, log=log)
    extract_archive(kept, target, md5=md5, source=source, max_bytes=data.max_extract_bytes,
                    log=log)
    return FetchResult(target, md5, source, reused=False)


def obtain_dataset(data: DataParams, *, urls: Sequence[str] | None = None,
                   archive: str | Path | None = None,
                   dataset_dir: str | Path | None = None) -> FetchResult:
    """The pipeline's dataset stage: fetch Market-1501, or generate the synthetic dataset."""
    if data.source != "synthetic":
        return fetch_dataset(data, urls=urls, archive=archive, dataset_dir=dataset_dir)
    if urls or archive:
        raise ReidpipeError("--url/--archive apply to data.source market1501, but data.source is "
                            "'synthetic'")
    summary = generate_synthetic_market(dataset_dir if dataset_dir is not None else data.dataset_dir,
                                        data.synthetic_ids, data.synthetic_seed)
    return FetchResult(summary.out_dir, "", f"synthetic (ids {summary.num_ids}, seed {summary.seed})",
                       reused=False)


def archive_path_for(dataset_dir: str | Path) -> Path:
    """Where the archive is downloaded and kept: next to the dataset folder."""
    return Path(dataset_dir).parent / ARCHIVE_NAME


def read_marker(dataset_dir: str | Path) -> dict[str, Any] | None:
    """The marker of a dataset folder a previous run completed; ``None`` if it is not one."""
    folder = Path(dataset_dir)
    path = folder / MARKER_NAME
    if not (path.is_file() and is_market_layout(folder)):
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def extract_archive(archive: Path, dataset_dir: Path, *, md5: str, source: str, max_bytes: int,
                    log: Log = default_log) -> int:
    """Unpack ``archive``'s top folder as ``dataset_dir``, all or nothing; returns the file count.

    A non-empty ``dataset_dir`` that no previous run completed is never replaced.
    """
    if dataset_dir.exists() and read_marker(dataset_dir) is None:
        if not dataset_dir.is_dir() or any(dataset_dir.iterdir()):
            raise ReidpipeError(
                f"{dataset_dir} exists but was not made by `reidpipe download` (no "
                f"{MARKER_NAME}); move it away or choose another data.dataset_dir / --out")
    log(f"extracting {archive} to {dataset_dir}")
    files = 0
    try:
        with zipfile.ZipFile(archive) as zf:
            entries = plan_entries(zf, archive, max_bytes)
            with atomic.atomic_dir(dataset_dir) as tmp:
                for info, parts in entries:
                    path = tmp.joinpath(*parts)
                    if info.is_dir():
                        path.mkdir(parents=True, exist_ok=True)
                        continue
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(path, "xb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK_BYTES)
                    files += 1
                if not is_market_layout(tmp):
                    raise ReidpipeError(
                        f"archive {archive} does not hold the Market-1501 layout: expected "
                        f"{', '.join(d + '/' for d in SPLIT_DIRS.values())} under its top folder")
                atomic.write_json(tmp / MARKER_NAME, {
                    "archive": archive.name, "md5": md5, "source": source, "files": files})
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise ReidpipeError(f"archive {archive} is corrupt or truncated ({exc}); nothing was "
                            "extracted. Delete it and download it again") from None
    except FileExistsError as exc:
        raise ReidpipeError(f"archive {archive} holds {exc.filename} twice; refusing to "
                            "extract") from None
    log(f"extracted {files} files to {dataset_dir}")
    return files
