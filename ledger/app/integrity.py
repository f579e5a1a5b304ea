"""Checking the hash chain, pinning it with anchors, and moving a log between stores.

* :func:`verify_chain` walks records oldest first and reports the first position where the
  chain breaks, and why (an edited field or payload, an edited hash, a deleted, inserted or
  moved event, a gap, a position that does not increase, an anchor that does not match).
* :func:`verify_store` does that for a whole store and also folds the verified events up to
  the store's snapshot's position and compares (ledger/log/snapshot_codec.py): a snapshot the events
  do not give fails it, though its crc matches.
* :func:`head` is the ``(position, hash)`` of the newest event: write it down somewhere else
  and later ``verify-log --anchor POSITION:HASH`` proves nothing up to it was rewritten or
  cut off (the chain has no key, so an attacker can recompute it; an anchor cannot be).
* :func:`export_log` writes a deterministic file: the same ledger always gives the same
  bytes, whatever backend holds it. :func:`import_log` verifies such a file completely
  before it writes anything (the hash chain, and that every event can be read and folded
  here), then appends only what the store is missing.

Export format (version 2). ``jsonl``: one JSON object per line, compact separators, ASCII
only; ``msgpack``: the same objects as consecutive msgpack maps. First comes the header (keys
sorted)::

    {"domain": null | {"name": ..., "stream_id": ...}, "events": N,
     "format": "ckpt-ledger-export", "head": {"hash": ..., "position": ...}, "version": 2}

then one object per event, oldest first: the event exactly as ``log --jsonl`` prints it
(``ckpt-ledger/event/1``, ledger/schemas/event.schema.json), with one more field, ``record``,
holding what the stored record has beyond that shape and its chain link::

    {"schema": "ckpt-ledger/event/1", "position", ..., "data": {...},
     "record": {"schema_version", "recorded_at": <the stored float>, "hash", "prev_hash"}}

The stored payload is what the ledger writes for that event and provenance; when it is not
(an older schema version, a time inside the data that ISO 8601 rounds, bytes another writer
chose), ``record`` also holds it: ``payload_b64`` (base64) in JSON, ``payload`` (binary) in
msgpack. Reading a file rebuilds each record, checks its hash, and checks that the event's
fields are what the record shows, so neither can be edited without the other.

Version 1 (still read, and written with ``version=1``) holds the stored fields themselves:
keys sorted, ``{"hash", "position", "prev_hash", "recorded_at", "schema_version",
"stream_id", "stream_name", "stream_version", "type", "payload" | "payload_b64"}``, the
payload decoded into JSON when that packs back byte for byte, else in base64.

``--domain`` exports hold one stream: ``head`` is still the whole log's head, and each
event carries its global ``prev_hash``, so every event's own hash can be recomputed from the
file, but the events do not form a chain and such a file cannot be imported (import-log
refuses it, naming the domain).
"""

from __future__ import annotations

import base64
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import msgpack

from ledger.app.audit import event_view
from ledger.app.json_types import ChainReportJSON, ExportJSON, ImportLogJSON
from ledger.app.rebuild import Refold, SnapshotCheck
from ledger.app.views import EventView
from ledger.domain.errors import LedgerError
from ledger.log.chain import GENESIS, event_hash, is_hash, malformed, record_hash
from ledger.log.files import cannot_write, replacing
from ledger.log.fold import damage
from ledger.log.readable import first_unreadable
from ledger.log.records import (
    Provenance,
    StoredRecord,
    append_groups,
    encode_payload,
    to_append,
)
from ledger.log.store import EventStore

EXPORT_FORMAT = "ckpt-ledger-export"
EXPORT_VERSION = 2  # what export writes; import reads versions 1 and 2
ExportFormat = Literal["jsonl", "msgpack"]
_ANCHOR = re.compile(r"^\s*(\d{1,18})\s*:\s*([0-9a-fA-F]{64})\s*$")
_IMPORT_BATCH = 500  # records at most per transaction (append_many call)


