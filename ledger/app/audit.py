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
from typing import Any

from ledger.app.views import EventView
from ledger.domain.errors import LedgerError
from ledger.domain.events import EVENT_TYPES, Event
from ledger.domain.state import DomainState
from ledger.log.chain import malformed
from ledger.log.fold import DECODE_ERRORS, damaged
from ledger.log.records import Provenance, StoredRecord, decode_record

Point = int | datetime

BITMAP_TYPES = ("BitmapDisabled", "BitmapEnabled", "BitmapMerged", "BitmapRemoved")
CHECKPOINT_TYPES = ("CheckpointCreated", "CheckpointRedefined", "CheckpointObserved")


def parse_point(
    value: int | str | datetime, *, upper: bool = False, what: str = "--as-of"
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
            since=None if since is None else parse_point(since, what="--since"),
            until=None if until is None else parse_point(until, upper=True, what="--until"),
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
            raise LedgerError("INVALID_ARG", f"--since {_show(s)} is later than --until {_show(u)}")

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
        if self.disks and not any(touches_disk(ev.type, ev.data, d) for d in self.disks):
            return False
        return not self.checkpoints or any(
            touches_checkpoint(ev.type, ev.data, c) for c in self.checkpoints
        )

    def apply(self, events: Iterable[EventView]) -> list[EventView]:
        """The events that match, in their order."""
        return list(self.select(events))

    def select(self, events: Iterable[EventView]) -> Iterator[EventView]:
        """The events that match, one at a time (constant memory)."""
        return (ev for ev in events if self.matches(ev))


def _show(p: Point) -> str:
    return p.isoformat().replace("+00:00", "Z") if isinstance(p, datetime) else str(p)


def touches_disk(type_: str, data: dict[str, Any], disk: str) -> bool:
    """A bitmap (or drift) event on ``disk``, a checkpoint event with a bitmap on it, or an
    enrolment listing it."""
    if type_ in BITMAP_TYPES or type_ == "DriftObserved":
        return data.get("disk") == disk
    if type_ in CHECKPOINT_TYPES:
        return any(
            d.get("name") == disk and d.get("checkpoint", "bitmap") == "bitmap"
            for d in data.get("disks", ())
        )
    if type_ == "DomainEnrolled":
        return any(d.get("name") == disk for d in data.get("disks", ()))
    return False


def touches_checkpoint(type_: str, data: dict[str, Any], name: str) -> bool:
    """A checkpoint event named ``name``, a bitmap event of it (its checkpoint, bitmap or merge
    target), or a delete that removed it, targeted it or reparented it (or onto it)."""
    if type_ in CHECKPOINT_TYPES:
        return data.get("name") == name
    if type_ in BITMAP_TYPES:
        return name in (data.get("checkpoint"), data.get("bitmap"), data.get("into"))
    if type_ == "CheckpointDeleted":
        reparented = data.get("reparented") or {}
        return (
            data.get("name") == name
            or name in data.get("deleted", ())
            or name in reparented
            or name in reparented.values()
        )
    if type_ == "DriftObserved":
        return name in (data.get("checkpoint"), data.get("bitmap"))
    if type_ == "CheckpointGone":
        reparented = data.get("reparented") or {}
        return data.get("name") == name or name in reparented or name in reparented.values()
    if type_ == "OperationSettled":
        return data.get("checkpoint") == name
    if type_ == "BackupStarted":
        return data.get("checkpoint") == name or any(
            d.get("incremental") == name for d in data.get("disks", ()))
    return False


def summary(type_: str, data: dict[str, Any]) -> str:
    """A few words saying what an event did (the ``log`` table's "What" column)."""
    if "bitmap" in data and "disk" in data and type_ != "DriftObserved":
        into = f" -> {data['into']}" if "into" in data else ""
        return f"{data['disk']}/{data['bitmap']}{into}"
    if type_ == "CheckpointDeleted":
        gone = [str(n) for n in data.get("deleted", ())]
        others = [n for n in gone if n != data["name"]]
        if data.get("children_only"):
            what = f"children of {data['name']}: {', '.join(gone) or 'none'}"
        else:
            what = data["name"] + (f" with {', '.join(others)}" if others else "")
        moves = (data.get("reparented") or {}).items()
        moved = ", ".join(f"{c} now under {p or '(no parent)'}" for c, p in moves)
        return what + (f"; {moved}" if moved else "")
    if type_ == "DomainEnrolled":
        return f"{data['name']} {data['policy']}"
    if type_ == "DriftObserved":
        return f"{data.get('kind', '')} {data.get('detail', '')}".strip()
    if type_ == "CheckpointGone":
        return f"{data.get('name', '')} ({data.get('why', '')})"
    if type_ == "OperationSettled":
        return f"{data.get('op', '')} {data.get('checkpoint', '')}: {data.get('outcome', '')}"
    if type_ == "BackupStarted":
        since = sorted({str(d["incremental"]) for d in data.get("disks", ())
                        if d.get("incremental")})
        kind = f"incremental since {', '.join(since)}" if since else "full"
        made = f", creates {data['checkpoint']}" if data.get("checkpoint") else ""
        return f"job {data.get('job', '')}: {kind}{made}"
    if type_ == "BackupEnded":
        error = f" ({data['error']})" if data.get("error") else ""
        return f"job {data.get('job', '')}: {data.get('outcome', '')}{error}"
    name = str(data.get("name", ""))
    parent = data.get("parent")
    return f"{name} <- {parent}" if parent else name




def iso(ts: float) -> str:
    """Epoch seconds as ISO 8601 UTC to the second (``2026-11-29T18:00:00Z``)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


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
    except DECODE_ERRORS as e:
        raise LedgerError("STORE_ERROR", f"event at position {rec.position} is damaged: "
                          f"recorded_at {rec.recorded_at!r} is not a time") from e
    return EventView(
        position=rec.position,
        stream_version=rec.stream_version,
        domain=rec.stream_name,
        stream_id=rec.stream_id,
        type=rec.type,
        recorded_at=recorded_at,
        actor=prov.actor,
        host=prov.host,
        reason=prov.reason,
        correlation_id=prov.correlation_id,
        tool=prov.tool,
        tool_version=prov.tool_version,
        data={k: v for k, v in event.model_dump(mode="json").items() if k != "type"},
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
