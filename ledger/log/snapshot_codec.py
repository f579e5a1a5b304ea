"""Projection snapshots: every DomainState saved with the position (and hash) it reflects.

Opening a ledger loads the snapshot (:func:`load`, from ``ReadModel.restore_snapshot``) and
folds only newer events, so startup does not grow with history; :meth:`ledger.Ledger.close`
saves a fresh one once enough events were folded since the last. A snapshot is only a cache and
is never trusted: it is ignored, and the ledger rebuilds from the events, when it was written
by another projection version or snapshot format, when it is damaged (its digest does not
match), or when the log no longer holds its position with its hash (a rewritten or truncated
log). The crc only catches damage: ``verify-log`` binds a snapshot to the chain it claims by
folding the verified events up to its position and comparing (:class:`Refold`), and ``verify``
compares the host with states folded from the events (ledger/app/recovery.py).

Encoding (format 3)::

    b"ckpt-ledger snapshot 3\n" | crc32(rest), 4 bytes big-endian | rest
    rest = len(header), 4 bytes big-endian | header | blobs

``header`` is the msgpack of ``{"projection_version", "position", "hash", "ids": [stream_id
...], "ends": [offset ...], "by_name": {name: stream_id}}``; ``blobs`` is every domain's blob
one after the other (domain ``i`` is ``blobs[ends[i-1]:ends[i]]``), each the zlib-compressed
msgpack of one ``DomainState.to_dict()``. The store keeps it under the key
:data:`SNAPSHOT_KEY` (``EventStore.save_snapshot``).

Opening checks the crc of the whole snapshot and reads the small header, but decodes a
domain's state only when it is first used (:class:`LazyStates`, over slices of the one
buffer, nothing copied), so it costs about the same for ten domains or ten thousand.
Format 2 (a msgpack map holding one bytes object per domain) is recognised as another
version and rebuilt.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgpack

from ledger.domain.errors import LedgerError
from ledger.domain.state import PROJECTION_VERSION, DomainState
from ledger.log.store import EventStore

SNAPSHOT_KEY = "projections"
SNAPSHOT_FORMAT = 3  # 3: one buffer of per-domain blobs, a crc32 (2: a map of blobs, sha256)
_MAGIC_PREFIX = b"ckpt-ledger snapshot "
_MAGIC = _MAGIC_PREFIX + str(SNAPSHOT_FORMAT).encode() + b"\n"
_U32 = 4
DEFAULT_EVERY = 1000  # save on close once this many events were folded since the last one
Status = Literal["none", "loaded", "other-version", "corrupt", "stale"]


@dataclass
class Snapshot:
    """A decoded snapshot."""

    position: int
    hash: str
    states: MutableMapping[str, DomainState] = field(default_factory=dict)
    by_name: dict[str, str] = field(default_factory=dict)


def encode_state(state: DomainState) -> bytes:
    """One domain's snapshot blob: zlib of the msgpack of ``state.to_dict()``."""
    return zlib.compress(msgpack.packb(state.to_dict(), use_bin_type=True), 1)


def decode_state(stream_id: str, blob: bytes | memoryview) -> DomainState:
    """The state in a blob written by :func:`encode_state` (STORE_ERROR if unreadable:
    the snapshot's digest matched, so it was written so; ``ckpt-ledger rebuild`` replaces
    it)."""
    try:
        state = DomainState.from_dict(msgpack.unpackb(zlib.decompress(blob), raw=False))
        if state.stream_id != stream_id:
            raise ValueError(f"it holds stream {state.stream_id}")
    except Exception as e:
        raise LedgerError("STORE_ERROR", f"the snapshot's projection of stream {stream_id} "
                          f"is unreadable ({e}); run `ckpt-ledger rebuild`") from e
    return state


_BLOB = (bytes, memoryview)


class LazyStates(MutableMapping[str, DomainState]):
    """Stream id -> DomainState, a mapping whose states loaded from a snapshot are decoded
    from their blobs the first time each is looked up."""

    __slots__ = ("_d",)

    def __init__(self, blobs: Mapping[str, bytes | memoryview] | None = None) -> None:
        # a value is the state, or its blob (bytes or a slice of the snapshot) until first
        # looked up
        self._d: dict[str, DomainState | bytes | memoryview] = dict(blobs or {})

    def __getitem__(self, key: str) -> DomainState:
        v = self._d[key]
        if type(v) in _BLOB:
            v = self._d[key] = decode_state(key, v)  # type: ignore[arg-type]
        return v  # type: ignore[return-value]

    def get(self, key: str, default: Any = None) -> Any:
        v = self._d.get(key, _MISSING)
        if v is _MISSING:
            return default
        if type(v) in _BLOB:
            v = self._d[key] = decode_state(key, v)  # type: ignore[arg-type]
        return v

    def __setitem__(self, key: str, value: DomainState) -> None:
        self._d[key] = value

    def __delitem__(self, key: str) -> None:
        del self._d[key]

    def __contains__(self, key: object) -> bool:
        return key in self._d

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __repr__(self) -> str:
        return f"LazyStates({len(self._d)} states)"

    def encoded(self, key: str) -> bytes:
        """The blob of ``key``'s state: the loaded one while it was never looked up (and so
        cannot have changed), else a fresh encoding."""
        v = self._d[key]
        if type(v) in _BLOB:
            return bytes(v)  # type: ignore[arg-type]
        return encode_state(v)  # type: ignore[arg-type]


_MISSING = object()


class SnapshotRejected(ValueError):
    """Why a snapshot cannot be used: ``status`` is ``other-version`` or ``corrupt``."""

    def __init__(self, status: Status, detail: str) -> None:
        super().__init__(detail)
        self.status = status


