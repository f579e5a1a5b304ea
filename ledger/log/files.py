"""Files replaced atomically and durably.

:func:`replacing` writes a temporary file beside the target, fsyncs it, renames it over the
target and fsyncs the folder, so that after a crash the path holds the old contents or the
new, never a mix, and the rename itself is not lost. Used by log exports, the timeline, the
msgpack log's snapshot sidecar and the mock hypervisor's state file. :func:`cannot_write` is
the one-line error for an ``OSError`` it raised (a full disk, no inodes left, an I/O error).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Literal

from ledger.domain.errors import LedgerError


def fsync_dir(folder: str | Path) -> None:
    """fsync a directory, making the entries just created or renamed in it durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def cannot_write(path: str | Path, err: OSError) -> LedgerError:
    """SYSTEM_ERROR ``cannot write PATH: <why>`` for an ``OSError`` writing ``path``."""
    return LedgerError("SYSTEM_ERROR", f"cannot write {path}: {err.strerror or err}")


@contextmanager
def replacing(
    path: str | Path, mode: Literal["wb", "w"] = "wb", durable: bool = True
) -> Iterator[IO[Any]]:
    """``with replacing(path) as f: f.write(...)``: ``path`` gets what was written once the
    block ends, atomically and (unless ``durable`` is False: no fsync, so it survives a
    killed process but maybe not a power loss) durably (mode 0644); if the block raises,
    ``path`` is left as it was and the temporary file is removed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)
