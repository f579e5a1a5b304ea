"""The msgpack log's on-disk format: header, frames, and the checks a scan applies.

See backends/msgpack_log.py for the layout; this module holds the pieces without state.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgpack

from ledger.log import locks

MAGIC = b"CKPTLEDGER-LOG\x00"
FORMAT_VERSION = 2  # 2: frames carry the event's chain hash (13 fields); 1: 12 fields
HEADER = MAGIC + bytes([FORMAT_VERSION])
FRAME = struct.Struct(">II")
NONE = type(None)
TYPES: tuple[type | tuple[type, ...], ...] = (
    int, str, str, int, str, int, float, bytes, int, int, (str, NONE), (str, NONE), str)
LEGACY_FIELDS = 12  # a format-1 frame: no hash (computed when the log is opened)


def encode(fields: list[Any]) -> bytes:
    """One frame: ``[u32 length][u32 crc32][msgpack of fields]``."""
    body = msgpack.packb(fields, use_bin_type=True)
    return FRAME.pack(len(body), zlib.crc32(body)) + body


def decode(body: Any) -> list[Any] | None:
    """The 13 fields of a frame (12 for a format-1 frame), or None when not well formed."""
    try:
        f = msgpack.unpackb(body, raw=False, use_list=True)
    except Exception:
        return None
    if not isinstance(f, list) or len(f) not in (LEGACY_FIELDS, len(TYPES)):
        return None
    pairs = zip(f, TYPES[: len(f)], strict=True)
    if not all(isinstance(v, t) and not isinstance(v, bool) for v, t in pairs):
        return None
    return f


@contextmanager
def mapping(fd: int, size: int, start: int, shared: bool) -> Iterator[tuple[memoryview, int]]:
    """The file's bytes from ``start`` to ``size`` and their base offset: a mapping of the
    whole file when ``shared`` (nobody can shrink it meanwhile), else a private copy."""
    if not shared:
        data = os.pread(fd, size - start, start)
        with memoryview(data) as view:
            yield view, start
        return
    with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as m:
        view = memoryview(m)
        try:
            yield view, 0
        finally:
            view.release()


WRITER_WAIT = 30.0  # the writer lock is held for one append: wait at least this long


class Flock:
    """An exclusive flock on an open descriptor (the writer lock), or a shared one (a reader
    verifying the log: no writer can cut it meanwhile), waited for as ledger/log/locks.py waits,
    for the lock timeout but at least :data:`WRITER_WAIT` seconds (like SQLite's busy
    timeout: appends hold it briefly)."""

    def __init__(self, fd: int, path: str = "", timeout: float | None = None,
                 shared: bool = False) -> None:
        self.fd = fd
        self.path = path
        self.timeout = timeout
        self.mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX

    def _try(self) -> bool:
        try:
            fcntl.flock(self.fd, self.mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def __enter__(self) -> None:
        if self._try():
            return
        limit = locks.timeout_from_env() if self.timeout is None else self.timeout
        locks.wait(self._try, max(limit, WRITER_WAIT), f"the writer lock of {self.path}",
                   lambda: None)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)


def out_of_place(f: list[Any], pos: int, version: int, head: list[Any] | None) -> str | None:
    """Why a well-formed record ``f`` cannot come next (None when it can)."""
    if f[0] != pos or f[3] != version + 1:
        return f"out of sequence (position {f[0]}, stream version {f[3]})"
    first, size = (head[0], head[9]) if head else (pos, f[9])
    if f[8] != first or f[9] != size or size < 1 or f[0] > first + size - 1:
        return "inconsistent batch"
    if head and (f[1] != head[1] or f[10] is not None):
        return "inconsistent batch"
    return None


def valid_frame_at(m: memoryview, off: int, size: int) -> bool:
    """Whether a well-formed frame begins at ``off`` (and ends by ``size``)."""
    if size - off < 8:
        return False
    length, crc = FRAME.unpack_from(m, off)
    body = m[off + 8 : off + 8 + length]
    return 0 < length <= size - off - 8 and zlib.crc32(body) == crc and decode(body) is not None


def valid_frame_from(m: memoryview, start: int, size: int) -> bool:
    """Whether a well-formed frame begins at any offset >= ``start``."""
    return any(valid_frame_at(m, off, size) for off in range(start, size - 8))
