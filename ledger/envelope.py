"""The envelope every stored event travels in, and its msgpack encoding.

Backends never see pydantic models: they store :class:`NewRecord` rows (a stream, a type,
a payload of bytes) and hand back :class:`StoredRecord` rows with the position and version
they assigned. :func:`encode_payload` / :func:`decode_payload` are the only codec.
"""

from __future__ import annotations

import getpass
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import msgpack
from pydantic import BaseModel, ConfigDict

from .errors import LedgerError
from .events import SCHEMA_VERSION, Event, event_data, parse_event

TOOL = "ckpt-ledger"
TOOL_VERSION = "0.1.0"


class Provenance(BaseModel):
    """Who recorded an event, from where, with what, and why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    actor: str
    host: str
    tool: str = TOOL
    tool_version: str = TOOL_VERSION
    reason: str | None = None
    correlation_id: str | None = None

    @classmethod
    def default(
        cls,
        actor: str | None = None,
        reason: str | None = None,
        correlation_id: str | None = None,
    ) -> Provenance:
        """``CKPT_LEDGER_ACTOR`` or user@host, this host, this tool."""
        host = socket.gethostname()
        if actor is None:
            actor = os.environ.get("CKPT_LEDGER_ACTOR")
        if not actor:
            try:
                user = getpass.getuser()
            except Exception:  # no passwd entry for the uid
                user = str(os.getuid())
            actor = f"{user}@{host}"
        return cls(actor=actor, host=host, reason=reason, correlation_id=correlation_id)


@dataclass(frozen=True, slots=True)
class NewRecord:
    """An event ready to append: the store assigns position and stream version."""

    stream_id: str  # the domain's UUID
    stream_name: str  # the domain's name
    type: str
    schema_version: int
    recorded_at: float  # seconds since the epoch, UTC
    payload: bytes  # msgpack of {"data": ..., "meta": ...}


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """An event as a store returns it."""

    position: int  # global, 1-based, gapless per store
    stream_id: str
    stream_name: str
    stream_version: int  # 1-based within the stream
    type: str
    schema_version: int
    recorded_at: float
    payload: bytes
    # hex sha256 chaining this event to the previous position (ledger/chain.py); the
    # store computes it inside its append transaction
    hash: str


def encode_payload(event: Event, provenance: Provenance) -> bytes:
    """msgpack of the event's data and its provenance."""
    return msgpack.packb(
        {"data": event_data(event), "meta": provenance.model_dump(mode="json")},
        use_bin_type=True,
    )


def decode_payload(payload: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``(data, meta)`` dicts of an encoded payload."""
    obj = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    return obj["data"], obj["meta"]


def new_record(
    stream_id: str, stream_name: str, event: Event, provenance: Provenance,
    recorded_at: float | None = None,
) -> NewRecord:
    """Wrap one event for appending."""
    return NewRecord(
        stream_id=stream_id,
        stream_name=stream_name,
        type=event.type,
        schema_version=SCHEMA_VERSION,
        recorded_at=time.time() if recorded_at is None else recorded_at,
        payload=encode_payload(event, provenance),
    )


def decode_record(record: StoredRecord) -> tuple[Event, Provenance]:
    """The event model and provenance of a stored record.

    Raises STORE_ERROR for a schema version newer than this code understands.
    """
    if record.schema_version > SCHEMA_VERSION:
        raise LedgerError(
            "STORE_ERROR",
            f"event at position {record.position} has schema version "
            f"{record.schema_version}; this ckpt-ledger understands up to {SCHEMA_VERSION}",
        )
    data, meta = decode_payload(record.payload)
    return parse_event(data), Provenance.model_validate(meta)
