"""Backup history: the backup jobs of a domain, told from its events (``ckpt-ledger backups``),
and recording one (``ckpt-ledger record-backup``).

A job is a ``BackupStarted`` event and, once it is over, a ``BackupEnded`` with the same
``job``; numbers count a domain's jobs from 1 in the order they started. Recording a job first
brings the ledger up to the host (when a hypervisor is given), so the checkpoint the job made
is known before the job is recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from ledger.app import sync
from ledger.app.audit import event_view
from ledger.app.views import BackupView, EventView, iso
from ledger.app.writer import Writer
from ledger.domain.errors import LedgerError
from ledger.domain.events import BackupEnded, BackupStarted, Event
from ledger.domain.model import BackupDisk, DomainInfo
from ledger.domain.names import check_checkpoint_name, check_disk_name

Outcome = Literal["completed", "failed", "aborted"]
MAX_TEXT = 4096  # job ids, tools, targets, errors: a bound on recorded free text


def backups(events: Iterable[EventView]) -> list[BackupView]:
    """The backup jobs in one domain's events, numbered from 1 in the order they started."""
    jobs: dict[str, BackupView] = {}
    for ev in events:
        e = ev.event
        if isinstance(e, BackupStarted) and e.job not in jobs:
            disks = list(e.disks)
            since = sorted({x.incremental for x in disks if x.incremental})
            kind: Literal["full", "incremental", "mixed", "unknown"] = (
                "unknown" if not disks else "full" if not since else
                "incremental" if all(x.incremental for x in disks) else "mixed")
            jobs[e.job] = BackupView(
                number=len(jobs) + 1, job=e.job, mode=e.mode, kind=kind, since=since,
                checkpoint=e.checkpoint, disks=disks, tool=e.tool, target=e.target,
                source=e.source, started_at=iso(e.at) if e.at else ev.recorded_at,
                actor=ev.actor, host=ev.host, reason=ev.reason, started_position=ev.position)
        elif isinstance(e, BackupEnded) and e.job in jobs:
            view = jobs[e.job]
            if view.outcome != "running":
                continue
            view.outcome = e.outcome
            view.ended_at = iso(e.at) if e.at else ev.recorded_at
            view.ended_position = ev.position
            view.bytes, view.seconds, view.error = e.bytes, e.seconds, e.error
    return list(jobs.values())


def between(events: Sequence[EventView], first: int, last: int) -> list[EventView]:
    """Every event of the domain from backup ``first``'s start to backup ``last``'s end (its
    start while it runs), both jobs included: what happened between two backups."""
    jobs = backups(events)
    if first < 1 or last < first:
        raise LedgerError("INVALID_ARG", f"backups {first} to {last}: the first must be at "
                          "least 1 and not after the last")
    if last > len(jobs):
        raise LedgerError("INVALID_ARG", f"there is no backup {last}: the domain has "
                          f"{len(jobs)} backup(s)")
    start = jobs[first - 1].started_position
    end = jobs[last - 1].ended_position or jobs[last - 1].started_position
    return [e for e in events if start <= e.position <= end]


def _name(check: Callable[[str], object], value: str) -> None:
    """A name checked as libvirt checks it in XML, refused as an argument."""
    try:
        check(value)
    except LedgerError as err:
        raise LedgerError("INVALID_ARG", err.detail) from None


def _text(what: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not value.strip() or len(value) > MAX_TEXT:
        raise LedgerError("INVALID_ARG", f"{what} must be 1 to {MAX_TEXT} characters")
    return value


def record_backup(
    w: Writer,
    domain: str,
    job: str,
    *,
    mode: Literal["push", "pull"] = "push",
    disks: Sequence[BackupDisk] = (),
    checkpoint: str | None = None,
    tool: str | None = None,
    target: str | None = None,
    outcome: Outcome | None = None,
    size: int | None = None,
    seconds: float | None = None,
    error: str | None = None,
    reason: str | None = None,
) -> BackupView:
    """Record a backup job a tool ran: its start, and its end when ``outcome`` is given (a
    job already started is only ended). OPERATION_INVALID for a job that already ended."""
    _text("the job id", job)
    tool, target, error = _text("the tool", tool), _text("the target", target), \
        _text("the error", error)
    for disk in disks:
        _name(check_disk_name, disk.name)
        if disk.incremental is not None:
            _name(check_checkpoint_name, disk.incremental)
        _text("a disk's target", disk.target)
    if len({d.name for d in disks}) != len(disks):
        raise LedgerError("INVALID_ARG", "a disk is listed twice")
    if checkpoint is not None:
        _name(check_checkpoint_name, checkpoint)
    if size is not None and not 0 <= size < 1 << 63:
        raise LedgerError("INVALID_ARG", "the size must be 0 to 2^63-1 bytes")
    if seconds is not None and not 0 <= seconds < 1e9:
        raise LedgerError("INVALID_ARG", "the duration must be 0 to 10^9 seconds")
    if outcome is None and (size is not None or seconds is not None or error is not None):
        raise LedgerError("INVALID_ARG", "bytes, seconds and error belong to a job's end: "
                          "give its outcome too")
    if w.has_hypervisor():
        info = w.hypervisor.domain_info(domain)
    else:
        st = w.model.state(domain)
        info = DomainInfo(name=st.name, uuid=st.uuid, running=False, policy=st.policy,
                          disks=st.disks)
    with w.model.store.lock(info.uuid):
        w.model.catch_up()
        if w.has_hypervisor():
            sync.reconcile(w, info, "record-backup")
        state, pre = w.enrollment(info)
        known = {b.job: b for b in backups(_events(w, info))}
        if checkpoint is not None and job not in known and checkpoint not in state.checkpoints:
            raise LedgerError("NO_DOMAIN_CHECKPOINT", f"the job's checkpoint {checkpoint} is not "
                              f"a live checkpoint of domain {info.name}")
        events: list[Event] = list(pre)
        if job not in known:
            events.append(BackupStarted(job=job, mode=mode, disks=tuple(disks),
                                        checkpoint=checkpoint, tool=tool, target=target))
        elif outcome is None:
            raise LedgerError("OPERATION_INVALID", f"backup job {job} is already recorded")
        elif known[job].outcome != "running":
            raise LedgerError("OPERATION_INVALID", f"backup job {job} already ended "
                              f"({known[job].outcome})")
        if outcome is not None:
            events.append(BackupEnded(job=job, outcome=outcome, bytes=size, seconds=seconds,
                                      error=error))
        w.append(info, events, reason)
    (view,) = [b for b in backups(_events(w, info)) if b.job == job]
    return view


def _events(w: Writer, info: DomainInfo) -> list[EventView]:
    return [event_view(r) for r in w.model.store.read_stream(info.uuid)]
