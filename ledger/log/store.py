"""The event store port: what ``backends/`` implement (:class:`EventStore`).

The hypervisor port is :mod:`ledger.domain.hypervisor`. Nothing in ``ledger/`` imports
``backends/`` or ``adapters/``; ``ledger.app.plugins`` opens them by URL.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Literal, Protocol, runtime_checkable

from ledger.log.records import NewRecord, StoredRecord

ANY: Literal["any"] = "any"
NO_STREAM: Literal["no_stream"] = "no_stream"
ExpectedVersion = int | Literal["any", "no_stream"]
# (position, stream_id, stream_version, schema_version, payload): what EventStore.scan yields
ScanRow = tuple[int, str, int, int, bytes]


@runtime_checkable
class EventStore(Protocol):
    """An append-only log of events, in streams (one per domain) with global positions.

    Contract (tests/store_contract.py runs it against every backend):

    * ``append`` writes all ``records`` (one stream) atomically or not at all. Positions
      are global, 1-based, gapless and increasing; stream versions are 1-based and gapless.
    * ``expected_version`` is the stream's version before the append: an int (0 means
      empty), ``"no_stream"`` (same as 0) or ``"any"``. A mismatch raises
      :class:`ledger.domain.errors.VersionConflict` and writes nothing.
    * ``idempotency_key``: a second append with the same key and the same payloads writes
      nothing and returns the originally stored records; with different payloads it raises
      LedgerError("OPERATION_FAILED").
    * ``append_many`` writes several batches, each of one stream with its own expected
      version, in one atomic, durable transaction: all or nothing. Each batch's expected
      version is checked as ``append`` checks it, against the stream as the earlier batches
      of the call left it (a stream may appear in several batches); positions are
      consecutive in the order given and the hash chain runs on across the batches exactly
      as if they had been appended one after another. No idempotency keys.
    * Records are durable once ``append`` (or ``append_many``) returns.
    * Every stored record carries ``hash``: ``ledger.log.chain.record_hash(record, prev)``
      where ``prev`` is the hash at ``position - 1`` (``ledger.log.chain.GENESIS`` for 1),
      computed inside the append's transaction or lock.
    * ``save_snapshot`` / ``load_snapshot`` keep one opaque blob per key next to the log
      (a cache of projections: never part of the chain, may be overwritten any time).
    """

    url: str

    def append(
        self,
        records: Sequence[NewRecord],
        expected_version: ExpectedVersion = ANY,
        idempotency_key: str | None = None,
    ) -> list[StoredRecord]:
        """Append records of one stream; return them as stored."""
        ...

    def append_many(
        self, batches: Sequence[tuple[Sequence[NewRecord], ExpectedVersion]]
    ) -> list[list[StoredRecord]]:
        """Append several batches, each of one stream with its own expected version (checked
        as ``append`` checks it), in ONE atomic, durable transaction: all or nothing. Positions
        are consecutive in the order given; a stream may appear in several batches (each
        batch's expected version is checked against the stream as the earlier batches of the
        call left it). Returns each batch's stored records. An empty batch list, or empty
        batches, write nothing. No idempotency keys."""
        ...

    def read_all(self, after: int = 0, limit: int | None = None) -> Iterator[StoredRecord]:
        """Records with position > ``after``, oldest first."""
        ...

    def read_stream(self, stream_id: str, after_version: int = 0) -> Iterator[StoredRecord]:
        """Records of one stream with version > ``after_version``, oldest first."""
        ...

    def scan(self, after: int = 0) -> Iterator[Sequence[ScanRow]]:
        """Every record with position > ``after``, oldest first, as lean :data:`ScanRow`
        tuples in pages: the bulk read a catch-up folds (``read_all`` without the fields a
        fold never reads)."""
        ...

    def stream_version(self, stream_id: str) -> int:
        """The stream's current version (0 when it has no events)."""
        ...

    def last_position(self) -> int:
        """The highest position in the store (0 when empty)."""
        ...

    def lock(self, stream_id: str) -> AbstractContextManager[None]:
        """A per-stream lock held across check-apply-append (may be a no-op in memory)."""
        ...

    def lock_all(self, stream_ids: Sequence[str]) -> AbstractContextManager[None]:
        """The locks of several streams, held together (taken in one order, so two holders
        of overlapping sets never deadlock) by one thread, while threads work on them."""
        ...

    def save_snapshot(self, key: str, position: int, data: bytes) -> None:
        """Store ``data`` (reflecting the log up to ``position``) under ``key``, replacing
        any earlier snapshot of that key atomically."""
        ...

    def load_snapshot(self, key: str) -> tuple[int, bytes] | None:
        """The ``(position, data)`` last saved under ``key``, or None."""
        ...

    def close(self) -> None:
        """Release files and connections."""
        ...
