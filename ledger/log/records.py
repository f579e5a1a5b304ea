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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

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
    # hex sha256 chaining this event to the previous position (ledger/log/chain.py); the
    # store computes it inside its append transaction
    hash: str


def again(record: StoredRecord) -> NewRecord:
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


_setattr = object.__setattr__
_new = object.__new__


def _simple_events() -> dict[str, tuple[Any, tuple[str, ...], frozenset[str]]]:
    """type -> (class, field order, field set) for the events whose fields are all
    required plain strings (the bitmap events), checked by hand in the fold."""
    out = {}
    for tag, cls in EVENT_TYPES.items():
        fields = cls.model_fields
        if all(f.annotation in (str, "str") or name == "type" for name, f in fields.items()) \
                and all(f.is_required() for name, f in fields.items() if name != "type"):
            out[tag] = (cls, tuple(fields), frozenset(fields))
    return out


_SIMPLE = _simple_events()
_ONLY_STR = {str}


_CREATED_LEN = len(CheckpointCreated.model_fields)
_STR_OR_NONE = (str, type(None))
_INT_OR_NONE = (int, type(None))
_I64 = 1 << 63


def _model(cls: Any, values: dict[str, Any]) -> Any:
    """A model instance holding ``values`` (every field given), as validation makes it."""
    m = _new(cls)
    _setattr(m, "__dict__", values)
    _setattr(m, "__pydantic_fields_set__", set(values))
    _setattr(m, "__pydantic_extra__", None)
    _setattr(m, "__pydantic_private__", None)
    return m


def created_disks(data: dict[str, Any]) -> tuple[CheckpointDisk, ...] | None:
    """The disks (shared instances) of CheckpointCreated data whose keys are exactly the
    model's fields and every value of exactly its field's type, so that pydantic would
    return it unchanged; None for any other data (left to pydantic)."""
    if len(data) != _CREATED_LEN:
        return None
    get = data.get
    ct = get("creation_time")
    if (type(get("name")) is not str or type(get("parent", 0)) not in _STR_OR_NONE
            or type(ct) is not int or not -_I64 <= ct < _I64
            or type(get("description", 0)) not in _STR_OR_NONE
            or type(get("domain_xml", 0)) not in _STR_OR_NONE or type(get("xml")) is not str):
        return None
    entries = get("disks")
    if type(entries) is not list:
        return None
    disks = []
    for d in entries:
        if type(d) is not dict or len(d) != 4:
            return None
        size = d.get("size", 0.5)
        key: Any = (d.get("name"), d.get("checkpoint"), d.get("bitmap", 0.5), size)
        disk = _SHARED_DISKS.get(key)
        # a hit's values were checked when it was made: equal values are valid too, but
        # True == 1 == 1.0, so the size's own type is checked again (0.5 marks a missing key)
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


_CHECKPOINT_TYPES = ("bitmap", "no")


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
    if type(tag) is str:
        simple = _SIMPLE.get(tag)
        # every field a required str, no defaults: exactly pydantic's result when the keys
        # are the fields (in their order, as encode_payload writes them) and every value is
        # a str; anything else is left to pydantic
        if simple is not None and tuple(data) == simple[1] and {
                *map(type, data.values())} == _ONLY_STR:
            return _model(simple[0], data)
        if tag == "CheckpointCreated":
            disks = created_disks(data)
            if disks is not None:
                data["disks"] = disks
                return _model(CheckpointCreated, data)
        cls = EVENT_TYPES.get(tag)
        if cls is not None:
            try:
                return cls.__pydantic_validator__.validate_python(data)
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
