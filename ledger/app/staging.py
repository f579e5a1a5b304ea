"""A target store filled all or nothing: what ``copy`` writes into.

:func:`staged_target` yields a store to fill; when the block ends cleanly the store at the
URL holds what was written, and when it raises the URL is left as it was:

* file stores (``sqlite:``, a bare path, ``msgpack:``) are built under a temporary name in
  the target's folder and renamed over the target at the end; on failure the temporary file
  (and its ``-wal``, ``-shm``, ``.lock``, ``.snapshot`` sidecars) is removed, so an absent
  target stays absent and an existing (empty) one is never touched;
* a store with a ``transaction()`` context manager (PostgreSQL) is written inside one
  transaction that a failure rolls back; a store its opening created (``created``) is
  removed again with its ``discard()``;
* any other store is written directly (no rollback is possible through the port).

An existing target must hold no events (OPERATION_INVALID otherwise, nothing written).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ledger.domain.errors import LedgerError
from ledger.log.files import fsync_dir
from ledger.log.store import EventStore
from ledger.log.urls import path_of, scheme_of

Opener = Callable[[str], EventStore]
_FILE_SCHEMES = {None: "sqlite", "sqlite": "sqlite", "msgpack": "msgpack"}
_SIDECARS = ("-wal", "-shm", "-journal", ".lock", ".snapshot")


def _label(store: EventStore, url: str) -> str:
    return str(getattr(store, "display", None) or getattr(store, "url", None) or url)


def _must_be_empty(store: EventStore, url: str) -> None:
    existing = store.last_position()
    if existing:
        raise LedgerError(
            "OPERATION_INVALID",
            f"target store {_label(store, url)} is not empty ({existing} events); "
            "copy only into an empty store",
        )


def _remove(path: str) -> None:
    for name in (path, *(path + s for s in _SIDECARS)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


@contextmanager
def staged_target(url: str, opener: Opener) -> Iterator[EventStore]:
    """The store to fill for ``url`` (see the module docstring); ``opener`` opens a URL."""
    scheme = scheme_of(url)
    if scheme not in _FILE_SCHEMES or ":memory:" in url:
        with _in_transaction(url, opener) as store:
            yield store
        return
    path = os.path.abspath(path_of(url))
    folder = os.path.dirname(path)
    if os.path.lexists(path) or not os.path.isdir(folder):
        existing = opener(url)  # refuses what is not a usable store, creates nothing new
        try:
            _must_be_empty(existing, url)
        finally:
            existing.close()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".copy",
                                   dir=folder)
    except OSError as e:
        raise LedgerError("STORE_ERROR", f"cannot create a file in {folder}: "
                          f"{e.strerror}") from e
    os.close(fd)
    os.unlink(tmp)  # the store creates it (an empty file is fine too, but not for every one)
    try:
        store = opener(f"{_FILE_SCHEMES[scheme]}:///{tmp}")
        try:
            yield store
        finally:
            store.close()
        if os.path.exists(tmp + "-wal") and os.path.getsize(tmp + "-wal"):
            raise LedgerError("STORE_ERROR", f"cannot finish the copy: {tmp}-wal was not "
                              "checkpointed when the store closed")
        if os.path.lexists(path):  # checked again: nothing may have been written meanwhile
            existing = opener(url)
            try:
                _must_be_empty(existing, url)
            finally:
                existing.close()
        os.replace(tmp, path)
        fsync_dir(folder)
    finally:
        _remove(tmp)


@contextmanager
def _in_transaction(url: str, opener: Opener) -> Iterator[EventStore]:
    store = opener(url)
    try:
        _must_be_empty(store, url)
        transaction = getattr(store, "transaction", None)
        if transaction is None:
            yield store
            return
        try:
            with transaction():
                yield store
        except BaseException:
            if getattr(store, "created", False):
                with contextlib.suppress(Exception):
                    store.discard()  # type: ignore[attr-defined]
            raise
    finally:
        store.close()
