"""Projection snapshots: every DomainState saved with the position (and hash) it reflects.

Opening a ledger loads the snapshot (:func:`restore`) and folds only newer events, so
startup does not grow with history; :meth:`ledger.Ledger.close` saves a fresh one once
enough events were folded since the last. A snapshot is only a cache and is never trusted:
it is ignored, and the ledger rebuilds from the events, when it was written by another
projection version or snapshot format, when it is damaged (its digest does not match), or
when the log no longer holds its position with its hash (a rewritten or truncated log).
The crc only catches damage: ``verify-log`` binds a snapshot to the chain it claims by
folding the verified events up to its position and comparing (:class:`Refold`), and
``verify`` compares the host with states folded from the events (ledger/recovery.py).

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
from typing import TYPE_CHECKING, Any, Literal

import msgpack

from .envelope import StoredRecord
from .errors import LedgerError
from .fold import fold_rows
from .ports import EventStore, ScanRow
from .projections import PROJECTION_VERSION, DomainState

if TYPE_CHECKING:
    from .ledger import Ledger

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
    """Stream id -> DomainState, like the dict it replaces, but each state loaded from a
    snapshot is decoded from its blob the first time it is looked up."""

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


def restore(ledger: Ledger) -> Status:
    """Load the store's snapshot into a fresh ``ledger`` when it can be trusted.

    Sets ``states``, ``by_name``, ``position`` (and the hash there); the caller then folds
    only newer events. Returns the status of the snapshot (see :func:`load`).
    """
    snap, status, _ = load(ledger.store)
    if snap is not None:
        ledger.states = snap.states
        ledger.by_name = snap.by_name
        ledger.position = snap.position
        ledger.position_hash = snap.hash
        ledger.snapshot_position = snap.position
    return status


@dataclass
class RebuildReport:
    """The outcome of :func:`rebuild`."""

    position: int  # the log's head, now reflected by the fresh snapshot
    events: int  # events folded
    domains: int
    snapshot: str  # matched | differs | none | other-version | corrupt | stale
    detail: str
    differing: list[str] = field(default_factory=list)  # domains that differ (names)
    written: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return {"position": self.position, "events": self.events, "domains": self.domains,
                "snapshot": self.snapshot, "detail": self.detail,
                "differing": list(self.differing), "written": self.written}

    def line(self) -> str:
        """One line for a terminal."""
        what = {
            "matched": "the snapshot matched",
            "differs": "the snapshot DIFFERED in " + ", ".join(self.differing),
            "none": "there was no snapshot",
        }.get(self.snapshot, f"the snapshot was ignored ({self.snapshot}: {self.detail})")
        if self.snapshot in ("matched", "differs"):
            what += f" at position {self.detail}"
        return (f"rebuilt {self.domains} domains from {self.events} events (head "
                f"{self.position}); {what}; "
                + ("wrote a fresh snapshot" if self.written else "no snapshot written"))


def _readable(states: Mapping[str, DomainState], sid: str) -> DomainState | None:
    """``states[sid]``, or None when absent or its snapshot blob does not decode."""
    try:
        return states.get(sid)
    except LedgerError:
        return None


def differing(
    a: Mapping[str, DomainState], a_names: Mapping[str, str],
    b: Mapping[str, DomainState], b_names: Mapping[str, str],
) -> list[str]:
    """Names (or stream ids) of the domains whose projections differ between two sets,
    sorted; a state of ``a`` that does not decode differs. A domain is named as ``b`` (the
    one folded from the events) names it."""
    out = set()
    for sid in set(a) | set(b):
        sa, sb = _readable(a, sid), b.get(sid)
        if sa is None or sb is None or sa.to_dict() != sb.to_dict():
            either = sb or sa
            out.add((either.name if either is not None else "") or sid)
    for name in set(a_names) | set(b_names):
        if a_names.get(name) != b_names.get(name):
            out.add(name)
    return sorted(out)


def rebuild(store: EventStore, write: bool = True) -> RebuildReport:
    """Recompute every projection from the events, compare with the snapshot, save anew.

    A usable snapshot is compared with the projections folded up to exactly its position;
    the report names the domains that differ. Then the fold continues to the head and (when
    ``write``) a fresh snapshot of it is saved.
    """
    from .ledger import Ledger

    snap, status, detail = load(store)
    fresh = Ledger(store)
    compared: str = status
    diff: list[str] = []
    if snap is not None:
        fresh.catch_up(upto=snap.position)
        diff = differing(snap.states, snap.by_name, fresh.states, fresh.by_name)
        compared, detail = ("differs" if diff else "matched"), str(snap.position)
    fresh.catch_up()
    written = False
    if write and fresh.position > 0:
        save(store, fresh.states, fresh.by_name, fresh.position, fresh.position_hash)
        fresh.snapshot_position = fresh.position
        written = True
    return RebuildReport(position=fresh.position, events=fresh.folded,
                         domains=len(fresh.states), snapshot=compared, detail=detail,
                         differing=diff, written=written)


@dataclass
class SnapshotCheck:
    """``verify-log``'s verdict on the store's snapshot (see :class:`Refold`).

    ``status``: ``matched`` or ``differs`` (it loads, and the events up to its position fold
    to the same projections, or not), ``unfoldable`` (an event up to its position does not
    fold), ``unchecked`` (the hash chain breaks first), or what :func:`load` said of one that
    is not used (``none``, ``other-version``, ``corrupt``, ``stale``).
    """

    status: str
    detail: str
    position: int | None = None
    differing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """False when a snapshot that would be loaded is not what the events say."""
        return self.status not in ("differs", "unfoldable")

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return {"status": self.status, "position": self.position, "detail": self.detail,
                "differing": list(self.differing)}

    def line(self) -> str:
        """A clause for verify-log's line."""
        where = f"the snapshot at position {self.position}"
        if self.status == "matched":
            return f"{where} matches the events"
        if self.status == "differs":
            more = f" (and {len(self.differing) - 1} more)" if len(self.differing) > 1 else ""
            return (f"{where} does not match the events: domain {self.differing[0]} differs"
                    f"{more}; `ckpt-ledger rebuild` replaces it")
        if self.status == "unfoldable":
            return (f"{where} cannot be checked: {self.detail}; `ckpt-ledger rebuild` "
                    "says more")
        if self.status == "unchecked":
            return f"{where} not checked: {self.detail}"
        if self.status == "none":
            return "no snapshot"
        return f"the snapshot is not used ({self.status}: {self.detail})"


