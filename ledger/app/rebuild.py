"""Maintenance of snapshots: rebuild them from the events, and check one against the chain.

:func:`rebuild` refolds every event and compares with the saved snapshot; :class:`Refold`
(used by ``verify-log``) folds the verified events up to the snapshot's position and
compares, which binds a snapshot to the chain it claims (ledger/log/snapshot_codec.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ledger.app.json_types import RebuildJSON, SnapshotCheckJSON
from ledger.app.read_model import ReadModel
from ledger.domain.errors import LedgerError
from ledger.domain.state import DomainState
from ledger.log.fold import fold_rows
from ledger.log.records import StoredRecord
from ledger.log.snapshot_codec import load, save
from ledger.log.store import EventStore, ScanRow


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

    def to_dict(self) -> RebuildJSON:
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


def rebuild(store: EventStore, write: bool = True,
            progress: Callable[[int, int], None] | None = None) -> RebuildReport:
    """Recompute every projection from the events, compare with the snapshot, save anew.

    A usable snapshot is compared with the projections folded up to exactly its position;
    the report names the domains that differ. Then the fold continues to the head and (when
    ``write``) a fresh snapshot of it is saved.
    """
    snap, status, detail = load(store)
    fresh = ReadModel(store)
    compared: str = status
    diff: list[str] = []
    if snap is not None:
        fresh.catch_up(upto=snap.position, progress=progress)
        diff = differing(snap.states, snap.by_name, fresh.states, fresh.by_name)
        compared, detail = ("differs" if diff else "matched"), str(snap.position)
    fresh.catch_up(progress=progress)
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

    def to_dict(self) -> SnapshotCheckJSON:
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
