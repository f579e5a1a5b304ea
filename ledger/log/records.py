"""The envelope every stored event travels in, and its msgpack encoding.

Backends never see pydantic models: they store :class:`NewRecord` rows (a stream, a type,
a payload of bytes) and hand back :class:`StoredRecord` rows with the position and version
they assigned. :func:`encode_payload` / :func:`decode_payload` are the only codec.
"""

from __future__ import annotations

import functools
import getpass
import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import msgpack
from pydantic import BaseModel, ConfigDict, ValidationError

from ledger.domain.errors import LedgerError
from ledger.domain.events import (
    EVENT_TYPES,
    SCHEMA_VERSION,
    CheckpointCreated,
    Event,
    event_data,
    parse_event,
)
from ledger.domain.model import SHARED_DISKS as _SHARED_DISKS
from ledger.domain.model import CheckpointDisk, shared_disk
from ledger.version import __version__

_packb = msgpack.packb
_unpackb = msgpack.unpackb

TOOL = "ckpt-ledger"
TOOL_VERSION = __version__


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
        user, host = local_identity()
        if actor is None:
            actor = os.environ.get("CKPT_LEDGER_ACTOR")
        return _provenance(actor or f"{user}@{host}", host, reason, correlation_id)


@functools.cache
def local_identity() -> tuple[str, str]:
    """This process's user (its uid when it has no passwd entry) and host name, read once."""
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry for the uid
        user = str(os.getuid())
    return user, socket.gethostname()


@functools.lru_cache(maxsize=64)
def _provenance(actor: str, host: str, reason: str | None,
                correlation_id: str | None) -> Provenance:
    """One shared (frozen) Provenance per distinct who, where and why."""
    return Provenance(actor=actor, host=host, reason=reason, correlation_id=correlation_id)


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
    # hex sha256 chaining this event to the previous position (ledger/log/chain.py); the
    # store computes it inside its append transaction
    hash: str


def to_append(record: StoredRecord) -> NewRecord:
    """``record`` as it is appended again (a copy or an import): every field the store
    does not assign kept as it was."""
    return NewRecord(record.stream_id, record.stream_name, record.type, record.schema_version,
                     record.recorded_at, bytes(record.payload))


def encode_payload(event: Event, provenance: Provenance) -> bytes:
    """msgpack of ``{"data": the event's data, "meta": its provenance}``.

    Since schema version 2 the provenance is itself msgpack, stored as a ``bin``: a fold
    (which never reads it) unpacks one bytes object instead of a map of strings, and it is
    decoded only where it is shown (:func:`decode_payload`). Version 1 stored it as a map.
    """
    return _packb({"data": event_data(event), "meta": provenance_bytes(provenance)},
                  use_bin_type=True)


_last_provenance: tuple[Provenance, bytes] | None = None


def provenance_bytes(provenance: Provenance) -> bytes:
    """The provenance as the msgpack a payload embeds (the last one is kept: a command,
    an import or a copy writes many events with the same provenance)."""
    global _last_provenance
    last = _last_provenance
    if last is not None and last[0] is provenance:
        return last[1]
    packed = _packb(provenance.model_dump(mode="json"), use_bin_type=True)
    _last_provenance = (provenance, packed)
    return packed


