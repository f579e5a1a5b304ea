"""Inputs read from the cached history (outside every timed section)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ledger.envelope import NewRecord, Provenance, decode_payload, decode_record
from ledger.events import Event

_COLUMNS = "position, stream_id, stream_name, stream_version, type, schema_version, " \
    "recorded_at, payload"


@dataclass
class Stream:
    """One domain's events, in the three shapes the importers start from."""

    stream_id: str
    name: str
    recorded_at: list[float]
    events: list[Event]  # pydantic models (what the ledger appends)
    provenance: list[Provenance]
    plain: list[tuple[str, dict[str, Any], dict[str, Any]]]  # (type, data, meta) dicts


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def streams(path: Path, events: int, per_stream: int = 100) -> list[Stream]:
    """The complete histories of the first ``events // per_stream`` domains of the log."""
    from ledger.envelope import StoredRecord

    conn = _connect(path)
    try:
        count = events // per_stream
        ids = [r[0] for r in conn.execute(
            "SELECT stream_id FROM events WHERE stream_version = 1 ORDER BY position LIMIT ?",
            [count])]
        out: dict[str, Stream] = {}
        marks = ",".join("?" * len(ids))
        rows = conn.execute(f"SELECT {_COLUMNS} FROM events WHERE stream_id IN ({marks}) "
                            "ORDER BY position", ids)
        names = _COLUMNS.split(", ")
        extra = {"hash": ""} if "hash" in {f.name for f in fields(StoredRecord)} else {}
        for row in rows:
            rec = StoredRecord(**dict(zip(names, row, strict=True)), **extra)
            st = out.get(rec.stream_id)
            if st is None:
                st = out[rec.stream_id] = Stream(rec.stream_id, rec.stream_name, [], [], [], [])
            event, prov = decode_record(rec)
            data, meta = decode_payload(rec.payload)
            st.recorded_at.append(rec.recorded_at)
            st.events.append(event)
            st.provenance.append(prov)
            st.plain.append((rec.type, data, meta))
        return [out[i] for i in ids]
    finally:
        conn.close()


def first_records(path: Path, n: int) -> list[NewRecord]:
    """The first ``n`` records of the log, as records to append again."""
    conn = _connect(path)
    try:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM events ORDER BY position LIMIT ?", [n])
        return [NewRecord(stream_id=r[1], stream_name=r[2], type=r[4], schema_version=r[5],
                          recorded_at=r[6], payload=bytes(r[7])) for r in rows]
    finally:
        conn.close()


def stream_ids(path: Path) -> list[str]:
    """Every stream ID in the history, in order of first appearance."""
    conn = _connect(path)
    try:
        return [r[0] for r in conn.execute(
            "SELECT stream_id FROM events WHERE stream_version = 1 ORDER BY position")]
    finally:
        conn.close()
