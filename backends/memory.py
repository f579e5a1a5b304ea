"""An in-process event store (``memory://``): for tests and dry runs, gone on close.

Every method takes one :class:`threading.RLock`, so one store may be shared by threads.
Positions are the list index + 1, hence global, 1-based and gapless. Opened read-only it is
an empty store that refuses every write.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

from ledger.domain.errors import LedgerError
from ledger.log import locks
from ledger.log.chain import GENESIS
from ledger.log.records import NewRecord, StoredRecord
from ledger.log.store import ANY, ExpectedVersion, ScanRow
from ledger.log.urls import scheme_of

from ._common import (
    Batch,
    check_batch,
    check_batches,
    digest,
    idempotency_mismatch,
    plan,
    read_only,
    scan_pages,
)


class MemoryStore:
    """An :class:`ledger.log.store.EventStore` held in a list; thread-safe, not durable."""

    def __init__(self, url: str = "memory://", readonly: bool = False) -> None:
        self.url = url
        self.readonly = readonly
        self._mutex = threading.RLock()
        self._records: list[StoredRecord] = []
        self._streams: dict[str, list[int]] = {}  # stream id -> positions, in version order
        self._idempotency: dict[str, tuple[str, int, int]] = {}  # key -> digest, first, last
        self._stream_locks: dict[str, threading.Lock] = {}
        self._holders: dict[str, str] = {}  # stream id -> who holds its lock
        self.lock_timeout: float | None = None  # seconds lock() waits (None: the default)
        self._snapshots: dict[str, tuple[int, bytes]] = {}
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise LedgerError("STORE_ERROR", f"store {self.url} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise read_only(self.url)

    def append(
        self,
        records: Sequence[NewRecord],
        expected_version: ExpectedVersion = ANY,
        idempotency_key: str | None = None,
    ) -> list[StoredRecord]:
        """Append records of one stream atomically; see the EventStore contract."""
        stream_id = check_batch(records)
        with self._mutex:
            self._check_writable()
            if stream_id is None:
                return []
            if idempotency_key is not None:
                seen = self._idempotency.get(idempotency_key)
                if seen is not None:
                    if seen[0] != digest(records):
                        raise idempotency_mismatch(idempotency_key)
                    return self._records[seen[1] - 1 : seen[2]]
            [new] = self._commit([(stream_id, records, expected_version)])
            if idempotency_key is not None:
                self._idempotency[idempotency_key] = (
                    digest(records), new[0].position, new[-1].position
                )
            return list(new)

    def append_many(
        self, batches: Sequence[tuple[Sequence[NewRecord], ExpectedVersion]]
    ) -> list[list[StoredRecord]]:
        """Append several one-stream batches atomically; see the EventStore contract."""
        checked = check_batches(batches)
        with self._mutex:
            self._check_writable()
            return [list(new) for new in self._commit(checked)]

    def _commit(self, batches: Sequence[Batch | None]) -> list[list[StoredRecord]]:
        """Plan every batch (checking each expected version), then apply them all: a
        conflict in any batch leaves the store untouched. Call it holding ``_mutex``."""
        streams = {b[0] for b in batches if b is not None}
        current = {sid: len(self._streams.get(sid, ())) for sid in streams}
        prev = self._records[-1].hash if self._records else GENESIS
        out = plan(batches, current, len(self._records) + 1, prev)
        for new in out:
            if new:
                self._records.extend(new)
                self._streams.setdefault(new[0].stream_id, []).extend(r.position for r in new)
        return out

    def read_all(self, after: int = 0, limit: int | None = None) -> Iterator[StoredRecord]:
        """Records with position > ``after``, oldest first, at most ``limit`` of them."""
        with self._mutex:
            self._check_open()
            start = max(after, 0)
            stop = len(self._records) if limit is None else min(len(self._records), start + limit)
            batch = self._records[start:stop]
        return iter(batch)

    def scan(self, after: int = 0) -> Iterator[list[ScanRow]]:
        """Every record after ``after`` as lean rows, in pages (see EventStore.scan)."""
        return scan_pages(self.read_all(after))

    def read_stream(self, stream_id: str, after_version: int = 0) -> Iterator[StoredRecord]:
        """Records of one stream with version > ``after_version``, oldest first."""
        with self._mutex:
            self._check_open()
            positions = self._streams.get(stream_id, [])[max(after_version, 0) :]
            batch = [self._records[p - 1] for p in positions]
        return iter(batch)

    def stream_version(self, stream_id: str) -> int:
        """The stream's current version (0 when it has no events)."""
        with self._mutex:
            self._check_open()
            return len(self._streams.get(stream_id, []))

    def last_position(self) -> int:
        """The highest position (0 when empty)."""
        with self._mutex:
            self._check_open()
            return len(self._records)

    @contextmanager
    def lock(self, stream_id: str) -> Iterator[None]:
        """A per-stream :class:`threading.Lock` (excludes threads of this process only),
        waited for at most ``lock_timeout`` seconds (ledger/log/locks.py)."""
        with self._mutex:
            self._check_writable()
            lk = self._stream_locks.setdefault(stream_id, threading.Lock())
        limit = locks.timeout_from_env() if self.lock_timeout is None else self.lock_timeout
        locks.wait(lambda: lk.acquire(blocking=False), limit,
                   f"the ledger lock of stream {stream_id} in {self.url}",
                   lambda: self._holders.get(stream_id))
        self._holders[stream_id] = f"thread {threading.current_thread().name} of this process"
        try:
            yield
        finally:
            self._holders.pop(stream_id, None)
            lk.release()

    @contextmanager
    def lock_all(self, stream_ids: Sequence[str]) -> Iterator[None]:
        """Each stream's lock, in sorted order."""
        with ExitStack() as stack:
            for stream_id in sorted(set(stream_ids)):
                stack.enter_context(self.lock(stream_id))
            yield

    def save_snapshot(self, key: str, position: int, data: bytes) -> None:
        """Keep ``(position, data)`` under ``key`` (replacing the previous one)."""
        with self._mutex:
            self._check_writable()
            self._snapshots[key] = (int(position), bytes(data))

    def load_snapshot(self, key: str) -> tuple[int, bytes] | None:
        """The ``(position, data)`` saved under ``key``, or None."""
        with self._mutex:
            self._check_open()
            return self._snapshots.get(key)

    def close(self) -> None:
        """Drop the records; later calls raise STORE_ERROR."""
        with self._mutex:
            self._closed = True
            self._records = []
            self._streams = {}
            self._idempotency = {}
            self._snapshots = {}

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_url(url: str, readonly: bool = False) -> MemoryStore:
    """A new, empty :class:`MemoryStore` for ``memory://`` (each call is a new store)."""
    if scheme_of(url) != "memory":
        raise LedgerError("STORE_URL", f"'{url}' is not a memory:// URL")
    return MemoryStore(url, readonly)
