"""Inputs read from the cached history (outside every timed section)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.domain.events import Event
from ledger.log.records import Provenance, StoredRecord, decode_payload, decode_record

_COLUMNS = "position, stream_id, stream_name, stream_version, type, schema_version, " \
    "recorded_at, payload"


_PROVENANCE: dict[tuple[Any, ...], Provenance] = {}


def _shared(prov: Provenance) -> Provenance:
    """One object per distinct provenance, as the ledger has: one per command or import."""
    key = tuple(prov.model_dump().values())
    return _PROVENANCE.setdefault(key, prov)


@dataclass
class Stream:
    """One domain's events, in the three shapes the importers start from."""

    stream_id: str
    name: str
    recorded_at: list[float]
    events: list[Event]  # pydantic models (what the ledger appends)
    provenance: list[Provenance]
    plain: list[tuple[str, dict[str, Any], dict[str, Any]]]  # (type, data, meta) dicts
    records: list[StoredRecord] = field(default_factory=list)  # as stored in the history


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def streams(path: Path, events: int, per_stream: int = 100) -> list[Stream]:
    """The complete histories of the first ``events // per_stream`` domains of the log."""
    conn = _connect(path)
    try:
        count = events // per_stream
        ids = [r[0] for r in conn.execute(
            "SELECT stream_id FROM events WHERE stream_version = 1 ORDER BY position LIMIT ?",
            [count])]
        out: dict[str, Stream] = {}
        marks = ",".join("?" * len(ids))
        rows = conn.execute(f"SELECT {_COLUMNS}, hash FROM events WHERE stream_id IN "
                            f"({marks}) ORDER BY position", ids)
        names = _COLUMNS.split(", ") + ["hash"]
        for row in rows:
            rec = StoredRecord(**dict(zip(names, row, strict=True)))
            st = out.get(rec.stream_id)
            if st is None:
                st = out[rec.stream_id] = Stream(rec.stream_id, rec.stream_name, [], [], [], [])
            event, prov = decode_record(rec)
            data, meta = decode_payload(rec.payload)
            st.recorded_at.append(rec.recorded_at)
            st.events.append(event)
            st.provenance.append(_shared(prov))
            st.plain.append((rec.type, data, meta))
            st.records.append(rec)
        return [out[i] for i in ids]
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


def create_commands(path: Path, n: int) -> list[Stream]:
    """The history's first ``n`` create commands that succeed a checkpoint (each a Stream
    holding the events of one append: the three BitmapDisabled events of the checkpoint it
    succeeds and the CheckpointCreated; a domain's first create, which disables nothing and
    comes with the enrollment, is skipped)."""
    conn = _connect(path)
    out: list[Stream] = []
    group: list[StoredRecord] = []
    names = _COLUMNS.split(", ") + ["hash"]

    def take() -> None:
        types = [r.type for r in group]
        if "CheckpointCreated" in types and set(types) <= {"CheckpointCreated",
                                                           "BitmapDisabled"} and len(types) > 1:
            st = Stream(group[0].stream_id, group[0].stream_name, [], [], [], [])
            st.records.extend(group)
            for r in group:
                event, prov = decode_record(r)
                st.recorded_at.append(r.recorded_at)
                st.events.append(event)
                st.provenance.append(_shared(prov))
            out.append(st)

    try:
        for row in conn.execute(f"SELECT {_COLUMNS}, hash FROM events ORDER BY position"):
            rec = StoredRecord(**dict(zip(names, row, strict=True)))
            if group and (rec.stream_id, rec.recorded_at) != (group[0].stream_id,
                                                              group[0].recorded_at):
                take()  # the records of one append share their stream and time
                group = []
                if len(out) >= n:
                    break
            group.append(rec)
        if group and len(out) < n:
            take()
        return out
    finally:
        conn.close()