def encode(
    states: Mapping[str, DomainState], by_name: Mapping[str, str], position: int, hash: str
) -> bytes:
    """The snapshot bytes of these projections, reflecting the log up to ``position``."""
    ids = sorted(states)
    if isinstance(states, LazyStates):
        blobs = [states.encoded(sid) for sid in ids]
    else:
        blobs = [encode_state(states[sid]) for sid in ids]
    ends, end = [], 0
    for blob in blobs:
        end += len(blob)
        ends.append(end)
    header = msgpack.packb({
        "projection_version": PROJECTION_VERSION, "position": position, "hash": hash,
        "ids": ids, "ends": ends, "by_name": dict(sorted(by_name.items())),
    }, use_bin_type=True)
    return join(header, b"".join(blobs))


def join(header: bytes, blobs: bytes) -> bytes:
    """Snapshot bytes from a packed header and the blobs (see the module docstring)."""
    rest = len(header).to_bytes(_U32, "big") + header + blobs
    return _MAGIC + zlib.crc32(rest).to_bytes(_U32, "big") + rest


def split(data: bytes) -> tuple[dict[str, Any], memoryview]:
    """The header (unpacked) and the blobs of snapshot bytes, checked by their crc;
    :class:`SnapshotRejected` when they are not a snapshot of this format."""
    if not data.startswith(_MAGIC):
        if data.startswith(_MAGIC_PREFIX):
            version = data[len(_MAGIC_PREFIX):].split(b"\n", 1)[0][:20]
            raise SnapshotRejected("other-version", f"snapshot format {version!r}")
        try:
            old = msgpack.unpackb(data, raw=False)
        except Exception as e:
            raise SnapshotRejected("corrupt", "not a snapshot") from e
        if isinstance(old, dict) and "format" in old:  # format 2 and before: a map
            raise SnapshotRejected("other-version", f"snapshot format {old['format']!r}")
        raise SnapshotRejected("corrupt", "not a snapshot")
    view = memoryview(data)[len(_MAGIC):]
    if len(view) < 2 * _U32:
        raise SnapshotRejected("corrupt", "cut short")
    crc, rest = int.from_bytes(view[:_U32], "big"), view[_U32:]
    if zlib.crc32(rest) != crc:
        raise SnapshotRejected("corrupt", "its crc does not match its contents")
    size = int.from_bytes(rest[:_U32], "big")
    try:
        header = msgpack.unpackb(rest[_U32:_U32 + size], raw=False)
    except Exception as e:
        raise SnapshotRejected("corrupt", f"unreadable header: {e}") from e
    if not isinstance(header, dict):
        raise SnapshotRejected("corrupt", "unreadable header")
    return header, rest[_U32 + size:]


def decode(data: bytes) -> Snapshot:
    """Decode snapshot bytes; :class:`SnapshotRejected` when they cannot be used."""
    header, blobs = split(data)
    if header.get("projection_version") != PROJECTION_VERSION:
        raise SnapshotRejected("other-version", "written by projection version "
                               f"{header.get('projection_version')!r}, not {PROJECTION_VERSION}")
    position, hash_ = header.get("position"), header.get("hash")
    if not isinstance(position, int) or not isinstance(hash_, str):
        raise SnapshotRejected("corrupt", "no position or hash")
    ids, ends, names = header.get("ids"), header.get("ends"), header.get("by_name")
    if (not isinstance(ids, list) or not isinstance(ends, list) or len(ids) != len(ends)
            or not isinstance(names, dict)):
        raise SnapshotRejected("corrupt", "unreadable projections")
    states: dict[str, memoryview] = {}
    start = 0
    for sid, end in zip(ids, ends, strict=True):
        if not isinstance(sid, str) or type(end) is not int or not start <= end <= len(blobs):
            raise SnapshotRejected("corrupt", "unreadable projections")
        states[sid] = blobs[start:end]
        start = end
    if start != len(blobs) or len(states) != len(ids):
        raise SnapshotRejected("corrupt", "unreadable projections")
    by_name = {str(k): str(v) for k, v in names.items()}
    if not all(sid in states for sid in by_name.values()):
        raise SnapshotRejected("corrupt", "a name stands for a stream it does not hold")
    return Snapshot(position=position, hash=hash_, states=LazyStates(states), by_name=by_name)


def hash_at(store: EventStore, position: int) -> str | None:
    """The stored hash of ``position`` (None when the log does not hold it)."""
    if position < 1:
        return None
    rec = next(store.read_all(after=position - 1, limit=1), None)
    return rec.hash if rec is not None and rec.position == position else None


def load(store: EventStore) -> tuple[Snapshot | None, Status, str]:
    """The store's snapshot if it can be trusted, with a status and a one-line detail.

    ``loaded`` (usable), ``none`` (there is none), ``other-version``, ``corrupt``, or
    ``stale`` (the log does not hold its position with its hash).
    """
    saved = store.load_snapshot(SNAPSHOT_KEY)
    if saved is None:
        return None, "none", "no snapshot"
    position, data = saved
    try:
        snap = decode(data)
    except SnapshotRejected as e:
        return None, e.status, str(e)
    if snap.position != position:
        return None, "corrupt", f"saved at position {position} but says {snap.position}"
    actual = hash_at(store, position)
    if actual is None:
        return None, "stale", f"the log does not reach its position {position}"
    if actual != snap.hash:
        return None, "stale", f"the log's hash at position {position} is not the snapshot's"
    return snap, "loaded", f"position {position}"


def save(store: EventStore, states: Mapping[str, DomainState], by_name: Mapping[str, str],
         position: int, hash: str) -> None:
    """Save these projections (reflecting the log up to ``position``, whose hash is
    ``hash``) as the store's snapshot."""
    store.save_snapshot(SNAPSHOT_KEY, position, encode(states, by_name, position, hash))
