"""Copy a whole ledger from one event store to another, then prove the copy is exact.

Pure over two :class:`ledger.log.store.EventStore` objects (the CLI's ``copy`` is a thin
wrapper, writing through :func:`ledger.app.staging.staged_target`). The source's hash chain is
verified whole before the first record is written, and only records that link to that
verified chain are copied. Records are read from the source in position order and appended
to the target in transactions of up to ``batch_size`` records: one ``append_many`` each, holding one
batch per run of consecutive records of one stream, each batch with the exact expected
stream version (so a copy of many domains costs one commit per transaction, not one per
run). Everything a record carries is kept: stream id and name, stream version, type, schema
version, ``recorded_at`` and the payload bytes; since the target must be empty, positions come out
identical too (a batch whose positions differ stops the copy with STORE_ERROR).

:func:`verify_copy` then reads both stores again and compares every record field by field
(every field both record classes have, so a store that adds one, such as a ``hash``, is
compared on it as well when both sides carry it) and a sha256 digest over them.

Not carried over: idempotency keys (the port does not expose them) and anything a backend
keeps beside the events (snapshots are caches a backend rebuilds).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ledger.app.integrity import verify_chain
from ledger.app.json_types import CopyJSON
from ledger.domain.errors import LedgerError
from ledger.log.chain import GENESIS, malformed, record_hash
from ledger.log.records import NewRecord, StoredRecord, append_groups, to_append
from ledger.log.store import EventStore, ExpectedVersion

BATCH = 500  # records at most per transaction (append_many call)
Progress = Callable[[int], None]  # called with how many more records were handled


@dataclass(frozen=True)
class Mismatch:
    """The first difference between two stores."""

    position: int
    field: str
    source: Any
    target: Any

    def describe(self) -> str:
        """One line naming the position and the field that differ."""
        def short(v: Any) -> str:
            text = repr(v)
            return text if len(text) <= 60 else text[:57] + "..."

        return (f"position {self.position}: {self.field} differs "
                f"(source {short(self.source)}, target {short(self.target)})")


@dataclass(frozen=True)
class VerifyResult:
    """What :func:`verify_copy` found."""

    events: int  # records compared (the source's count up to ``upto``)
    source_digest: str
    target_digest: str
    fields: tuple[str, ...]  # the fields compared
    mismatch: Mismatch | None = None

    @property
    def identical(self) -> bool:
        """Whether every record matched and the digests agree."""
        return self.mismatch is None and self.source_digest == self.target_digest


@dataclass(frozen=True)
class CopyReport:
    """What :func:`copy_store` did."""

    source: str
    target: str
    events: int
    streams: int
    batches: int  # transactions (append_many calls)
    verify: VerifyResult | None = None

    def to_dict(self) -> CopyJSON:
        """Plain data for ``--json``."""
        out: CopyJSON = {
            "source": self.source, "target": self.target, "events": self.events,
            "streams": self.streams, "batches": self.batches,
        }
        if self.verify is not None:
            v = self.verify
            out["verified"] = v.identical
            out["source_digest"] = v.source_digest
            out["target_digest"] = v.target_digest
            out["fields"] = list(v.fields)
            out["mismatch"] = v.mismatch.describe() if v.mismatch else None
        return out


def _label(store: EventStore) -> str:
    return str(getattr(store, "display", None) or getattr(store, "url", "?"))


def copy_store(
    source: EventStore,
    target: EventStore,
    *,
    batch_size: int = BATCH,
    verify: bool = True,
    progress: Progress | None = None,
    verify_progress: Progress | None = None,
) -> CopyReport:
    """Copy every record of ``source`` (up to its end when the copy starts) into ``target``.

    The source's whole hash chain is verified before anything is written (STORE_ERROR
    naming the first bad position otherwise), and each record copied is checked to be one
    of those verified. ``target`` must be empty (OPERATION_INVALID otherwise, nothing
    written); a copy that fails part-way leaves what it appended (use
    :func:`ledger.app.staging.staged_target` for all or nothing). ``progress``
    is called with the number of records each transaction appended (``batches`` in the
    report counts transactions); ``verify_progress`` likewise while :func:`verify_copy`
    runs (when ``verify``). Events appended to the source while the copy runs are not
    copied (the copy is of the ledger as it stood when it began).
    """
    if batch_size < 1:
        raise LedgerError("INVALID_ARG", f"batch size must be >= 1, not {batch_size}")
    existing = target.last_position()
    if existing:
        raise LedgerError(
            "OPERATION_INVALID",
            f"target store {_label(target)} is not empty ({existing} events); "
            "copy only into an empty store",
        )
    end, head_hash = _verified_head(source)
    versions: dict[str, int] = {}
    copied = batches = 0
    records = _as_verified(source, source.read_all(after=0, limit=end), end, head_hash)
    for group in append_groups(records, batch_size):
        appends: list[tuple[list[NewRecord], ExpectedVersion]] = []
        for run in group:
            sid = run[0].stream_id
            expected = versions.get(sid, 0)
            if run[0].stream_version != expected + 1:
                raise LedgerError(
                    "STORE_ERROR",
                    f"source store {_label(source)} has a gap in stream {sid}: version "
                    f"{run[0].stream_version} at position {run[0].position} follows {expected}",
                )
            appends.append(([to_append(r) for r in run], expected))
            versions[sid] = run[-1].stream_version
        written = target.append_many(appends)
        for run, stored in zip(group, written, strict=True):
            for src, dst in zip(run, stored, strict=True):
                if (dst.position, dst.stream_version) != (src.position, src.stream_version):
                    raise LedgerError(
                        "STORE_ERROR",
                        f"target store {_label(target)} stored position {src.position} (stream "
                        f"version {src.stream_version}) as position {dst.position} (version "
                        f"{dst.stream_version}); was something else writing to it?",
                    )
        n = sum(len(run) for run in group)
        copied += n
        batches += 1
        if progress is not None:
            progress(n)
    result = verify_copy(source, target, upto=end, progress=verify_progress) if verify else None
    return CopyReport(source=_label(source), target=_label(target), events=copied,
                      streams=len(versions), batches=batches, verify=result)


def _verified_head(source: EventStore) -> tuple[int, str]:
    """The source's last position and its hash, once its whole chain is verified
    (STORE_ERROR naming the first bad position otherwise)."""
    end = source.last_position()
    report = verify_chain(source.read_all(after=0, limit=end))
    if not report.ok or report.head_position != end:
        why = report.line() if not report.ok else f"it ends at {report.head_position}, not {end}"
        raise LedgerError("STORE_ERROR", f"cannot copy source store {_label(source)}: {why}; "
                          "nothing was copied")
    return end, report.head_hash


def _as_verified(
    source: EventStore, records: Iterable[StoredRecord], end: int, head_hash: str
) -> Iterator[StoredRecord]:
    """``records`` (positions 1 to ``end``), each checked to link to the one before, the
    last to ``head_hash``: exactly the records :func:`_verified_head` verified."""
    prev, expected = GENESIS, 1
    for rec in records:
        if malformed(rec) or rec.position != expected or record_hash(rec, prev) != rec.hash:
            break
        yield rec
        prev, expected = rec.hash, expected + 1
    if expected - 1 != end or prev != head_hash:
        raise LedgerError("STORE_ERROR", f"source store {_label(source)} changed while it was "
                          f"copied (at position {expected}); the copy was abandoned")


def record_fields(*records: StoredRecord) -> tuple[str, ...]:
    """The dataclass fields every one of ``records`` has, in the first one's order."""
    names = [f.name for f in dataclasses.fields(records[0])]
    for rec in records[1:]:
        own = {f.name for f in dataclasses.fields(rec)}
        names = [n for n in names if n in own]
    return tuple(names)


