"""Fetch the Market-1501 archive, verify its MD5 and extract it safely and atomically.

Order of work: reuse a dataset folder that a previous run completed (it holds ``MARKER_NAME``,
recording the archive MD5) -> otherwise take the archive from ``data.archive_path``/``--archive``,
or the kept copy next to the dataset folder, or download it from ``data.urls`` in order -> check
the MD5 before anything is unpacked -> unpack into a temporary sibling and rename it into place.

Downloads go to ``<archive>.part`` and are resumed with an HTTP Range request (within a run when a
transfer breaks, and across runs). The verified archive is KEPT next to the dataset folder
(``<dataset_dir>/../Market-1501-v15.09.15.zip``) so the dataset can be unpacked again without a
download; delete it by hand to save the ~150 MB. An archive whose download fails its MD5 check is
deleted, so the next run does not resume onto bad bytes. With ``data.allow_unknown_checksum``
any completed dataset folder is reused; delete it to fetch a different archive.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import shutil
import stat
import sys
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from reidpipe import atomic
from reidpipe.errors import ReidpipeError
from reidpipe.market import ARCHIVE_NAME, SPLIT_DIRS, is_market_layout
from reidpipe.params import DataParams
from reidpipe.synth import generate_synthetic_market

MARKER_NAME = ".reidpipe-download.json"
PART_SUFFIX = ".part"
USER_AGENT = "reidpipe-download/0.1"
CHUNK_BYTES = 1 << 20
PROGRESS_EVERY_BYTES = 8 << 20
MAX_ATTEMPTS_PER_URL = 5
# Market-1501 is JPEGs, which barely compress; a large entry expanding 100x is a zip bomb.
MAX_COMPRESSION_RATIO = 100
RATIO_CHECK_MIN_BYTES = 1 << 20

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(f"reidpipe download: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class FetchResult:
    dataset_dir: Path
    md5: str
    source: str  # the URL or archive path the dataset came from
    reused: bool  # True: an existing complete dataset folder was kept as it was


# ------------------------------------------------------------------------------------- entry


def fetch_dataset(data: DataParams, *, urls: Sequence[str] | None = None,
                  archive: str | Path | None = None, dataset_dir: str | Path | None = None,
                  timeout: float = 60.0, progress_every: int = PROGRESS_EVERY_BYTES,
                  log: Log = _stderr) -> FetchResult:
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
        _check_md5(md5, expected, data.allow_unknown_checksum, str(path), log)
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
        _check_md5(md5, expected, data.allow_unknown_checksum, str(kept), log)
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


def file_md5(path: str | Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _check_md5(md5: str, expected: str, allow_unknown: bool, what: str, log: Log) -> None:
    if md5 == expected:
        return
    if not allow_unknown:
        raise ReidpipeError(
            f"{what} has MD5 {md5}, expected {expected} (data.md5); it is not the Market-1501 "
            "archive or it is damaged. Set data.allow_unknown_checksum: true to accept "
            "another archive")
    log(f"WARNING: {what} has MD5 {md5}, not the expected {expected}; accepted because "
        "data.allow_unknown_checksum is true")


# ---------------------------------------------------------------------------------- download


class _TransferError(Exception):
    """A transfer that ended early or answered something unusable; may be retried."""


_RETRYABLE = (OSError, http.client.HTTPException, _TransferError)


def download_archive(urls: Sequence[str], dest: Path, *, expected_md5: str,
                     allow_unknown_checksum: bool, timeout: float,
                     progress_every: int = PROGRESS_EVERY_BYTES,
                     log: Log = _stderr) -> tuple[str, str]:
    """Download the archive to ``dest`` from the first URL that works; returns (url, md5).

    All URLs failing is one ReidpipeError listing each URL with its error.
    """
    part = dest.with_name(dest.name + PART_SUFFIX)
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    for url in urls:
        try:
            _download_url(url, part, timeout=timeout, progress_every=progress_every, log=log)
        except ValueError as exc:  # urllib's answer to a malformed URL (no scheme, ...)
            failures.append(f"  {url}: not a usable URL ({exc})")
            continue
        except _RETRYABLE as exc:
            failures.append(f"  {url}: {_describe_error(exc)}")
            log(f"{url} failed: {_describe_error(exc)}")
            continue
        md5 = file_md5(part)
        if md5 != expected_md5 and not allow_unknown_checksum:
            part.unlink()
            failures.append(f"  {url}: MD5 {md5} of the downloaded file, expected {expected_md5} "
                            "(data.md5; data.allow_unknown_checksum: true accepts another archive)")
            log(f"{url}: MD5 mismatch ({md5}), download deleted")
            continue
        _check_md5(md5, expected_md5, allow_unknown_checksum, url, log)
        part.replace(dest)
        log(f"archive saved to {dest} (kept for re-extraction; delete it to save space)")
        return url, md5
    tried = "\n".join(failures) if failures else "  (no URLs configured: data.urls is empty)"
    raise ReidpipeError(
        f"could not download {ARCHIVE_NAME}; tried:\n{tried}\n"
        f"Download it yourself and pass it with `reidpipe download --archive PATH` or set "
        f"data.archive_path (or put it at {dest}).")


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        return f"cannot connect ({exc.reason})"
    return str(exc) or type(exc).__name__


def _download_url(url: str, part: Path, *, timeout: float, progress_every: int,
                  log: Log) -> None:
    """Download ``url`` into ``part``, resuming while each broken attempt made progress."""
    for attempt in range(1, MAX_ATTEMPTS_PER_URL + 1):
        before = _size(part)
        try:
            _transfer(url, part, timeout=timeout, progress_every=progress_every, log=log)
            return
        except _RETRYABLE as exc:
            if attempt == MAX_ATTEMPTS_PER_URL or _size(part) <= before:
                raise
            log(f"{url}: transfer broke ({_describe_error(exc)}); resuming at {_size(part)} bytes "
                f"(attempt {attempt + 1}/{MAX_ATTEMPTS_PER_URL})")


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _range_start(content_range: str | None) -> int | None:
    match = re.match(r"bytes\s+(\d+)-", content_range or "")
    return int(match.group(1)) if match else None


def _transfer(url: str, part: Path, *, timeout: float, progress_every: int, log: Log) -> None:
    offset = _size(part)
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not offset:
            raise
        exc.close()
        log(f"{url}: server refused to resume at {offset} bytes (HTTP 416); starting over")
        part.unlink()
        _transfer(url, part, timeout=timeout, progress_every=progress_every, log=log)
        return
    with response:
        status = getattr(response, "status", None)
        mode = "wb"
        if offset and status == 206:
            start = _range_start(response.headers.get("Content-Range"))
            if start != offset:
                log(f"{url}: server resumed at the wrong place ({start}, asked {offset}); "
                    "starting over")
                part.unlink()
                response.close()
                _transfer(url, part, timeout=timeout, progress_every=progress_every, log=log)
                return
            mode = "ab"
            log(f"resuming {url} at {offset} bytes")
        elif offset:
            log(f"{url}: server ignored the Range request (HTTP {status}); starting over")
            offset = 0
        else:
            log(f"downloading {url}")
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        _copy_with_progress(response, part, mode, offset, total, progress_every, log)
    if total is not None and _size(part) != total:
        raise _TransferError(f"connection closed after {_size(part)} of {total} bytes")


def _copy_with_progress(response: Any, part: Path, mode: str, offset: int, total: int | None,
                        progress_every: int, log: Log) -> None:
    done = offset
    next_report = offset + progress_every
    started = time.monotonic()
    with open(part, mode) as out:
        while chunk := response.read(CHUNK_BYTES):
            out.write(chunk)
            done += len(chunk)
            if done >= next_report:
                next_report = done + progress_every
                log(_progress_line(done, total, done - offset, time.monotonic() - started))


def _progress_line(done: int, total: int | None, fetched: int, seconds: float) -> str:
    mib = 1 << 20
    of = f" of {total / mib:.1f} MiB ({100 * done / total:.0f}%)" if total else ""
    rate = f", {fetched / mib / seconds:.1f} MiB/s" if seconds > 0 else ""
    return f"{done / mib:.1f} MiB{of}{rate}"


# ----------------------------------------------------------------------------------- extract


def _entry_parts(info: zipfile.ZipInfo, archive: Path) -> tuple[str, ...]:
    """The checked path components of an entry; refuses absolute paths, ``..`` and links."""
    name = info.filename
    where = f"archive {archive}: entry {name!r}"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise ReidpipeError(f"{where} has an absolute path; refusing to extract")
    parts = tuple(p for p in re.split(r"[/\\]", name) if p not in ("", "."))
    if ".." in parts:
        raise ReidpipeError(f"{where} points outside the dataset folder ('..'); "
                            "refusing to extract")
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        raise ReidpipeError(f"{where} is a symbolic link; refusing to extract")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise ReidpipeError(f"{where} is a special file (mode {kind:o}); refusing to extract")
    return parts


def _plan(zf: zipfile.ZipFile, archive: Path,
          max_bytes: int) -> list[tuple[zipfile.ZipInfo, tuple[str, ...]]]:
    """Check every entry before writing anything; returns (entry, path in the dataset folder).

    zipfile stops each entry at its declared size (a larger stream fails its CRC), so the
    declared sizes bound what extraction writes.
    """
    entries = [(info, _entry_parts(info, archive)) for info in zf.infolist()]
    entries = [(info, parts) for info, parts in entries if parts]
    total = 0
    for info, _ in entries:
        if (info.file_size >= RATIO_CHECK_MIN_BYTES
                and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1)):
            raise ReidpipeError(
                f"archive {archive}: entry {info.filename!r} expands {info.compress_size} -> "
                f"{info.file_size} bytes (more than {MAX_COMPRESSION_RATIO}x); refusing a "
                "possible zip bomb")
        total += info.file_size
        if total > max_bytes:
            raise ReidpipeError(
                f"archive {archive} unpacks to more than data.max_extract_bytes = {max_bytes} "
                f"bytes (reached at entry {info.filename!r}); refusing to extract")
    tops = {parts[0] for _, parts in entries}
    if len(tops) == 1 and not any(len(p) == 1 and not i.is_dir() for i, p in entries):
        entries = [(info, parts[1:]) for info, parts in entries if len(parts) > 1]
    return entries


def extract_archive(archive: Path, dataset_dir: Path, *, md5: str, source: str, max_bytes: int,
                    log: Log = _stderr) -> int:
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
            entries = _plan(zf, archive, max_bytes)
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