# ----------------------------------------------------------------------------- verify
@dataclass
class ChainReport:
    """The outcome of :func:`verify_chain`."""

    ok: bool
    events: int  # records looked at
    head_position: int  # the last position verified intact (0: none)
    head_hash: str  # its hash (GENESIS when none)
    first_bad: int | None = None  # the first position where the chain breaks
    reason: str | None = None  # why, in one line
    anchor: tuple[int, str] | None = None  # the anchor checked, if any
    anchor_ok: bool | None = None
    snapshot: SnapshotCheck | None = None  # the store's snapshot against the events
    torn_tail: str | None = None  # what the store says lies unfinished past its last event

    def to_dict(self) -> ChainReportJSON:
        """Plain data for ``--json``."""
        return {
            "ok": self.ok,
            "events": self.events,
            "head": {"position": self.head_position, "hash": self.head_hash},
            "first_bad": (None if self.first_bad is None
                          else {"position": self.first_bad, "reason": self.reason}),
            "anchor": (None if self.anchor is None else {
                "position": self.anchor[0], "hash": self.anchor[1], "ok": self.anchor_ok}),
            "snapshot": None if self.snapshot is None else self.snapshot.to_dict(),
            "torn_tail": self.torn_tail,
        }

    def line(self) -> str:
        """One line for a terminal: what is intact, or the first bad position and why."""
        if self.ok:
            text = (f"ok: {self.events} events, hash chain intact; head "
                    f"{self.head_position}:{self.head_hash}")
            if self.anchor is not None:
                text += f"; anchor {self.anchor[0]} matches"
            if self.snapshot is not None:
                text += f"; {self.snapshot.line()}"
            if self.torn_tail is not None:
                text += f"; {self.torn_tail}"
            return text
        if self.first_bad is None and self.snapshot is not None:
            return f"hash chain intact, but {self.snapshot.line()}"
        if self.anchor_ok is False:
            return f"anchor check failed at position {self.first_bad}: {self.reason}"
        return f"hash chain broken at position {self.first_bad}: {self.reason}"


def parse_anchor(text: str) -> tuple[int, str]:
    """``POSITION:HASH`` (a position >= 0 and 64 hex digits) as ``(position, hash)``.

    Raises INVALID_ARG for anything else.
    """
    m = _ANCHOR.match(text or "")
    if m is None:
        raise LedgerError("INVALID_ARG", f"anchor '{text}' is not POSITION:HASH (a position "
                          "and a 64-hex-digit chain hash)",
                          hint="`ckpt-ledger head` prints one")
    return int(m.group(1)), m.group(2).lower()


def _links(record: StoredRecord, prev: str) -> bool:
    return (is_hash(record.hash) and malformed(record) is None
            and record_hash(record, prev) == record.hash)


