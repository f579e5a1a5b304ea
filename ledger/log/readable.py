"""Whether records are events this ckpt-ledger can read and fold, and what is wrong if not.

:func:`first_unreadable` checks records as the ledger itself would use them: every
record decodes (a schema version this code understands, a msgpack map of ``data`` and
``meta``, a known event type whose model validates, a provenance that validates, the
record's ``type`` equal to the payload's, a ``recorded_at`` that is a time), and then the
whole history folds into fresh projections with the bulk fold (ledger/log/fold.py).
:func:`damage` describes a decoding exception in a few words, for one-line errors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import msgpack

from ledger.domain.events import SCHEMA_VERSION
from ledger.domain.state import DomainState
from ledger.log.fold import damage as damage
from ledger.log.fold import fold_rows
from ledger.log.records import Provenance, StoredRecord, event_from


def schema_problem(schema_version: Any) -> str | None:
    """Why events of ``schema_version`` cannot be read here (None: they can)."""
    if type(schema_version) is not int or schema_version < 1:
        return f"unknown event schema {schema_version!r}"
    if schema_version > SCHEMA_VERSION:
        return (f"written by a newer ckpt-ledger (event schema {schema_version}; this version "
                f"understands up to {SCHEMA_VERSION})")
    return None


def record_problem(rec: StoredRecord) -> str | None:
    """Why ``rec`` alone cannot be read as an event (None: it can)."""
    why = schema_problem(rec.schema_version)
    if why is not None:
        return why
    if type(rec.recorded_at) is not float or not math.isfinite(rec.recorded_at) or not (
            -62135596800.0 <= rec.recorded_at < 253402300800.0):  # years 1 to 9999
        return f"recorded_at {rec.recorded_at!r} is not a time"
    try:
        obj = msgpack.unpackb(bytes(rec.payload), raw=False, strict_map_key=False)
    except Exception as e:
        return damage(e)
    if type(obj) is not dict or set(obj) != {"data", "meta"}:
        return "the payload is not a map of data and meta"
    meta = obj["meta"]
    try:
        if type(meta) is bytes:
            meta = msgpack.unpackb(meta, raw=False, strict_map_key=False)
        Provenance.model_validate(meta)
    except Exception as e:
        return f"its provenance is invalid ({damage(e)})"
    data = obj["data"]
    tag = data.get("type") if type(data) is dict else None
    try:
        event_from(obj)
    except Exception as e:
        return damage(e)
    if tag != rec.type:
        return f"its type {rec.type!r} is not its payload's ({tag!r})"
    return None


def first_unreadable(records: Sequence[StoredRecord]) -> tuple[int, str] | None:
    """``(position, why)`` of the first of ``records`` (a whole history, oldest first) the
    ledger could not read or fold; None when every one can."""
    for rec in records:
        why = record_problem(rec)
        if why is not None:
            return rec.position, why
    folded = [0]

    def done(position: int, count: int) -> None:
        folded[0] = count

    states: dict[str, DomainState] = {}
    rows = [(r.position, r.stream_id, r.stream_version, r.schema_version, bytes(r.payload))
            for r in records]
    try:
        fold_rows(states, {}, [rows], done)
    except Exception as e:
        return records[folded[0]].position, damage(e)
    return None
