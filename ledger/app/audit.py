"""Audit queries over the event log: which events match a filter, and points in history.

Everything here is pure: it reads :class:`~ledger.app.views.EventView` rows (what ``log`` returns)
and never a store. A *point* in history is either a global event POSITION (an int) or a time
(an aware UTC :class:`datetime`); :func:`parse_point` reads both from the command line.

Times are compared at the one-second resolution ``log`` prints, so a time copied from its
output selects that event. A bare date used as an upper bound (``--until``, ``--as-of``)
covers the whole day.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

from ledger.app.views import EventView, iso
from ledger.domain.errors import LedgerError
from ledger.domain.events import (
    EVENT_TYPES,
    BackupEnded,
    BackupStarted,
    BitmapEvent,
    BitmapMerged,
    CheckpointCreated,
    CheckpointDeleted,
    CheckpointGone,
    CheckpointObserved,
    CheckpointRedefined,
    DomainEnrolled,
    DriftObserved,
    Event,
    OperationSettled,
)
from ledger.domain.state import DomainState
from ledger.log.chain import malformed
from ledger.log.fold import DECODE_ERRORS, damaged
from ledger.log.records import Provenance, StoredRecord, decode_record

Point = int | datetime



def parse_point(
    value: int | str | datetime, *, upper: bool = False, what: str = "a point in history"
) -> Point:
    """An event POSITION (non-negative int) or a UTC time, from an int, datetime or text.

    Text is an integer or ISO 8601 (``2026-11-29T18:00:00Z``, ``2026-11-29 18:00``,
    ``2026-11-29``); naive times are UTC. With ``upper``, a bare date means its last instant.
    INVALID_ARG for anything else.
    """
    if isinstance(value, bool):
        raise LedgerError("INVALID_ARG", f"{what} must be a position or a time, not {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise LedgerError("INVALID_ARG", f"{what} position must be >= 0, not {value}")
        if value > MAX_POSITION:
            raise LedgerError("INVALID_ARG", f"{what} position must be at most {MAX_POSITION}")
        return value
    if isinstance(value, datetime):
        return _utc(value)
    if not isinstance(value, str):
        raise LedgerError("INVALID_ARG", f"{what} must be a position or a time, not {value!r}")
    text = value.strip()
    number = _INTEGER.match(text)
    if number:
        if len(number.group(2)) > 19:  # more than a store's positions can hold
            raise LedgerError("INVALID_ARG", f"{what} position must be at most {MAX_POSITION}")
        return parse_point(int(text), what=what)
    try:
        if len(text) == 10:  # a bare date: YYYY-MM-DD
            day = date.fromisoformat(text)
            moment = time.max if upper else time.min
            return datetime.combine(day, moment, tzinfo=UTC)
        return _utc(datetime.fromisoformat(text))
    except ValueError:
        raise LedgerError(
            "INVALID_ARG",
            f"{what} '{value}' is neither an event position nor an ISO 8601 time "
            "(e.g. 42, 2026-11-29T18:00:00Z, '2026-11-29 18:00', 2026-11-29)",
        ) from None


MAX_POSITION = (1 << 63) - 1  # positions are signed 64-bit integers in every store
_INTEGER = re.compile(r"([+-]?)0*([0-9]+)\Z", re.ASCII)  # ASCII digits only (not "²")


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def at_or_before(position: int, recorded_at: float, point: Point) -> bool:
    """True when an event at ``position``/``recorded_at`` (epoch seconds) is not after ``point``."""
    if isinstance(point, datetime):
        return int(recorded_at) <= point.timestamp()
    return position <= point


def _at_or_after(position: int, recorded_at: float, point: Point) -> bool:
    if isinstance(point, datetime):
        return int(recorded_at) >= point.timestamp()
    return position >= point


def event_seconds(view: EventView) -> float:
    """The epoch seconds of an event's ``recorded_at`` (as printed, whole seconds)."""
    return datetime.fromisoformat(view.recorded_at).timestamp()


