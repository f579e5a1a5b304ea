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

Backends call :func:`record_hash` inside their append transaction (they know the previous
hash there); nothing else in the code base hashes events. There is no key: anyone can
recompute a whole chain, so an attacker who rewrites history can rewrite the hashes too.
Pin the head (``ckpt-ledger head``) somewhere else and check it later with
``ckpt-ledger verify-log --anchor POSITION:HASH``.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Protocol

GENESIS = "0" * 64
"""The ``prev_hash`` of position 1 (and the head hash of an empty log)."""

_TAG = b"ckpt-ledger/chain/1\x00"
_INT = struct.Struct(">q")
_FLOAT = struct.Struct(">d")
_LEN = struct.Struct(">Q")


class ChainFields(Protocol):
    """What the hash covers: the fields of a :class:`ledger.envelope.StoredRecord`."""

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
