"""Safe unpacking checks for dataset archives: every entry is checked before anything is written
(absolute paths, ``..``, links and special files refused; zip bombs and oversize archives refused)."""

from __future__ import annotations

import re
import stat
import zipfile
from pathlib import Path

from reidpipe.errors import ReidpipeError

# Market-1501 is JPEGs, which barely compress; a large entry expanding 100x is a zip bomb.
MAX_COMPRESSION_RATIO = 100
RATIO_CHECK_MIN_BYTES = 1 << 20


def _entry_parts(info: zipfile.ZipInfo, archive: Path) -> tuple[str, ...]:
    """The checked path components of an entry; refuses absolute paths, ``..`` and links."""
    name = info.filename
    where = f"archive {archive}: entry {name!r}"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise ReidpipeError(f"{where} has an absolute path; refusing to extract")
    parts = tuple(p for p in re.split(r"[/\\]", name) if p not in ("", "."))
    if ".." in parts:
        raise ReidpipeError(
            f"{where} points outside the dataset folder ('..'); refusing to extract"
        )
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        raise ReidpipeError(f"{where} is a symbolic link; refusing to extract")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise ReidpipeError(f"{where} is a special file (mode {kind:o}); refusing to extract")
    return parts


def plan_entries(
    zf: zipfile.ZipFile, archive: Path, max_bytes: int
) -> list[tuple[zipfile.ZipInfo, tuple[str, ...]]]:
    """Check every entry before writing anything; returns (entry, path in the dataset folder).

    zipfile stops each entry at its declared size (a larger stream fails its CRC), so the
    declared sizes bound what extraction writes.
    """
    entries = [(info, _entry_parts(info, archive)) for info in zf.infolist()]
    entries = [(info, parts) for info, parts in entries if parts]
    seen: set[tuple[str, ...]] = set()
    for info, parts in entries:
        if parts in seen and not info.is_dir():
            raise ReidpipeError(
                f"archive {archive} holds the entry {info.filename!r} twice; "
                "refusing to guess which copy is meant"
            )
        seen.add(parts)
    total = 0
    for info, _ in entries:
        if info.file_size >= RATIO_CHECK_MIN_BYTES and info.file_size > MAX_COMPRESSION_RATIO * max(
            info.compress_size, 1
        ):
            raise ReidpipeError(
                f"archive {archive}: entry {info.filename!r} expands {info.compress_size} -> "
                f"{info.file_size} bytes (more than {MAX_COMPRESSION_RATIO}x); refusing a "
                "possible zip bomb"
            )
        total += info.file_size
        if total > max_bytes:
            raise ReidpipeError(
                f"archive {archive} unpacks to more than data.max_extract_bytes = {max_bytes} "
                f"bytes (reached at entry {info.filename!r}); refusing to extract"
            )
    tops = {parts[0] for _, parts in entries}
    if len(tops) == 1 and not any(len(p) == 1 and not i.is_dir() for i, p in entries):
        entries = [(info, parts[1:]) for info, parts in entries if len(parts) > 1]
    return entries