def _put(h: Any, value: Any) -> None:
    if isinstance(value, bytes | bytearray | memoryview):
        data = b"b" + bytes(value)
    elif isinstance(value, float):
        data = b"f" + value.hex().encode()
    else:
        data = b"s" + repr(value).encode()
    h.update(len(data).to_bytes(8, "big"))
    h.update(data)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bytes | bytearray | memoryview) and isinstance(
        b, bytes | bytearray | memoryview
    ):
        return bytes(a) == bytes(b)
    if isinstance(a, int | float) and isinstance(b, int | float):
        return float(a) == float(b)
    return bool(a == b)


def verify_copy(
    source: EventStore,
    target: EventStore,
    *,
    upto: int | None = None,
    progress: Progress | None = None,
) -> VerifyResult:
    """Compare ``target`` with ``source`` record by record (up to position ``upto``).

    Every field both records carry is compared (a field only one store keeps is skipped,
    a field both keep, such as a ``hash``, must match); a missing or extra record in the
    target is a mismatch too. The digests are sha256 over the compared fields of each
    record, in position order.
    """
    end = source.last_position() if upto is None else upto
    hs, ht = hashlib.sha256(), hashlib.sha256()
    fields: tuple[str, ...] = ()
    mismatch: Mismatch | None = None
    count = 0
    src_iter = source.read_all(after=0, limit=end)
    dst_iter = target.read_all(after=0, limit=end + 1)  # one more: an extra record differs
    pending = 0
    for src in src_iter:
        dst = next(dst_iter, None)
        count += 1
        if dst is None:
            mismatch = mismatch or Mismatch(src.position, "record", "present", "missing")
            break
        names = record_fields(src, dst)
        fields = fields or names
        for name in names:
            a, b = getattr(src, name), getattr(dst, name)
            if name == "recorded_at":  # a REAL column may hand back a whole number as int
                a, b = float(a), float(b)
            _put(hs, a)
            _put(ht, b)
            if mismatch is None and not _same(a, b):
                mismatch = Mismatch(src.position, name, a, b)
        pending += 1
        if progress is not None and pending >= BATCH:
            progress(pending)
            pending = 0
    if progress is not None and pending:
        progress(pending)
    if mismatch is None:
        extra = next(dst_iter, None)
        if extra is not None:
            mismatch = Mismatch(extra.position, "record", "missing", "present")
    return VerifyResult(events=count, source_digest=hs.hexdigest(),
                        target_digest=ht.hexdigest(), fields=fields, mismatch=mismatch)