def verify_chain(
    records: Iterable[StoredRecord], anchor: tuple[int, str] | None = None,
    verified: Callable[[StoredRecord], None] | None = None,
) -> ChainReport:
    """Check that ``records`` (a whole log, oldest first) form an unbroken hash chain.

    Positions must be 1, 2, 3 ...; every field must be encodable (a malformed one, such as
    a non-integer version, is reported as ``field X is malformed``); each record's ``hash``
    must be the hash of its fields and the previous record's hash. The report names the
    first bad position and a reason (telling an edited event from an edited hash, or a run
    of moved/deleted/inserted events, by looking one record ahead). With
    ``anchor = (position, hash)`` the log must also hold that position with that hash (a
    log cut short of it fails). ``verified`` is handed each record once it passed every
    check, in order.
    """
    it = iter(records)
    prev, expected, count = GENESIS, 1, 0
    anchor_ok: bool | None = True if anchor == (0, GENESIS) else None  # None: not reached

    def report(ok: bool, bad: int | None = None, why: str | None = None) -> ChainReport:
        return ChainReport(ok=ok, events=count, head_position=expected - 1, head_hash=prev,
                           first_bad=bad, reason=why, anchor=anchor, anchor_ok=anchor_ok)

    if anchor is not None and anchor[0] == 0 and anchor[1] != GENESIS:
        anchor_ok = False
        return report(False, 0, f"position 0 has hash {GENESIS}, the anchor says {anchor[1]}")
    current = next(it, None)
    while current is not None:
        count += 1
        rec, current = current, next(it, None)
        bad = malformed(rec)
        if bad is not None:
            return report(False, expected, f"field {bad} is malformed")
        if rec.position != expected:
            if rec.position > expected:
                missing = (f"position {expected}" if rec.position == expected + 1
                           else f"positions {expected}-{rec.position - 1}")
                why = f"{missing} missing (next stored event is {rec.position}): deleted events"
            else:
                why = (f"position {rec.position} comes after {expected - 1}: events "
                       "reordered or duplicated")
            return report(False, expected, why)
        if not is_hash(rec.hash):
            return report(False, expected, f"hash {rec.hash!r} is missing or malformed")
        computed = record_hash(rec, prev)
        if computed != rec.hash:
            if current is None:
                why = "its fields, payload or hash were changed (it is the last event)"
            elif current.position == expected + 1 and _links(current, rec.hash):
                why = "its fields or payload were changed (they no longer match its hash)"
            elif current.position == expected + 1 and _links(current, computed):
                why = "its stored hash was changed"
            else:
                why = ("its hash does not follow from its content and the previous event, "
                       "nor does the next one's: events deleted, inserted or moved here")
            return report(False, expected, why)
        if anchor is not None and rec.position == anchor[0]:
            if rec.hash != anchor[1]:
                anchor_ok = False
                return report(False, expected, f"position {expected} has hash {rec.hash}, the "
                              f"anchor says {anchor[1]}: history up to it was rewritten")
            anchor_ok = True
        if verified is not None:
            verified(rec)
        prev, expected = rec.hash, expected + 1
    if anchor is not None and anchor_ok is not True:
        anchor_ok = False
        return report(False, anchor[0], f"the log ends at position {expected - 1}, before the "
                      f"anchor's position {anchor[0]}: truncated, or another ledger")
    return report(True)


def head(store: EventStore) -> tuple[int, str]:
    """``(position, hash)`` of the store's newest event; ``(0, GENESIS)`` when empty."""
    last = store.last_position()
    if last == 0:
        return 0, GENESIS
    rec = next(store.read_all(after=last - 1, limit=1), None)
    if rec is None:  # pragma: no cover - a store that lies about last_position
        raise LedgerError("STORE_ERROR", f"store {store.url} has no event at {last}")
    return rec.position, rec.hash


def _counted(records: Iterable[StoredRecord], total: int,
             progress: Callable[[int, int], None] | None) -> Iterator[StoredRecord]:
    """``records``, telling ``progress(done, total)`` every 1,000 and at the end."""
    done = 0
    for done, rec in enumerate(records, 1):
        yield rec
        if progress is not None and done % 1000 == 0:
            progress(done, total)
    if progress is not None:
        progress(done, max(done, total))