@dataclass(frozen=True)
class LogFilter:
    """What ``log`` keeps. Values within one field are alternatives (OR); fields combine (AND).

    ``since``/``until`` are inclusive points (a position or a time). ``actors`` may use shell
    wildcards (``backup@*``).
    """

    domain: str | None = None
    disks: tuple[str, ...] = ()
    checkpoints: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    actors: tuple[str, ...] = ()
    since: Point | None = None
    until: Point | None = None

    @classmethod
    def from_options(
        cls,
        domain: str | None = None,
        disks: Sequence[str] = (),
        checkpoints: Sequence[str] = (),
        types: Sequence[str] = (),
        actors: Sequence[str] = (),
        since: int | str | datetime | None = None,
        until: int | str | datetime | None = None,
    ) -> LogFilter:
        """Build and check a filter from command-line values (INVALID_ARG when unusable)."""
        known = {t.lower(): t for t in EVENT_TYPES}
        canon = []
        for t in types:
            if t.lower() not in known:
                raise LedgerError(
                    "INVALID_ARG", f"unknown event type '{t}' (one of: {', '.join(EVENT_TYPES)})"
                )
            canon.append(known[t.lower()])
        flt = cls(
            domain=domain,
            disks=tuple(disks),
            checkpoints=tuple(checkpoints),
            types=tuple(canon),
            actors=tuple(actors),
            since=None if since is None else parse_point(since, what="the start"),
            until=None if until is None else parse_point(until, upper=True, what="the end"),
        )
        flt.check()
        return flt

    def check(self) -> None:
        """INVALID_ARG when ``since`` is after ``until`` (both positions, or both times)."""
        s, u = self.since, self.until
        if s is None or u is None:
            return
        if isinstance(s, datetime) != isinstance(u, datetime):
            return  # a position and a time cannot be compared before reading the log
        if s > u:  # type: ignore[operator]
            raise LedgerError("INVALID_ARG",
                              f"the start {_show(s)} is later than the end {_show(u)}")

    def matches(self, ev: EventView) -> bool:
        """True when ``ev`` passes every part of the filter."""
        if self.domain is not None and ev.domain != self.domain:
            return False
        if self.types and ev.type not in self.types:
            return False
        if self.actors and not any(fnmatch.fnmatchcase(ev.actor, a) for a in self.actors):
            return False
        if self.since is not None or self.until is not None:
            secs = event_seconds(ev)
            if self.since is not None and not _at_or_after(ev.position, secs, self.since):
                return False
            if self.until is not None and not at_or_before(ev.position, secs, self.until):
                return False
        if self.disks and not any(touches_disk(ev.event, d) for d in self.disks):
            return False
        return not self.checkpoints or any(
            touches_checkpoint(ev.event, c) for c in self.checkpoints
        )

    def apply(self, events: Iterable[EventView]) -> list[EventView]:
        """The events that match, in their order."""
        return list(self.select(events))

    def select(self, events: Iterable[EventView]) -> Iterator[EventView]:
        """The events that match, one at a time (constant memory)."""
        return (ev for ev in events if self.matches(ev))


def _show(p: Point) -> str:
    return p.isoformat().replace("+00:00", "Z") if isinstance(p, datetime) else str(p)


def touches_disk(event: Event, disk: str) -> bool:
    """A bitmap (or drift) event on ``disk``, a checkpoint event with a bitmap on it, or an
    enrolment listing it."""
    match event:
        case BitmapEvent() | DriftObserved():
            return event.disk == disk
        case CheckpointCreated() | CheckpointRedefined() | CheckpointObserved():
            return any(d.name == disk and d.checkpoint == "bitmap" for d in event.disks)
        case DomainEnrolled():
            return any(d.name == disk for d in event.disks)
    return False


def touches_checkpoint(event: Event, name: str) -> bool:
    """A checkpoint event named ``name``, a bitmap event of it (its checkpoint, bitmap or merge
    target), or a delete that removed it, targeted it or reparented it (or onto it)."""
    match event:
        case CheckpointCreated() | CheckpointRedefined() | CheckpointObserved():
            return event.name == name
        case BitmapMerged():
            return name in (event.checkpoint, event.bitmap, event.into)
        case BitmapEvent() | DriftObserved():
            return name in (event.checkpoint, event.bitmap)
        case CheckpointDeleted():
            return (event.name == name or name in event.deleted
                    or name in event.reparented or name in event.reparented.values())
        case CheckpointGone():
            return (event.name == name
                    or name in event.reparented or name in event.reparented.values())
        case OperationSettled():
            return event.checkpoint == name
        case BackupStarted():
            return event.checkpoint == name or any(d.incremental == name for d in event.disks)
    return False


