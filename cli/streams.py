"""The process's stdout and stderr, watched so that a failed write is known as such.

:func:`watched` puts ``sys.stdout`` / ``sys.stderr`` on :class:`Watched` descriptors for the
length of a command: an ``OSError`` they raised is the output's (a closed pipe, a full
device), not some other file's. :func:`silence` points a failed stream's descriptor at
``/dev/null``, so that nothing is written and nothing fails when the interpreter flushes it
at exit (the Python docs' note on SIGPIPE).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO


class Watched(io.FileIO):
    """A descriptor of the process's output that remembers the first write that failed."""

    error: OSError | None = None

    def write(self, b: Any) -> int:
        try:
            return super().write(b)
        except OSError as e:
            self.error = self.error or e
            raise


def _watch(stream: TextIO) -> tuple[TextIO, Watched] | None:
    """``stream`` rebuilt on a :class:`Watched` descriptor (None when it has no descriptor)."""
    try:
        fd = stream.fileno()
        stream.flush()
    except (OSError, ValueError, AttributeError):
        return None
    raw = Watched(fd, "w", closefd=False)
    text = io.TextIOWrapper(io.BufferedWriter(raw), encoding=stream.encoding,
                            errors=stream.errors, line_buffering=bool(stream.line_buffering))
    return text, raw


@contextlib.contextmanager
def watched() -> Iterator[list[Watched]]:
    """Run the block with the process's own stdout and stderr watched (the list holds their
    :class:`Watched` descriptors; empty when they were already replaced, e.g. under a test
    runner); the originals are put back afterwards."""
    saved: list[tuple[str, TextIO]] = []
    raws: list[Watched] = []
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None or stream is not getattr(sys, f"__{name}__"):
            continue
        rebuilt = _watch(stream)
        if rebuilt is not None:
            saved.append((name, stream))
            setattr(sys, name, rebuilt[0])
            raws.append(rebuilt[1])
    try:
        yield raws
    finally:
        for name, stream in saved:
            with contextlib.suppress(OSError, ValueError):
                getattr(sys, name).flush()
            setattr(sys, name, stream)


def failed(raws: list[Watched]) -> OSError | None:
    """The first write error of the watched streams, silencing each stream that failed."""
    first = None
    for raw in raws:
        if raw.error is not None:
            first = first or raw.error
            silence(raw.fileno())
    return first


def silence(fd: int) -> None:
    """Point ``fd`` at /dev/null: later writes (the interpreter's flush at exit) go nowhere."""
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)


def flush() -> None:
    """Flush stdout then stderr (raising what a failed write raises)."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