def verify_store(store: EventStore, anchor: tuple[int, str] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> ChainReport:
    """:func:`verify_chain` over every event of ``store``, which also checks the store's
    snapshot against the events (``snapshot``; not ``ok`` when one that would be loaded is
    not what the events up to its position fold to: ledger/log/snapshot_codec.py), with what the
    store reports lying unfinished past its last event (a store with a ``torn_tail()``: the
    msgpack log). Writes nothing."""
    refold = Refold(store)
    report = verify_chain(_counted(store.read_all(), store.last_position(), progress), anchor,
                          refold.add)
    report.snapshot = refold.result()
    report.ok = report.ok and report.snapshot.ok
    torn_tail = getattr(store, "torn_tail", None)
    if callable(torn_tail):
        report.torn_tail = torn_tail()
    return report


# ----------------------------------------------------------------------------- export
@dataclass
class ExportSummary:
    """What :func:`export_log` wrote."""

    path: str
    format: str
    events: int
    head_position: int
    head_hash: str
    domain: str | None = None

    def to_dict(self) -> ExportJSON:
        """Plain data for ``--json``."""
        return {"path": self.path, "format": self.format, "events": self.events,
                "head": {"position": self.head_position, "hash": self.head_hash},
                "domain": self.domain}


def _dumps(value: Any, sort_keys: bool) -> str:
    return json.dumps(value, sort_keys=sort_keys, ensure_ascii=True, separators=(",", ":"),
                      allow_nan=False)


def _json_line(obj: dict[str, Any]) -> bytes:
    """One line: keys sorted at every level except inside ``payload``, whose maps keep the
    order the msgpack bytes have (that order is part of what the hash covers)."""
    parts = [f"{_dumps(k, False)}:{_dumps(v, k != 'payload')}" for k, v in sorted(obj.items())]
    return ("{" + ",".join(parts) + "}\n").encode("ascii")


def _json_payload(payload: bytes, schema_version: int) -> tuple[str, Any]:
    """``("payload", decoded)`` when that round-trips byte for byte, else base64."""
    try:
        decoded = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        if schema_version >= 2 and type(decoded) is dict and type(decoded.get("meta")) is bytes:
            decoded["meta"] = msgpack.unpackb(decoded["meta"], raw=False, strict_map_key=False)
        text = _dumps(decoded, False)
        if _pack_json_payload(json.loads(text), schema_version) == payload:
            return "payload", decoded
    except Exception:
        pass
    return "payload_b64", base64.b64encode(payload).decode("ascii")


def _pack_json_payload(value: Any, schema_version: int) -> bytes:
    """The payload bytes of a JSON export's ``payload`` (see the module docstring)."""
    if schema_version >= 2 and type(value) is dict and "meta" in value:
        value = {**value, "meta": msgpack.packb(value["meta"], use_bin_type=True)}
    return msgpack.packb(value, use_bin_type=True)


def _event_obj(rec: StoredRecord, prev_hash: str, fmt: ExportFormat) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "hash": rec.hash,
        "position": rec.position,
        "prev_hash": prev_hash,
        "recorded_at": float(rec.recorded_at),
        "schema_version": rec.schema_version,
        "stream_id": rec.stream_id,
        "stream_name": rec.stream_name,
        "stream_version": rec.stream_version,
        "type": rec.type,
    }
    if fmt == "msgpack":
        obj["payload"] = bytes(rec.payload)
    else:
        key, value = _json_payload(bytes(rec.payload), rec.schema_version)
        obj[key] = value
    return dict(sorted(obj.items()))


def _encode(obj: dict[str, Any], fmt: ExportFormat) -> bytes:
    if fmt == "jsonl":
        return _json_line(obj)
    return msgpack.packb(dict(sorted(obj.items())), use_bin_type=True)


def _view_obj(rec: StoredRecord, prev_hash: str, fmt: ExportFormat) -> dict[str, Any]:
    """Version 2: the event as ``log --jsonl`` shows it, and its ``record``."""
    try:
        view = event_view(rec)
    except LedgerError as err:
        raise LedgerError("STORE_ERROR", f"cannot export store: {err.detail}") from None
    obj = view.model_dump(mode="json")
    record: dict[str, Any] = {"schema_version": rec.schema_version,
                              "recorded_at": float(rec.recorded_at), "hash": rec.hash,
                              "prev_hash": prev_hash}
    # what a reader rebuilds from the shape alone (as read_export does), not from the event
    # in hand: a time inside the data, shown to the second, may not give it back
    if _payload_of(EventView.model_validate(obj)) != rec.payload:
        payload = bytes(rec.payload)
        record["payload" if fmt == "msgpack" else "payload_b64"] = (
            payload if fmt == "msgpack" else base64.b64encode(payload).decode("ascii"))
    obj["record"] = record
    return obj


def _payload_of(view: EventView) -> bytes:
    """The payload the ledger writes for the event and provenance ``view`` shows."""
    prov = Provenance(actor=view.actor, host=view.host, tool=view.tool,
                      tool_version=view.tool_version, reason=view.reason,
                      correlation_id=view.correlation_id)
    return encode_payload(view.event, prov)