def decode_payload(payload: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``(data, meta)`` dicts of an encoded payload (schema version 1 or 2)."""
    obj = _unpackb(payload, raw=False, strict_map_key=False)
    meta = obj["meta"]
    if type(meta) is bytes:  # version 2: the provenance packed on its own
        meta = _unpackb(meta, raw=False, strict_map_key=False)
    return obj["data"], meta


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


def check_schema(position: int, schema_version: int) -> None:
    """STORE_ERROR unless this code understands events of ``schema_version``."""
    if schema_version < 1:
        raise LedgerError("STORE_ERROR", f"event at position {position} is damaged: "
                          f"unknown event schema {schema_version}")
    if schema_version > SCHEMA_VERSION:
        raise LedgerError(
            "STORE_ERROR",
            f"event at position {position} has schema version "
            f"{schema_version}; this ckpt-ledger understands up to {SCHEMA_VERSION}",
        )


def decode_record(record: StoredRecord) -> tuple[Event, Provenance]:
    """The event model and provenance of a stored record.

    Raises STORE_ERROR for a schema version newer than this code understands.
    """
    check_schema(record.position, record.schema_version)
    data, meta = decode_payload(record.payload)
    return parse_event(data), Provenance.model_validate(meta)


_CREATED_LEN = len(CheckpointCreated.model_fields)
_STR_OR_NONE = (str, type(None))
_INT_OR_NONE = (int, type(None))
_I64 = 1 << 63
_CHECKPOINT_TYPES = ("bitmap", "no")
_MISSING: Any = object()  # what a lacking key reads as: it fails every type check


def created_disks(data: dict[str, Any]) -> tuple[CheckpointDisk, ...] | None:
    """The disks (shared instances) of CheckpointCreated data whose keys are exactly the
    model's fields and every value of exactly its field's type, so that pydantic would
    return it unchanged; None for any other data (left to pydantic)."""
    if len(data) != _CREATED_LEN:
        return None
    get = data.get
    ct = get("creation_time")
    if (type(get("name")) is not str or type(get("parent", _MISSING)) not in _STR_OR_NONE
            or type(ct) is not int or not -_I64 <= ct < _I64
            or type(get("description", _MISSING)) not in _STR_OR_NONE
            or type(get("domain_xml", _MISSING)) not in _STR_OR_NONE
            or type(get("xml")) is not str):
        return None
    entries = get("disks")
    if type(entries) is not list:
        return None
    disks = []
    for d in entries:
        if type(d) is not dict or len(d) != 4:
            return None
        dget = d.get
        size = dget("size", _MISSING)
        key: Any = (dget("name"), dget("checkpoint"), dget("bitmap", _MISSING), size)
        try:
            disk = _SHARED_DISKS.get(key)
        except TypeError:  # an unhashable value: not what validation would accept as is
            return None
        # a hit's values were checked when it was made: equal values are valid too, but
        # True == 1 == 1.0, so the size's own type is checked again
        if disk is None or type(size) not in _INT_OR_NONE:
            name, checkpoint, bitmap = key[:3]
            if (type(name) is not str or type(checkpoint) is not str
                    or checkpoint not in _CHECKPOINT_TYPES or type(bitmap) not in _STR_OR_NONE
                    or type(size) not in _INT_OR_NONE
                    or (size is not None and not -_I64 <= size < _I64)):
                return None
            disk = shared_disk(name, checkpoint, bitmap, size)
        disks.append(disk)
    return tuple(disks)


def decode_event(record: StoredRecord) -> Event:
    """The event model of a stored record, for the fold: what :func:`decode_record` returns
    first, but the provenance (which a fold discards) is not validated, and the event data is
    validated against the class its ``type`` names (what the discriminated union does)."""
    check_schema(record.position, record.schema_version)
    return event_from(_unpackb(record.payload, raw=False, strict_map_key=False))


def event_from(obj: Any) -> Event:
    """The event model of an unpacked payload (see :func:`decode_event`)."""
    data = obj["data"]
    obj["meta"]  # a payload without provenance fails as decode_payload does
    tag = data.get("type") if type(data) is dict else None
    cls = EVENT_TYPES.get(tag) if type(tag) is str else None
    if cls is not None:
        try:
            return cast("Event", cls.model_validate(data))  # the class the tag names
        except ValidationError:
            pass  # raise the discriminated union's own error, below
    return parse_event(data)


def append_groups(
    records: Iterable[StoredRecord], size: int
) -> Iterator[list[list[StoredRecord]]]:
    """``records`` in groups of at most ``size``, each split into its runs of consecutive
    records of one stream (one group: one ``append_many``; one run: one batch of it)."""
    group: list[list[StoredRecord]] = []
    count = 0
    for rec in records:
        if count >= size:
            yield group
            group, count = [], 0
        if group and rec.stream_id == group[-1][0].stream_id:
            group[-1].append(rec)
        else:
            group.append([rec])
        count += 1
    if group:
        yield group