def summary(event: Event) -> str:
    """A few words saying what an event did (the ``log`` table's "What" column)."""
    match event:
        case BitmapMerged():
            return f"{event.disk}/{event.bitmap} -> {event.into}"
        case BitmapEvent():
            return f"{event.disk}/{event.bitmap}"
        case CheckpointDeleted():
            gone = list(event.deleted)
            others = [n for n in gone if n != event.name]
            if event.children_only:
                what = f"children of {event.name}: {', '.join(gone) or 'none'}"
            else:
                what = event.name + (f" with {', '.join(others)}" if others else "")
            moved = ", ".join(f"{c} now under {p or '(no parent)'}"
                              for c, p in event.reparented.items())
            return what + (f"; {moved}" if moved else "")
        case DomainEnrolled():
            return f"{event.name} {event.policy}"
        case DriftObserved():
            return f"{event.kind} {event.detail}".strip()
        case CheckpointGone():
            return f"{event.name} ({event.why})"
        case OperationSettled():
            return f"{event.op} {event.checkpoint}: {event.outcome}"
        case BackupStarted():
            since = sorted({d.incremental for d in event.disks if d.incremental})
            kind = f"incremental since {', '.join(since)}" if since else "full"
            made = f", creates {event.checkpoint}" if event.checkpoint else ""
            return f"job {event.job}: {kind}{made}"
        case BackupEnded():
            error = f" ({event.error})" if event.error else ""
            return f"job {event.job}: {event.outcome}{error}"
        case CheckpointCreated() | CheckpointRedefined() | CheckpointObserved():
            return f"{event.name} <- {event.parent}" if event.parent else event.name
    return event.type


def decoded(rec: StoredRecord) -> tuple[Event, Provenance]:
    """:func:`decode_record` of ``rec``; STORE_ERROR "event at position N is damaged: ..."
    for a malformed field, a payload that does not decode, or a type not the payload's."""
    bad = malformed(rec)
    if bad is not None:
        raise LedgerError("STORE_ERROR", f"event at position {rec.position!r} is damaged: "
                          f"field {bad} is malformed")
    try:
        event, prov = decode_record(rec)
    except DECODE_ERRORS as e:
        raise damaged(rec.position, e) from e
    if event.type != rec.type:
        raise LedgerError("STORE_ERROR", f"event at position {rec.position} is damaged: its "
                          f"type {rec.type!r} is not its payload's ({event.type!r})")
    return event, prov


def event_view(rec: StoredRecord) -> EventView:
    """A stored record as ``log`` shows it (its data without the type tag, its provenance)."""
    event, prov = decoded(rec)
    try:
        recorded_at = iso(rec.recorded_at)
    except (*DECODE_ERRORS, OSError) as e:  # OSError: beyond what the C library shows
        raise LedgerError("STORE_ERROR", f"event at position {rec.position} is damaged: "
                          f"recorded_at {rec.recorded_at!r} is not a time") from e
    return EventView.of(
        event,
        position=rec.position,
        stream_version=rec.stream_version,
        domain=rec.stream_name,
        stream_id=rec.stream_id,
        recorded_at=recorded_at,
        actor=prov.actor,
        host=prov.host,
        reason=prov.reason,
        correlation_id=prov.correlation_id,
        tool=prov.tool,
        tool_version=prov.tool_version,
    )


def fold_until(records: Iterable[StoredRecord], point: Point) -> DomainState | None:
    """A fresh state folded from one stream's records up to ``point`` (inclusive).

    None when no event of the stream (or no enrolment) is that old: the domain did not exist.
    """
    state: DomainState | None = None
    for rec in records:
        if not at_or_before(rec.position, rec.recorded_at, point):
            break
        if state is None:
            state = DomainState(stream_id=rec.stream_id)
        event, _ = decoded(rec)
        state.apply(event, rec.stream_version, rec.position)
    return state if state is not None and state.name else None
