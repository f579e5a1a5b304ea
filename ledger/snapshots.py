"""Projection snapshots: every DomainState saved with the position (and hash) it reflects.

Opening a ledger loads the snapshot (:func:`restore`) and folds only newer events, so
startup does not grow with history; :meth:`ledger.Ledger.close` saves a fresh one once
enough events were folded since the last. A snapshot is only a cache and is never trusted:
it is ignored, and the ledger rebuilds from the events, when it was written by another
projection version or snapshot format, when it is damaged (its digest does not match), or
when the log no longer holds its position with its hash (a rewritten or truncated log).

Encoding (msgpack): the map ``{"format": 1, "projection_version", "position", "hash",
"digest", "body"}`` where ``body`` is the msgpack of ``{"states": [DomainState.to_dict()
...], "by_name": {name: stream_id}}`` and ``digest`` is its hex sha256. The store keeps it
under the key :data:`SNAPSHOT_KEY` (``EventStore.save_snapshot``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import msgpack

from .ports import EventStore
from .projections import PROJECTION_VERSION, DomainState

if TYPE_CHECKING:
    from .ledger import Ledger

SNAPSHOT_KEY = "projections"
SNAPSHOT_FORMAT = 1
DEFAULT_EVERY = 1000  # save on close once this many events were folded since the last one
Status = Literal["none", "loaded", "other-version", "corrupt", "stale"]


@dataclass
class Snapshot:
    """A decoded snapshot."""

    position: int
    hash: str
    states: dict[str, DomainState] = field(default_factory=dict)
    by_name: dict[str, str] = field(default_factory=dict)


class SnapshotRejected(ValueError):
    """Why a snapshot cannot be used: ``status`` is ``other-version`` or ``corrupt``."""

    def __init__(self, status: Status, detail: str) -> None:
        super().__init__(detail)
        self.status = status


def encode(
    states: dict[str, DomainState], by_name: dict[str, str], position: int, hash: str
) -> bytes:
    """The snapshot bytes of these projections, reflecting the log up to ``position``."""
    body = msgpack.packb(
        {"states": [st.to_dict() for _, st in sorted(states.items())],
         "by_name": dict(sorted(by_name.items()))},
        use_bin_type=True,
    )
    return msgpack.packb({
        "format": SNAPSHOT_FORMAT,
        "projection_version": PROJECTION_VERSION,
        "position": position,
        "hash": hash,
        "digest": hashlib.sha256(body).hexdigest(),
        "body": body,
    }, use_bin_type=True)


def decode(data: bytes) -> Snapshot:
    """Decode snapshot bytes; :class:`SnapshotRejected` when they cannot be used."""
    try:
        outer = msgpack.unpackb(data, raw=False)
    except Exception as e:
        raise SnapshotRejected("corrupt", f"not msgpack: {e}") from e
    if not isinstance(outer, dict):
        raise SnapshotRejected("corrupt", "not a snapshot")
    if outer.get("format") != SNAPSHOT_FORMAT:
        raise SnapshotRejected("other-version", f"snapshot format {outer.get('format')!r}")
    if outer.get("projection_version") != PROJECTION_VERSION:
        raise SnapshotRejected("other-version", "written by projection version "
                               f"{outer.get('projection_version')!r}, not {PROJECTION_VERSION}")
    body = outer.get("body")
    if not isinstance(body, bytes) or hashlib.sha256(body).hexdigest() != outer.get("digest"):
        raise SnapshotRejected("corrupt", "its digest does not match its contents")
    position, hash_ = outer.get("position"), outer.get("hash")
    if not isinstance(position, int) or not isinstance(hash_, str):
        raise SnapshotRejected("corrupt", "no position or hash")
    try:
        inner = msgpack.unpackb(body, raw=False)
        states = {}
        for d in inner["states"]:
            st = DomainState.from_dict(d)
            states[st.stream_id] = st
        by_name = {str(k): str(v) for k, v in inner["by_name"].items()}
    except ValueError as e:
        raise SnapshotRejected("other-version", str(e)) from e
    except Exception as e:
        raise SnapshotRejected("corrupt", f"unreadable projections: {e}") from e
    return Snapshot(position=position, hash=hash_, states=states, by_name=by_name)


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


def save(store: EventStore, states: dict[str, DomainState], by_name: dict[str, str],
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


def differing(
    a: dict[str, DomainState], a_names: dict[str, str],
    b: dict[str, DomainState], b_names: dict[str, str],
) -> list[str]:
    """Names (or stream ids) of the domains whose projections differ between two sets."""
    out = set()
    for sid in set(a) | set(b):
        sa, sb = a.get(sid), b.get(sid)
        if sa is None or sb is None or sa.to_dict() != sb.to_dict():
            either = sa or sb
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
        for rec in store.read_all(limit=snap.position):
            fresh._fold(rec)
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
