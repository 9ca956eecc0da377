"""Obtain a dataset: fetch its archive, verify the MD5 and extract it safely and atomically.

Order of work: reuse a dataset folder that a previous run completed (it holds ``MARKER_NAME``,
recording the archive MD5) -> otherwise take the archive (a zip or a dataset folder) from
``data.archive_path``/``--archive``, or the kept copy next to the dataset folder, or download it
from ``data.urls`` (default: the source's known mirrors) in order -> check the MD5 (``data.md5``,
default: the published one; datasets without one have theirs recorded) before anything is
unpacked -> unpack into a temporary sibling and rename it into place. DukeMTMC-reID (withdrawn)
and MSMT17 (on request) have no mirror: the error says so and where to put the archive.

Downloading is ``http_transfer``'s, the entry checks ``unzip``'s. The verified archive is KEPT
next to the dataset folder (e.g. ``<dataset_dir>/../Market-1501-v15.09.15.zip``) so the dataset
can be unpacked again without a download; delete it by hand to save the space. An archive whose
download fails its MD5 check is deleted, so the next run does not resume onto bad bytes. With
``data.allow_unknown_checksum`` any completed dataset folder is reused; delete it to fetch a
different archive.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from reidpipe.data.synth import MARKER_FILE as SYNTH_MARKER
from reidpipe.data.synth_layouts import generate_synthetic
from reidpipe.data.unzip import plan_entries
from reidpipe.dataset_registry import DatasetSource, SourceSpec
from reidpipe.errors import ReidpipeError
from reidpipe.params import SourceParams

MARKER_NAME = ".reidpipe-download.json"


@dataclass(frozen=True)
class FetchResult:
    dataset_dir: Path
    md5: str
    source: str  # the URL or archive path the dataset came from
    reused: bool  # True: an existing complete dataset folder was kept as it was


def fetch_dataset(
    data: SourceParams,
    *,
    urls: Sequence[str] | None = None,
    archive: str | Path | None = None,
    dataset_dir: str | Path | None = None,
    timeout: float = 60.0,
    progress_every: int = PROGRESS_EVERY_BYTES,
    log: Log = default_log,
) -> FetchResult:
    """Make ``dataset_dir`` (default ``data.dataset_dir``) hold the source's extracted archive.

    ``urls``, ``archive`` and ``dataset_dir`` override ``data.urls``, ``data.archive_path`` and
    ``data.dataset_dir`` (the CLI's ``--url``, ``--archive`` and ``--out``). ``archive`` may be a
    zip or a dataset folder (copied, hard-linked where the file system allows). A custom source
    with neither is used where it lies.
    """
    source = data.dataset_source()
    spec = source.spec
    if spec.name == "synthetic":
        raise ReidpipeError(
            "data.source is 'synthetic': that dataset is generated (`reidpipe synth`, or "
            "`reidpipe download`, which dispatches on data.source), not fetched from an archive"
        )
    target = Path(dataset_dir if dataset_dir is not None else data.dataset_dir)
    url_list = list(urls or data.urls or spec.urls)
    local = archive if archive is not None else (data.archive_path or None)
    expected = (data.md5 or spec.archive_md5).lower()

    if local is not None and Path(local).is_dir():
        return _copy_folder(Path(local), target, source, log)
    if local is not None:
        return _fetch_given_archive(Path(local), target, source, data, expected, log)
    reused = _reuse_dataset_folder(target, source, data, expected, log)
    if reused is not None:
        return reused
    kept = archive_path_for(target, source)
    origin, md5 = _kept_or_downloaded_archive(
        kept,
        spec,
        data,
        expected,
        url_list,
        timeout=timeout,
        progress_every=progress_every,
        log=log,
    )
    extract_archive(
        kept, target, source, md5=md5, origin=origin, max_bytes=data.max_extract_bytes, log=log
    )
    return FetchResult(target, md5, origin, reused=False)


def _fetch_given_archive(
    path: Path,
    target: Path,
    source: DatasetSource,
    data: SourceParams,
    expected: str,
    log: Log,
) -> FetchResult:
    """A zip given as --archive / data.archive_path: checked, then extracted unless ``target``
    already holds what an archive with its MD5 unpacked to."""
    if not path.is_file():
        raise ReidpipeError(f"archive {path} (--archive / data.archive_path) does not exist")
    md5 = file_md5(path)
    _verify(md5, expected, data, str(path), log)
    marker = read_marker(target, source)
    if marker is not None and marker.get("md5") == md5:
        log(f"{target} already holds the dataset from an archive with MD5 {md5}; reusing it")
        return FetchResult(target, md5, str(path), reused=True)
    extract_archive(
        path,
        target,
        source,
        md5=md5,
        origin=str(path),
        max_bytes=data.max_extract_bytes,
        log=log,
    )
    return FetchResult(target, md5, str(path), reused=False)


def _reuse_dataset_folder(
    target: Path, source: DatasetSource, data: SourceParams, expected: str, log: Log
) -> FetchResult | None:
    """The existing dataset folder to keep as it is (one a previous run completed with the
    expected archive, or the user's own); ``None`` when the archive must be extracted."""
    spec = source.spec
    marker = read_marker(target, source)
    if marker is not None and (
        marker.get("md5") == expected or not expected or data.allow_unknown_checksum
    ):
        log(f"{target} already holds the dataset (archive MD5 {marker.get('md5')}); reusing it")
        return FetchResult(target, str(marker.get("md5")), str(target), reused=True)
    if spec.name == "custom" or is_held(data, target):
        if source.is_present(target):
            log(f"{target}: your dataset, used where it lies (never replaced)")
            return FetchResult(target, "", str(target), reused=True)
        if spec.name == "custom":
            raise ReidpipeError(
                f"custom dataset {target} is missing or incomplete: expected "
                f"{source.describe_layout()}; {spec.obtain}"
            )
        _check_replaceable(target)  # a folder download did not make: refused, never replaced
    return None


def _kept_or_downloaded_archive(
    kept: Path,
    spec: SourceSpec,
    data: SourceParams,
    expected: str,
    url_list: list[str],
    *,
    timeout: float,
    progress_every: int,
    log: Log,
) -> tuple[str, str]:
    """(origin, md5) of the archive at ``kept``: the copy a previous run kept when its MD5 is
    right, else one downloaded there from ``url_list``."""
    md5 = file_md5(kept) if kept.is_file() else ""
    if md5 and expected and md5 != expected and not data.allow_unknown_checksum:
        log(f"kept archive {kept} has MD5 {md5}, expected {expected}: downloading it again")
        md5 = ""
    if md5:
        _verify(md5, expected, data, str(kept), log)
        log(f"using the kept archive {kept} (MD5 {md5})")
        return str(kept), md5
    if not url_list:
        raise ReidpipeError(
            f"{spec.title}: no archive and no download mirror. {spec.obtain}. Put "
            f"{spec.archive_name} at {kept}, or pass `reidpipe download --archive PATH` (a zip or "
            "the extracted folder) or set data.archive_path; mirrors you trust go in data.urls"
        )
    return download_archive(
        url_list,
        kept,
        expected_md5=expected,
        allow_unknown_checksum=data.allow_unknown_checksum or not expected,
        timeout=timeout,
        progress_every=progress_every,
        log=log,
    )


def _verify(md5: str, expected: str, data: SourceParams, what: str, log: Log) -> None:
    if expected:
        check_md5(md5, expected, data.allow_unknown_checksum, what, log)
    else:
        log(f"{what}: no published MD5 for this dataset; recording its MD5 {md5}")


def _copy_folder(folder: Path, target: Path, source: DatasetSource, log: Log) -> FetchResult:
    """A dataset folder given as --archive: checked, then copied in whole (hard links when the
    file system allows, so a large dataset costs no space)."""
    source.check_present(folder)
    marker = read_marker(target, source)
    if marker is not None and marker.get("source") == str(folder.resolve()):
        log(f"{target} already holds a copy of {folder}; reusing it")
        return FetchResult(target, "", str(folder), reused=True)
    _check_replaceable(target)

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    log(f"copying {folder} to {target}")
    with atomic.atomic_dir(target, owned_by=(MARKER_NAME,)) as tmp:
        shutil.copytree(folder, tmp, copy_function=link_or_copy, dirs_exist_ok=True)
        atomic.write_json(
            tmp / MARKER_NAME, {"archive": "", "md5": "", "source": str(folder.resolve())}
        )
    return FetchResult(target, "", str(folder), reused=False)


def obtain_dataset(
    data: SourceParams,
    *,
    urls: Sequence[str] | None = None,
    archive: str | Path | None = None,
    dataset_dir: str | Path | None = None,
) -> FetchResult:
    """The pipeline's dataset stage: fetch the source's archive, or generate the synthetic data."""
    if data.source != "synthetic":
        return fetch_dataset(data, urls=urls, archive=archive, dataset_dir=dataset_dir)
    if urls or archive:
        raise ReidpipeError(
            "--url/--archive apply to datasets that are fetched, but data.source is 'synthetic'"
        )
    summary = generate_synthetic(
        dataset_dir if dataset_dir is not None else data.dataset_dir,
        data.synthetic_layout,
        data.synthetic_ids,
        data.synthetic_seed,
    )
    return FetchResult(
        summary.out_dir,
        "",
        f"synthetic {data.synthetic_layout} (ids {summary.num_ids}, seed {summary.seed})",
        reused=False,
    )


def is_held(data: SourceParams, dataset_dir: str | Path | None = None) -> bool:
    """Whether the dataset folder (``dataset_dir``, default ``data.dataset_dir``) is the user's
    own: a custom source used where it lies, or any folder that neither download nor synth made
    (no marker). A held folder is only ever read: never replaced, never a pipeline output."""
    folder = Path(dataset_dir if dataset_dir is not None else data.dataset_dir)
    if (folder / MARKER_NAME).is_file() or (folder / SYNTH_MARKER).is_file():
        return False
    if data.source == "custom":
        return not data.archive_path  # a custom --archive folder is copied: download's own
    return folder.exists()


def archive_path_for(dataset_dir: str | Path, source: DatasetSource) -> Path:
    """Where the archive is downloaded and kept: next to the dataset folder."""
    return Path(dataset_dir).parent / source.spec.archive_name


def read_marker(dataset_dir: str | Path, source: DatasetSource) -> dict[str, Any] | None:
    """The marker of a dataset folder a previous run completed; ``None`` if it is not one."""
    folder = Path(dataset_dir)
    path = folder / MARKER_NAME
    if not (path.is_file() and source.is_present(folder)):
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _check_replaceable(dataset_dir: Path) -> None:
    """A non-empty folder that no previous run completed is never replaced."""
    if (
        dataset_dir.exists()
        and not (dataset_dir / MARKER_NAME).is_file()
        and (not dataset_dir.is_dir() or any(dataset_dir.iterdir()))
    ):
        raise ReidpipeError(
            f"{dataset_dir} exists but was not made by `reidpipe download` (no "
            f"{MARKER_NAME}); move it away or choose another data.dataset_dir / --out"
        )


def extract_archive(
    archive: Path,
    dataset_dir: Path,
    source: DatasetSource,
    *,
    md5: str,
    origin: str,
    max_bytes: int,
    log: Log = default_log,
) -> int:
    """Unpack ``archive``'s top folder as ``dataset_dir``, all or nothing; returns the file count.

    A non-empty ``dataset_dir`` that no previous run completed is never replaced.
    """
    _check_replaceable(dataset_dir)
    log(f"extracting {archive} to {dataset_dir}")
    files = 0
    try:
        with zipfile.ZipFile(archive) as zf:
            entries = plan_entries(zf, archive, max_bytes)
            with atomic.atomic_dir(dataset_dir, owned_by=(MARKER_NAME,)) as tmp:
                for info, parts in entries:
                    path = tmp.joinpath(*parts)
                    if info.is_dir():
                        path.mkdir(parents=True, exist_ok=True)
                        continue
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(path, "xb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK_BYTES)
                    files += 1
                if not source.is_present(tmp):
                    raise ReidpipeError(
                        f"archive {archive} does not hold the {source.layout_spec.title} layout: "
                        f"expected {source.describe_layout()} under its top folder"
                    )
                atomic.write_json(
                    tmp / MARKER_NAME,
                    {"archive": archive.name, "md5": md5, "source": origin, "files": files},
                )
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise ReidpipeError(
            f"archive {archive} is corrupt or truncated ({exc}); nothing was "
            "extracted. Delete it and download it again"
        ) from None
    except FileExistsError as exc:
        raise ReidpipeError(
            f"archive {archive} holds {exc.filename} twice; refusing to extract"
        ) from None
    log(f"extracted {files} files to {dataset_dir}")
    return files