def _encode_view(obj: dict[str, Any], fmt: ExportFormat) -> bytes:
    if fmt == "jsonl":
        return (_dumps(obj, False) + "\n").encode("ascii")
    return msgpack.packb(obj, use_bin_type=True)


def export_records(
    store: EventStore, out: IO[bytes], fmt: ExportFormat = "jsonl",
    stream_id: str | None = None, stream_name: str | None = None,
    progress: Callable[[int, int], None] | None = None, version: int = EXPORT_VERSION,
) -> ExportSummary:
    """Write the export of ``store`` (only ``stream_id`` when given) to ``out``, in format
    ``version`` (2, or 1 as earlier releases wrote it).

    The chain is verified while writing: a broken store raises STORE_ERROR naming the first
    bad position (the caller discards what was written); so does, in version 2, an event
    this ckpt-ledger cannot read.
    """
    if version not in (1, 2):
        raise LedgerError("INVALID_ARG", f"export format version must be 1 or 2, not {version}")
    if fmt not in ("jsonl", "msgpack"):
        raise LedgerError("INVALID_ARG", f"export format must be jsonl or msgpack, not {fmt!r}")
    last, last_hash = head(store)
    events = last
    if stream_id is not None:
        events = sum(1 for r in store.read_stream(stream_id) if r.position <= last)
    header: dict[str, Any] = {
        "domain": None if stream_id is None else {"name": stream_name, "stream_id": stream_id},
        "events": events,
        "format": EXPORT_FORMAT,
        "head": {"hash": last_hash, "position": last},
        "version": version,
    }
    out.write(_encode(header, fmt))
    prev, expected, written = GENESIS, 1, 0
    for rec in _counted(store.read_all(limit=last), last, progress):
        if rec.position != expected or not _links(rec, prev):
            bad = verify_chain(store.read_all(limit=last))
            raise LedgerError("STORE_ERROR", f"cannot export store {store.url}: {bad.line()}")
        if stream_id is None or rec.stream_id == stream_id:
            if version == 1:
                out.write(_encode(_event_obj(rec, prev, fmt), fmt))
            else:
                out.write(_encode_view(_view_obj(rec, prev, fmt), fmt))
            written += 1
        prev, expected = rec.hash, expected + 1
    if expected - 1 != last or written != events:  # pragma: no cover - store changed under us
        raise LedgerError("STORE_ERROR", f"store {store.url} changed while it was exported")
    return ExportSummary(path="", format=fmt, events=written, head_position=last,
                         head_hash=last_hash, domain=stream_name if stream_id else None)


