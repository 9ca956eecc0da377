"""Decoding one dataset image, with one clear message for each way the file can be wrong.

Shared by validation, splitting, training and extraction, so a file that validation calls broken
is refused with the same words wherever it is met later: missing, a directory, a FIFO, socket or
device (refused before it is opened: reading one would block), a symbolic link loop, empty,
not an image at all (a text file under a ``.jpg`` name), another format under a JPEG name,
truncated, or so large that decoding it would exhaust memory (a decompression bomb).
"""

from __future__ import annotations

import hashlib
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from reidpipe.devices import usable_cpus
from reidpipe.errors import ReidpipeError
from reidpipe.regular_file import NotRegularFile, read_regular_bytes

JPEG_SUFFIXES = (".jpg", ".jpeg")


class ImageError(ReidpipeError):
    """An image file that cannot be used: ``image <path> <problem>``. One-argument construction
    stays possible, as a DataLoader worker re-raises the error that way."""

    def __init__(self, message: str, problem: str = "") -> None:
        super().__init__(message)
        self.problem = problem or message


def _error(name: str | Path, problem: str) -> ImageError:
    return ImageError(f"image {name} {problem}", problem)


def _unidentified(data: bytes) -> str:
    text = data[:64].decode("utf-8", "replace").rstrip("\ufffd")  # a cut multi-byte character
    if text and all(c.isprintable() or c in "\r\n\t" for c in text) and "\ufffd" not in text:
        return f"is a text file, not an image (it starts with {text.strip()[:32]!r})"
    return f"is not an image in any format Pillow reads (first bytes: {data[:8].hex(' ')})"


def decode_bytes(data: bytes, name: str | Path) -> Image.Image:
    """The fully decoded image held in ``data`` (the content of the file ``name``)."""
    if not data:
        raise _error(name, "is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise _error(
            name, f"is too large to decode safely (a decompression bomb?): {exc}"
        ) from None
    except UnidentifiedImageError:
        raise _error(name, _unidentified(data)) from None
    except (OSError, SyntaxError, ValueError) as exc:  # a header cut short or mangled
        raise _error(name, f"is truncated or corrupt: {exc}") from None
    width, height = image.size
    # Pillow only warns between its limit and twice it; a re-id crop is never that large.
    if Image.MAX_IMAGE_PIXELS and width * height > Image.MAX_IMAGE_PIXELS:
        raise _error(
            name,
            f"is {width}x{height} pixels, over Pillow's "
            f"{Image.MAX_IMAGE_PIXELS}-pixel limit: refusing a possible "
            "decompression bomb",
        )
    if Path(name).suffix.lower() in JPEG_SUFFIXES and image.format != "JPEG":
        raise _error(
            name,
            f"holds {image.format} data under a JPEG name "
            f"({Path(name).suffix}); convert it or rename it",
        )
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise _error(name, f"is truncated or corrupt: {exc}") from None
    return image


def read_bytes(path: str | Path) -> bytes:
    """The bytes of an image file, or one clear error naming what is there instead."""
    path = Path(path)
    try:
        return read_regular_bytes(path)
    except FileNotFoundError:
        if path.is_symlink():
            raise _error(path, f"is a broken symbolic link (to {path.readlink()})") from None
        raise _error(path, "does not exist") from None
    except NotRegularFile as exc:  # a directory, or a FIFO or device that would block the read
        raise _error(path, f"is {exc.kind}, not an image file") from None
    except OSError as exc:
        if path.is_symlink():
            try:
                path.resolve(strict=True)
            except (OSError, RuntimeError):
                raise _error(path, "is a symbolic link loop") from None
        raise _error(path, f"cannot be read: {exc.strerror or exc}") from None


def decode_file(path: str | Path) -> Image.Image:
    """The fully decoded image of the file ``path``."""
    return decode_bytes(read_bytes(path), path)


@dataclass
class ImageCheck:
    """One file checked as validation checks it: its size and MD5, or what is wrong with it."""

    path: Path
    size: tuple[int, int] | None
    digest: str | None
    error: str | None


def check_image(path: Path) -> ImageCheck:
    """Read and fully decode ``path``; a broken file gives its problem, never an exception."""
    try:
        data = read_bytes(path)
        with decode_bytes(data, path) as image:
            size = image.size
    except ImageError as exc:
        return ImageCheck(path, None, None, exc.problem)
    return ImageCheck(path, size, hashlib.md5(data).hexdigest(), None)


def check_images(paths: list[Path]) -> list[ImageCheck]:
    """:func:`check_image` of every path, in order, on a thread pool. On an interruption the
    images not yet started are dropped, so the stage stops without decoding the rest."""
    pool = ThreadPoolExecutor(max_workers=min(32, 4 * usable_cpus()))
    try:
        return list(pool.map(check_image, paths))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