class Refold:
    """Folds the records of a verified chain (handed to :meth:`add`, oldest first) up to the
    store's snapshot's position, and compares the result with the snapshot
    (:meth:`result`): the snapshot is bound to the chain it claims to reflect."""

    PAGE = 1024

    def __init__(self, store: EventStore) -> None:
        snap, status, detail = load(store)
        self.snap = snap
        self.status, self.detail = status, detail
        self.states: dict[str, DomainState] = {}
        self.by_name: dict[str, str] = {}
        self.rows: list[ScanRow] = []
        self.reached = 0  # the last position handed to the fold
        self.error: str | None = None

    def add(self, rec: StoredRecord) -> None:
        """Take the next verified record."""
        if self.snap is None or self.error is not None or rec.position > self.snap.position:
            return
        self.rows.append((rec.position, rec.stream_id, rec.stream_version,
                          rec.schema_version, rec.payload))
        self.reached = rec.position
        if len(self.rows) >= self.PAGE:
            self._fold()

    def _fold(self) -> None:
        rows, self.rows = self.rows, []
        last = [rows[0][0] - 1]

        def done(position: int, count: int) -> None:
            if count:
                last[0] = position

        try:
            fold_rows(self.states, self.by_name, [rows], done)
        except Exception as e:  # a payload that does not fold: the snapshot cannot be right
            why = e.one_line() if isinstance(e, LedgerError) else f"{type(e).__name__}: {e}"
            self.error = f"event {last[0] + 1} does not fold ({why})"

    def result(self) -> SnapshotCheck:
        """The verdict, once every record up to the snapshot's position was added."""
        snap = self.snap
        if snap is None:
            return SnapshotCheck(self.status, self.detail)
        if self.error is None and self.rows:
            self._fold()
        if self.error is not None:
            return SnapshotCheck("unfoldable", self.error, snap.position)
        if self.reached < snap.position:
            return SnapshotCheck("unchecked", "the hash chain breaks before it",
                                 snap.position)
        diff = differing(snap.states, snap.by_name, self.states, self.by_name)
        if diff:
            return SnapshotCheck("differs", "not what the events say", snap.position, diff)
        return SnapshotCheck("matched", "", snap.position)
