"""The tamper-evident hash chain: one canonical encoding of a stored event, and its hash.

Every stored event carries ``hash``, the hex sha256 of :func:`canonical_bytes` over

    (position, stream_id, stream_name, stream_version, type, schema_version, recorded_at,
     payload, prev_hash)

where ``prev_hash`` is the hash of the event at ``position - 1`` (:data:`GENESIS`, 64 zeros,
for position 1). Changing any field of any event, or deleting, inserting or moving one,
changes that event's hash and so breaks the link to every later one.

The encoding is byte-stable and needs nothing but the standard library:

* a domain tag ``b"ckpt-ledger/chain/1\\0"``;
* integers (position, stream version, schema version) as 8-byte big-endian signed;
* ``recorded_at`` as the 8 bytes of its IEEE-754 binary64 value, big-endian
  (``struct.pack(">d")``): the exact float the store holds, not a rounded decimal;
* text fields (UTF-8) and the payload each as an 8-byte big-endian length, then the bytes;
* ``prev_hash`` as its 32 raw bytes.

Backends call :func:`chain_records` inside their append transaction (they know the previous
hash there); nothing outside this module encodes events for hashing. There is no key: anyone can
recompute a whole chain, so an attacker who rewrites history can rewrite the hashes too.
Pin the head (``ckpt-ledger head``) somewhere else and check it later with
``ckpt-ledger verify-log --anchor POSITION:HASH``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from typing import Protocol

from ledger.log.records import NewRecord, StoredRecord

GENESIS = "0" * 64
"""The ``prev_hash`` of position 1 (and the head hash of an empty log)."""

_TAG = b"ckpt-ledger/chain/1\x00"
_INT = struct.Struct(">q")
_FLOAT = struct.Struct(">d")
_LEN = struct.Struct(">Q")
_sha256 = hashlib.sha256
_INT_PACK = _INT.pack
_FLOAT_PACK = _FLOAT.pack
_LEN_PACK = _LEN.pack


class ChainFields(Protocol):
    """What the hash covers: the fields of a :class:`ledger.log.records.StoredRecord`."""

    @property
    def position(self) -> int: ...
    @property
    def stream_id(self) -> str: ...
    @property
    def stream_name(self) -> str: ...
    @property
    def stream_version(self) -> int: ...
    @property
    def type(self) -> str: ...
    @property
    def schema_version(self) -> int: ...
    @property
    def recorded_at(self) -> float: ...
    @property
    def payload(self) -> bytes: ...


def _text(value: str) -> bytes:
    raw = value.encode("utf-8", "surrogatepass")
    return _LEN.pack(len(raw)) + raw


def canonical_bytes(
    position: int,
    stream_id: str,
    stream_name: str,
    stream_version: int,
    type: str,
    schema_version: int,
    recorded_at: float,
    payload: bytes,
    prev_hash: str,
) -> bytes:
    """The exact bytes that are hashed for one event (see the module docstring)."""
    prev = bytes.fromhex(prev_hash)
    if len(prev) != 32:
        raise ValueError(f"prev_hash must be 64 hex digits, got {prev_hash!r}")
    body = bytes(payload)
    return b"".join((
        _TAG,
        _INT.pack(position),
        _text(stream_id),
        _text(stream_name),
        _INT.pack(stream_version),
        _text(type),
        _INT.pack(schema_version),
        _FLOAT.pack(float(recorded_at)),
        _LEN.pack(len(body)),
        body,
        prev,
    ))


def event_hash(
    position: int,
    stream_id: str,
    stream_name: str,
    stream_version: int,
    type: str,
    schema_version: int,
    recorded_at: float,
    payload: bytes,
    prev_hash: str,
) -> str:
    """Hex sha256 of :func:`canonical_bytes` of these fields."""
    return hashlib.sha256(canonical_bytes(
        position, stream_id, stream_name, stream_version, type, schema_version, recorded_at,
        payload, prev_hash,
    )).hexdigest()


def record_hash(record: ChainFields, prev_hash: str) -> str:
    """The chain hash of ``record`` (a StoredRecord or anything with its fields)."""
    return event_hash(
        record.position, record.stream_id, record.stream_name, record.stream_version,
        record.type, record.schema_version, record.recorded_at, record.payload, prev_hash,
    )


def chain_records(
    records: Sequence[NewRecord], first_position: int, version: int, prev_hash: str
) -> list[StoredRecord]:
    """``records`` as stored from ``first_position``, after stream version ``version``.

    Each gets its chain hash (:func:`ledger.log.chain.record_hash`), the first one linked to
    ``prev_hash``: the hash at ``first_position - 1`` (:data:`ledger.log.chain.GENESIS` for 1).
    Call it inside the append's transaction or lock, where ``prev_hash`` cannot change.
    """
    # canonical_bytes/event_hash of ledger.log.chain, inlined: the stream's id and name and
    # each type are encoded once per batch, and each StoredRecord is built once, with its hash
    out: list[StoredRecord] = []
    if not records:
        return out
    prev = bytes.fromhex(prev_hash)
    if len(prev) != 32:
        raise ValueError(f"prev_hash must be 64 hex digits, got {prev_hash!r}")
    sid = name = ""
    ident = b""
    types: dict[str, bytes] = {}
    position = first_position
    stream_version = version
    for rec in records:
        stream_version += 1
        if rec.stream_id != sid or rec.stream_name != name:
            sid, name = rec.stream_id, rec.stream_name
            ident = _text(sid) + _text(name)
        type_ = types.get(rec.type)
        if type_ is None:
            type_ = types[rec.type] = _text(rec.type)
        recorded_at = float(rec.recorded_at)
        payload = bytes(rec.payload)
        prev = _sha256(b"".join((
            _TAG, _INT_PACK(position), ident, _INT_PACK(stream_version), type_,
            _INT_PACK(rec.schema_version), _FLOAT_PACK(recorded_at), _LEN_PACK(len(payload)),
            payload, prev,
        ))).digest()
        out.append(StoredRecord(position, sid, name, stream_version, rec.type,
                                rec.schema_version, recorded_at, payload, prev.hex()))
        position += 1
    return out


_I64 = 1 << 63
_FIELDS = (("position", "int"), ("stream_id", "str"), ("stream_name", "str"),
           ("stream_version", "int"), ("type", "str"), ("schema_version", "int"),
           ("recorded_at", "float"), ("payload", "bytes"))


def malformed(record: object) -> str | None:
    """The first field the hash covers whose value cannot be encoded (a non-integer or
    out-of-range position or version, a non-number time, text that is not text, a payload
    that is not bytes); None when every field can be."""
    for name, kind in _FIELDS:
        value = getattr(record, name, None)
        if kind == "int":
            ok = type(value) is int and -_I64 <= value < _I64
        elif kind == "str":
            ok = type(value) is str
        elif kind == "float":
            ok = type(value) is float or (type(value) is int and abs(value) < 2.0 ** 1023)
        else:
            ok = isinstance(value, bytes | bytearray | memoryview)
        if not ok:
            return name
    return None


def is_hash(value: object) -> bool:
    """Whether ``value`` is a well-formed chain hash (64 lowercase hex digits)."""
    return (
        isinstance(value, str) and len(value) == 64
        and all(c in "0123456789abcdef" for c in value)
    )