def export_log(
    store: EventStore, path: str | Path, fmt: ExportFormat = "jsonl",
    stream_id: str | None = None, stream_name: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ExportSummary:
    """Export ``store`` to ``path`` atomically (temporary file in the same folder, rename);
    ``path`` ``-`` is stdout. See the module docstring for the format."""
    if str(path) == "-":
        summary = export_records(store, sys.stdout.buffer, fmt, stream_id, stream_name,
                                 progress)
        sys.stdout.buffer.flush()
        summary.path = "-"
        return summary
    target = Path(path)
    if target.is_dir():
        raise LedgerError("INVALID_ARG", f"{target} is a directory")
    if not target.parent.is_dir():
        raise LedgerError("INVALID_ARG", f"{target}: directory {target.parent} does not exist")
    try:
        with replacing(target) as f:
            summary = export_records(store, f, fmt, stream_id, stream_name, progress)
    except OSError as e:
        raise cannot_write(target, e) from None
    summary.path = str(target)
    return summary


# ----------------------------------------------------------------------------- import
@dataclass
class ExportFile:
    """A parsed export: its header and its events (as they would be stored)."""

    header: dict[str, Any]
    records: list[StoredRecord] = field(default_factory=list)
    prev_hashes: list[str] = field(default_factory=list)


@dataclass
class ImportSummary:
    """What :func:`import_log` did."""

    path: str
    events: int  # events in the file
    present: int  # already in the store (the common prefix)
    imported: int  # appended now
    head_position: int
    head_hash: str

    def to_dict(self) -> ImportLogJSON:
        """Plain data for ``--json``."""
        return {"path": self.path, "events": self.events, "present": self.present,
                "imported": self.imported,
                "head": {"position": self.head_position, "hash": self.head_hash}}


def _bad(path: str, where: str, why: str) -> LedgerError:
    return LedgerError("INVALID_ARG", f"{path}: {where}: {why}; nothing was imported")


def _objects(data: bytes, path: str) -> Iterator[tuple[str, Any]]:
    """``(where, object)`` for each object of a jsonl or msgpack export."""
    if data[:1] == b"{":
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        else:
            raise _bad(path, f"line {len(lines)}", "the file does not end with a newline "
                       "(truncated?)")
        for n, line in enumerate(lines, 1):
            try:
                yield f"line {n}", json.loads(line)
            except ValueError as e:
                why = getattr(e, "msg", str(e))
                raise _bad(path, f"line {n}", f"not JSON ({why}; truncated or edited?)") from e
        return
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(data)
    n = 0
    try:
        for obj in unpacker:
            n += 1
            yield f"object {n}", obj
    except Exception as e:
        raise _bad(path, f"object {n + 1}", f"not msgpack ({e})") from e
    if unpacker.tell() != len(data):
        raise _bad(path, f"object {n + 1}", "the file ends inside an object (truncated?)")


_EVENT_KEYS = {"hash", "position", "prev_hash", "recorded_at", "schema_version", "stream_id",
               "stream_name", "stream_version", "type"}
_TYPES: dict[str, type | tuple[type, ...]] = {
    "hash": str, "position": int, "prev_hash": str, "recorded_at": (float, int),
    "schema_version": int, "stream_id": str, "stream_name": str, "stream_version": int,
    "type": str}


def _record(obj: Any, where: str, path: str, binary: bool) -> tuple[StoredRecord, str]:
    if not isinstance(obj, dict):
        raise _bad(path, where, "not an event object")
    payload_keys = {"payload", "payload_b64"} & set(obj)
    if set(obj) - payload_keys != _EVENT_KEYS or len(payload_keys) != 1:
        raise _bad(path, where, "not an event of a ckpt-ledger export (fields "
                   f"{sorted(obj)})")
    for k, t in _TYPES.items():
        if not isinstance(obj[k], t) or isinstance(obj[k], bool):
            raise _bad(path, where, f"field {k} has the wrong type")
    if "payload_b64" in obj:
        try:
            payload = base64.b64decode(obj["payload_b64"], validate=True)
        except (ValueError, TypeError) as e:
            raise _bad(path, where, "payload_b64 is not base64") from e
    elif binary:
        payload = obj["payload"]
        if not isinstance(payload, bytes):
            raise _bad(path, where, "payload is not binary")
    else:
        payload = _pack_json_payload(obj["payload"], obj["schema_version"])
    rec = StoredRecord(
        position=obj["position"], stream_id=obj["stream_id"], stream_name=obj["stream_name"],
        stream_version=obj["stream_version"], type=obj["type"],
        schema_version=obj["schema_version"], recorded_at=float(obj["recorded_at"]),
        payload=payload, hash=obj["hash"])
    return rec, obj["prev_hash"]


_VIEW_KEYS = {*EventView.model_fields} - {"event_schema"} | {"schema", "record"}
_RECORD_TYPES: dict[str, type | tuple[type, ...]] = {
    "schema_version": int, "recorded_at": (float, int), "hash": str, "prev_hash": str}


def _record_v2(obj: Any, where: str, path: str, binary: bool) -> tuple[StoredRecord, str]:
    """A version-2 event object as stored, and its ``prev_hash``; the event's fields must
    be what the stored record shows (one edited without the other is refused)."""
    if not isinstance(obj, dict) or set(obj) != _VIEW_KEYS:
        raise _bad(path, where, "not an event of a ckpt-ledger export (fields "
                   f"{sorted(obj) if isinstance(obj, dict) else type(obj).__name__})")
    record = obj["record"]
    payload_key = "payload" if binary else "payload_b64"
    if not isinstance(record, dict) or not set(_RECORD_TYPES) <= set(record) <= {
            *_RECORD_TYPES, payload_key}:
        raise _bad(path, where, "its record is malformed")
    for k, t in _RECORD_TYPES.items():
        if not isinstance(record[k], t) or isinstance(record[k], bool):
            raise _bad(path, where, f"record field {k} has the wrong type")
    try:
        view = EventView.model_validate({k: v for k, v in obj.items() if k != "record"})
        if payload_key not in record:
            payload = _payload_of(view)
        elif binary:
            payload = record["payload"]
            if not isinstance(payload, bytes):
                raise _bad(path, where, "payload is not binary")
        else:
            payload = base64.b64decode(record["payload_b64"], validate=True)
    except LedgerError:
        raise
    except Exception as e:
        raise _bad(path, where, f"its event is not one this ckpt-ledger reads ({damage(e)})"
                   ) from None
    rec = StoredRecord(
        position=view.position, stream_id=view.stream_id, stream_name=view.domain,
        stream_version=view.stream_version, type=view.type,
        schema_version=record["schema_version"], recorded_at=float(record["recorded_at"]),
        payload=payload, hash=record["hash"])
    return rec, record["prev_hash"]


def _shows_its_record(obj: dict[str, Any], rec: StoredRecord) -> bool:
    """Whether a version-2 event object's fields are what ``rec`` shows."""
    try:
        shown = event_view(rec).model_dump(mode="json")
    except LedgerError:
        return False
    return shown == {k: v for k, v in obj.items() if k != "record"}


def read_export(path: str | Path) -> ExportFile:
    """Parse and fully verify an export file; INVALID_ARG naming the first problem.

    Checks: the header (format, version), every event's fields, positions 1, 2, 3 ...,
    each ``prev_hash`` is the previous event's hash, each ``hash`` recomputes from the
    event, stream versions are gapless per stream, the count and head match the header, and
    every event is one this ckpt-ledger can read and fold
    (:func:`ledger.log.readable.first_unreadable`:
    a known type and schema, a valid payload, a history that folds).
    """
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise LedgerError("INVALID_ARG", f"cannot read {name}: {e.strerror}") from e
    if not data:
        raise _bad(name, "start", "the file is empty")
    binary = data[:1] != b"{"
    objs = _objects(data, name)
    first = next(objs, None)
    if first is None:
        raise _bad(name, "start", "no header (truncated?)")
    where, header = first
    if (not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT
            or set(header) != {"domain", "events", "format", "head", "version"}):
        raise _bad(name, where, "not a ckpt-ledger export header")
    version = header["version"]
    if version not in (1, 2) or isinstance(version, bool):
        raise _bad(name, where, f"export format version {version!r} is not 1 or 2")
    hd = header["head"]
    if (not isinstance(hd, dict) or not isinstance(hd.get("position"), int)
            or not is_hash(hd.get("hash")) or not isinstance(header["events"], int)):
        raise _bad(name, where, "the header's head or event count is malformed")
    if header["domain"] is not None:
        dom = header["domain"]
        label = dom.get("name") or dom.get("stream_id") if isinstance(dom, dict) else dom
        raise _bad(name, where, f"it is an export of domain {label} only; "
                   "importing needs an export of the whole ledger")
    out = ExportFile(header=header)
    prev, versions = GENESIS, dict[str, int]()
    for where, obj in objs:
        rec, link = (_record if version == 1 else _record_v2)(obj, where, name, binary)
        pos = len(out.records) + 1
        if rec.position != pos:
            raise _bad(name, where, f"position {rec.position} where {pos} was expected "
                       "(events deleted, inserted or reordered)")
        if link != prev:
            raise _bad(name, where, f"position {pos}: prev_hash does not match the previous "
                       "event's hash (events deleted, inserted or reordered)")
        if not is_hash(rec.hash) or event_hash(
                rec.position, rec.stream_id, rec.stream_name, rec.stream_version, rec.type,
                rec.schema_version, rec.recorded_at, rec.payload, prev) != rec.hash:
            raise _bad(name, where, f"position {pos}: the event does not match its hash "
                       "(edited)")
        if version == 2 and not _shows_its_record(obj, rec):
            raise _bad(name, where, f"position {pos}: the event's fields are not what its "
                       "record holds (edited)")
        want = versions.get(rec.stream_id, 0) + 1
        if rec.stream_version != want:
            raise _bad(name, where, f"position {pos}: stream version {rec.stream_version} "
                       f"where {want} was expected")
        versions[rec.stream_id] = want
        out.records.append(rec)
        out.prev_hashes.append(prev)
        prev = rec.hash
    n = len(out.records)
    if n != header["events"] or n != hd["position"]:
        raise _bad(name, "end", f"the file holds {n} events but its header says "
                   f"{header['events']} (head {hd['position']}): truncated or edited")
    if prev != hd["hash"]:
        raise _bad(name, "end", "the last event's hash is not the header's head hash")
    unreadable = first_unreadable(out.records)
    if unreadable is not None:
        raise _bad(name, f"position {unreadable[0]}", unreadable[1])
    return out


def import_log(store: EventStore, path: str | Path,
               progress: Callable[[int, int], None] | None = None) -> ImportSummary:
    """Import an export into ``store``: empty, or holding a prefix of the file's history.

    The whole file is verified first (:func:`read_export`); then the store's events are
    compared with the file's, position by position (every field and the hash); the first
    difference is refused with OPERATION_FAILED naming it, and nothing is written. Only the
    missing tail is appended, in transactions of up to 500 records (one ``append_many``
    each, a batch per run of one stream), keeping positions, stream versions,
    ``recorded_at`` and hashes identical (the store recomputes each hash; a difference
    stops the import with STORE_ERROR: another writer appended meanwhile).
    """
    name = str(path)
    export = read_export(path)
    records = export.records
    present = store.last_position()
    for mine in store.read_all(limit=min(present, len(records))):
        theirs = records[mine.position - 1] if 0 < mine.position <= len(records) else None
        if mine != theirs:
            what = _difference(mine, theirs)
            raise LedgerError("OPERATION_FAILED", f"the store {store.url} differs from {name} "
                              f"at position {mine.position} ({what}): it is not a prefix of "
                              "the file; nothing was imported")
    if present > len(records):
        raise LedgerError("OPERATION_FAILED", f"the store {store.url} holds {present} events, "
                          f"more than {name} ({len(records)}): its history goes on at position "
                          f"{len(records) + 1}; nothing was imported")
    tail = records[present:]
    done = 0
    for runs in append_groups(tail, _IMPORT_BATCH):  # one append_many each
        got = store.append_many([([to_append(r) for r in run], run[0].stream_version - 1)
                                 for run in runs])
        for run, stored in zip(runs, got, strict=True):
            if stored != run:
                raise LedgerError("STORE_ERROR", f"importing {name} into {store.url}: position "
                                  f"{run[0].position} was stored differently (another writer "
                                  f"appended meanwhile?); {store.last_position()} events are "
                                  "now in the store")
        done += sum(len(run) for run in runs)
        if progress is not None:
            progress(done, len(tail))
    return ImportSummary(path=name, events=len(records), present=present,
                         imported=len(tail), head_position=len(records),
                         head_hash=records[-1].hash if records else GENESIS)


def _difference(mine: StoredRecord, theirs: StoredRecord | None) -> str:
    if theirs is None:
        return "the file has no such event"
    for f in ("stream_id", "stream_name", "stream_version", "type", "schema_version",
              "recorded_at", "payload", "hash"):
        if getattr(mine, f) != getattr(theirs, f):
            return f"{f} differs"
    return "it differs"  # pragma: no cover
