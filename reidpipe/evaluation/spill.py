"""The query x gallery values of the re-ranker's pass, kept until the final distances: in memory,
or spilled to an unlinked temporary file when they are too large."""

from __future__ import annotations

import logging
import os
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from reidpipe.errors import ReidpipeError

log = logging.getLogger(__name__)

_KEEP_IN_MEMORY_BYTES = 1 << 30  # query x gallery distances above this go to a temporary file


class QueryRows:
    """The query x gallery values of the pass (``-d/2``), kept for the final combination.

    In memory (the strips themselves) up to ``_KEEP_IN_MEMORY_BYTES``; above, in an unlinked
    temporary file (removed by the OS however the process ends) written by a background thread,
    so the pass does not wait on disk, and read ahead while the previous rows are combined.
    """

    def __init__(self, num_query: int, num_gallery: int) -> None:
        self.shape = (num_query, num_gallery)
        self.row_bytes = 4 * num_gallery
        self._strips: dict[int, np.ndarray] | None = None
        self._file = None
        self._io: ThreadPoolExecutor | None = None
        self._writes: list[Future] = []
        self._read_ahead: tuple[int, int, Future] | None = None
        if num_query * self.row_bytes <= _KEEP_IN_MEMORY_BYTES:
            self._strips = {}
        else:
            # Open for the ranker's lifetime; closing it (or the process ending) deletes it.
            self._file = tempfile.TemporaryFile(prefix="reidpipe-rerank-")  # noqa: SIM115
            log.info(
                "re-ranking: the %d x %d query x gallery distances (%.1f GB) go to a "
                "temporary file in %s",
                num_query,
                num_gallery,
                num_query * self.row_bytes / 1e9,
                tempfile.gettempdir(),
            )
            self._io = ThreadPoolExecutor(max_workers=1)

    def put(self, start: int, array: np.ndarray) -> None:
        """Rows from ``start``; the array must not change afterwards (it may be written later)."""
        if self._strips is not None:
            self._strips[start] = array
            return
        while len(self._writes) >= 2:  # at most two strips wait for the disk
            self._writes.pop(0).result()
        self._writes.append(self._io.submit(self._write, start, array))

    def _write(self, start: int, array: np.ndarray) -> None:
        view, offset = memoryview(np.ascontiguousarray(array)).cast("B"), start * self.row_bytes
        try:
            while len(view):
                done = os.pwrite(self._file.fileno(), view, offset)
                view, offset = view[done:], offset + done
        except OSError as exc:
            total = self.shape[0] * self.row_bytes / 1e9
            raise ReidpipeError(
                f"re-ranking keeps the {self.shape[0]} x {self.shape[1]} query x gallery distances "
                f"({total:.1f} GB) in a temporary file in {tempfile.gettempdir()} and could not "
                f"write it: {exc}; free space there or point TMPDIR elsewhere"
            ) from None

    def finish_writes(self) -> None:
        for write in self._writes:
            write.result()
        self._writes = []

    def _read(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, self.shape[1]), dtype=np.float32)
        view, offset = memoryview(out).cast("B"), start * self.row_bytes
        while len(view):
            done = os.preadv(self._file.fileno(), [view], offset)
            view, offset = view[done:], offset + done
        return out

    def get(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) (read-only); from the file, the next rows of the same size are read
        meanwhile."""
        if self._strips is not None:
            if start in self._strips and len(self._strips[start]) == stop - start:
                return self._strips[start]
            return np.concatenate(
                [
                    strip[max(0, start - first) : stop - first]
                    for first, strip in sorted(self._strips.items())
                    if first < stop and first + len(strip) > start
                ]
            )
        ahead, self._read_ahead = self._read_ahead, None
        rows = (
            ahead[2].result() if ahead and ahead[:2] == (start, stop) else self._read(start, stop)
        )
        following = (stop, min(self.shape[0], 2 * stop - start))
        if following[0] < following[1]:
            self._read_ahead = (*following, self._io.submit(self._read, *following))
        return rows
