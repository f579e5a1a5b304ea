"""Helpers every backend shares: batch checks, expected-version checks, idempotency digests.

Nothing here touches storage; each backend calls these inside its own write transaction so
the rules of :class:`ledger.log.store.EventStore` are enforced the same way everywhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence

from ledger.domain.errors import LedgerError, VersionConflict
from ledger.log.chain import chain_records as stored  # the backends' name for it
from ledger.log.chain import record_hash
from ledger.log.locks import file_lock as file_lock  # the stores' per-domain lock
from ledger.log.records import NewRecord, StoredRecord
from ledger.log.store import ANY, NO_STREAM, ExpectedVersion, ScanRow


def one_line(text: object) -> str:
    """``text`` folded onto a single line (driver errors can span several)."""
    return " ".join(str(text).split())


def check_batch(records: Sequence[NewRecord]) -> str | None:
    """The stream id shared by ``records`` (None when empty); INVALID_ARG otherwise."""
    if not records:
        return None
    stream_id = records[0].stream_id
    for rec in records:
        if not isinstance(rec, NewRecord):
            raise LedgerError("INVALID_ARG", f"expected a NewRecord, got {type(rec).__name__}")
        if rec.stream_id != stream_id:
            raise LedgerError(
                "INVALID_ARG",
                f"one append writes one stream; got {stream_id} and {rec.stream_id}",
            )
        if not isinstance(rec.payload, bytes | bytearray | memoryview):
            raise LedgerError("INVALID_ARG", "a record's payload must be bytes")
    return stream_id


def check_expected_arg(expected: ExpectedVersion) -> None:
    """INVALID_ARG unless ``expected`` is an int >= 0, ``"any"`` or ``"no_stream"``."""
    if expected in (ANY, NO_STREAM):
        return
    if isinstance(expected, bool) or not isinstance(expected, int) or expected < 0:
        raise LedgerError(
            "INVALID_ARG",
            f"expected_version must be an int >= 0, 'any' or 'no_stream', not {expected!r}",
        )


def check_expected(stream_id: str, expected: ExpectedVersion, actual: int) -> None:
    """Raise :class:`VersionConflict` unless ``actual`` satisfies ``expected``."""
    if expected == ANY:
        return
    if expected == NO_STREAM:
        if actual != 0:
            raise VersionConflict(stream_id, NO_STREAM, actual)
        return
    check_expected_arg(expected)
    if expected != actual:
        raise VersionConflict(stream_id, expected, actual)


# One batch of an append, checked: (stream id, its records, the expected version).
Batch = tuple[str, Sequence[NewRecord], ExpectedVersion]


def check_batches(
    batches: Iterable[tuple[Sequence[NewRecord], ExpectedVersion]],
) -> list[Batch | None]:
    """Each batch of an ``append_many`` call checked as :func:`check_batch` checks one (and
    its expected version's form), before anything is written; None for an empty batch."""
    out: list[Batch | None] = []
    for item in batches:
        try:
            records, expected = item
        except (TypeError, ValueError):
            raise LedgerError(
                "INVALID_ARG",
                f"append_many takes (records, expected_version) pairs, not {item!r:.60}",
            ) from None
        stream_id = check_batch(records)
        check_expected_arg(expected)
        out.append(None if stream_id is None else (stream_id, records, expected))
    return out


def plan(
    batches: Sequence[Batch | None], current: Mapping[str, int], first_position: int,
    prev_hash: str,
) -> list[list[StoredRecord]]:
    """The stored records of each batch, as if appended one after another from
    ``first_position`` (linked to ``prev_hash``, the hash at ``first_position - 1``).

    ``current`` holds the version of each stream the batches write (a missing one is 0);
    each batch's expected version is checked against its stream as the batches before it
    leave it, so a :class:`VersionConflict` in any batch is raised before anything is
    written. Call it inside the write transaction or lock, like :func:`stored`.
    """
    versions = dict(current)
    out: list[list[StoredRecord]] = []
    position, prev = first_position, prev_hash
    for batch in batches:
        if batch is None:
            out.append([])
            continue
        stream_id, records, expected = batch
        version = versions.get(stream_id, 0)
        check_expected(stream_id, expected, version)
        new = stored(records, position, version, prev)
        versions[stream_id] = version + len(new)
        position += len(new)
        prev = new[-1].hash
        out.append(new)
    return out


def digest(records: Sequence[NewRecord]) -> str:
    """sha256 over the stream, types, schema versions and payloads of a batch.

    Each field is length-prefixed so that no two different batches share a digest.
    ``recorded_at`` is left out: a retry naturally carries a new timestamp.
    """
    h = hashlib.sha256()

    def put(b: bytes) -> None:
        h.update(len(b).to_bytes(8, "big"))
        h.update(b)

    put(str(len(records)).encode())
    for rec in records:
        put(rec.stream_id.encode())
        put(rec.stream_name.encode())
        put(rec.type.encode())
        put(str(rec.schema_version).encode())
        put(bytes(rec.payload))
    return h.hexdigest()


def read_only(url: str) -> LedgerError:
    """The error for a write through a handle opened read-only."""
    return LedgerError("STORE_ERROR", f"store {url} is open read-only: a read command "
                       "writes nothing")


def missing_store(url: str) -> LedgerError:
    """The error for a read-only open of a store that does not exist (it is not created)."""
    return LedgerError("STORE_ERROR", f"store {url} does not exist (a read creates no store)")


def idempotency_mismatch(key: str) -> LedgerError:
    """The error for an idempotency key reused with different content."""
    return LedgerError(
        "OPERATION_FAILED",
        f"idempotency key '{key}' was already used for a different append",
    )


def chain_hashes(rows: Iterable[StoredRecord], prev_hash: str) -> Iterator[tuple[int, str]]:
    """``(position, hash)`` for ``rows`` (oldest first) chained from ``prev_hash``: what a
    schema migration writes for rows stored before events carried hashes."""
    for row in rows:
        prev_hash = record_hash(row, prev_hash)
        yield row.position, prev_hash


def scan_pages(records: Iterable[StoredRecord], page: int = 2000) -> Iterator[list[ScanRow]]:
    """``records`` as the pages of :data:`ledger.log.store.ScanRow` that ``scan`` yields."""
    out: list[ScanRow] = []
    for r in records:
        out.append((r.position, r.stream_id, r.stream_version, r.schema_version, r.payload))
        if len(out) >= page:
            yield out
            out = []
    if out:
        yield out
