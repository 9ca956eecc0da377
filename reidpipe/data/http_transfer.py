"""Resumable HTTP download of an archive from a list of mirrors, MD5-checked.

Downloads go to ``<archive>.part`` and are resumed with an HTTP Range request (within a run when a
transfer breaks, and across runs). An archive that fails its MD5 check is deleted, so the next run
does not resume onto bad bytes. All mirrors failing is one error listing each URL and its error.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from reidpipe.errors import ReidpipeError

PART_SUFFIX = ".part"
USER_AGENT = "reidpipe-download/0.1"
CHUNK_BYTES = 1 << 20
PROGRESS_EVERY_BYTES = 8 << 20
MAX_ATTEMPTS_PER_URL = 5

Log = Callable[[str], None]
default_log: Log = logging.getLogger("reidpipe.data.download").info


def file_md5(path: str | Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def check_md5(md5: str, expected: str, allow_unknown: bool, what: str, log: Log) -> None:
    if md5 == expected:
        return
    if not allow_unknown:
        raise ReidpipeError(
            f"{what} has MD5 {md5}, expected {expected} (data.md5); it is not the expected "
            "archive or it is damaged. Set data.allow_unknown_checksum: true to accept "
            "another archive"
        )
    log(
        f"WARNING: {what} has MD5 {md5}, not the expected {expected}; accepted because "
        "data.allow_unknown_checksum is true"
    )


class _TransferError(Exception):
    """A transfer that ended early or answered something unusable; may be retried."""


_RETRYABLE = (OSError, http.client.HTTPException, _TransferError)


def download_archive(
    urls: Sequence[str],
    dest: Path,
    *,
    expected_md5: str,
    allow_unknown_checksum: bool,
    timeout: float,
    progress_every: int = PROGRESS_EVERY_BYTES,
    log: Log = default_log,
) -> tuple[str, str]:
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
            failures.append(
                f"  {url}: MD5 {md5} of the downloaded file, expected {expected_md5} "
                "(data.md5; data.allow_unknown_checksum: true accepts another archive)"
            )
            log(f"{url}: MD5 mismatch ({md5}), download deleted")
            continue
        check_md5(md5, expected_md5, allow_unknown_checksum, url, log)
        part.replace(dest)
        log(f"archive saved to {dest} (kept for re-extraction; delete it to save space)")
        return url, md5
    tried = "\n".join(failures) if failures else "  (no URLs configured: data.urls is empty)"
    raise ReidpipeError(
        f"could not download {dest.name}; tried:\n{tried}\n"
        f"Download it yourself and pass it with `reidpipe download --archive PATH` or set "
        f"data.archive_path (or put it at {dest})."
    )


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        return f"cannot connect ({exc.reason})"
    return str(exc) or type(exc).__name__


def _download_url(url: str, part: Path, *, timeout: float, progress_every: int, log: Log) -> None:
    """Download ``url`` into ``part``, resuming while each broken attempt made progress."""
    for attempt in range(1, MAX_ATTEMPTS_PER_URL + 1):
        before = _size(part)
        try:
            _transfer(url, part, timeout=timeout, progress_every=progress_every, log=log)
            return
        except _RETRYABLE as exc:
            if attempt == MAX_ATTEMPTS_PER_URL or _size(part) <= before:
                raise
            log(
                f"{url}: transfer broke ({_describe_error(exc)}); resuming at {_size(part)} bytes "
                f"(attempt {attempt + 1}/{MAX_ATTEMPTS_PER_URL})"
            )


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
                log(
                    f"{url}: server resumed at the wrong place ({start}, asked {offset}); "
                    "starting over"
                )
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


def _copy_with_progress(
    response: Any,
    part: Path,
    mode: str,
    offset: int,
    total: int | None,
    progress_every: int,
    log: Log,
) -> None:
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
