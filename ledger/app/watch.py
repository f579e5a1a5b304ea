"""The recorder: ``ckpt-ledger watch`` keeps the ledger equal to the host as tools work on it.

Each poll (every ``interval`` seconds, and at once when the hypervisor signals a job's end or a
domain's change) takes every domain's lock in turn and

* records the checkpoints other tools made, redefined or deleted (:func:`sync.reconcile`);
* records backup jobs: one the hypervisor keeps (the mock keeps all, each recorded once by its
  id), one running now (libvirt's backup XML: mode, full or incremental per disk; the
  checkpoint the job created is the one observed with it), and how one ended (the result the
  job's event carried, or libvirt's completed-job statistics when the recorder was down).

Every event is recorded as observed ("observed on URI by watch"). A restarted recorder reads
what it recorded before from the domain's events: a job it saw start is ended, not started
again. A hypervisor that goes away (libvirtd restarting) is reconnected with backoff.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ledger.app import sync
from ledger.app.audit import event_view
from ledger.app.backups import backups
from ledger.app.writer import Writer
from ledger.domain.errors import LedgerError
from ledger.domain.events import BackupEnded, BackupStarted, Event
from ledger.domain.model import DomainInfo, HostJob, JobResult

SAME_JOB = 3.0  # seconds: a running job's start, computed from its elapsed time, may drift
FATAL = ("STORE_ERROR", "VERSION_CONFLICT", "OPERATION_TIMEOUT")  # the ledger's own trouble
RECONNECT = ("HYPERVISOR_ERROR", "NO_CONNECT", "SYSTEM_ERROR", "RPC", "INTERNAL_ERROR")


@dataclass
class _Jobs:
    """What the ledger holds about one domain's observed jobs."""

    seen: set[str] = field(default_factory=set)  # every job id recorded
    open: str | None = None  # an observed job started and not ended
    open_at: float = 0.0  # its start
    last: tuple[int | None, float | None] | None = None  # (bytes, seconds) of the last end


class Watcher:
    """Polls the hypervisor and records what changed; :meth:`run` until ``stop`` is set."""

    def __init__(
        self,
        w: Writer,
        domains: Sequence[str] = (),
        interval: float = 10.0,
        say: Callable[[str], None] = lambda _line: None,
    ) -> None:
        self.w = w
        self.domains = list(domains)
        self.interval = interval
        self.say = say
        self.recorded = 0  # events appended so far
        self._jobs: dict[str, _Jobs] = {}  # stream id -> its observed jobs
        self._results: dict[str, JobResult] = {}  # domain -> how its last job ended (events)
        self._mutex = threading.Lock()
        self._woken = threading.Event()

    def wake(self, domain: str, result: JobResult | None) -> None:
        """Called by the hypervisor's event thread: poll now (``result``: a job ended)."""
        if result is not None:
            with self._mutex:
                self._results[domain] = result
        self._woken.set()

    def run(self, stop: threading.Event, once: bool = False) -> None:
        """Poll until ``stop`` is set (``once``: one poll, no events)."""
        unsubscribe: Callable[[], None] | None = None
        backoff = 1.0
        try:
            while not stop.is_set():
                try:
                    if unsubscribe is None and not once:
                        unsubscribe = self.w.hypervisor.subscribe(self.wake)
                    self.poll()
                    backoff = 1.0
                except LedgerError as err:
                    if once or err.code not in RECONNECT:
                        raise
                    self.say(f"hypervisor unreachable ({err.one_line()}); "
                             f"retrying in {backoff:.0f} s")
                    if unsubscribe is not None:
                        unsubscribe()
                        unsubscribe = None
                    self.w.reconnect()
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                if once:
                    return
                self._woken.wait(self.interval)
                self._woken.clear()
        finally:
            if unsubscribe is not None:
                unsubscribe()

    def poll(self) -> None:
        """One pass over the domains (every one the hypervisor has, unless given)."""
        names = self.domains or self.w.hypervisor.list_domains()
        for name in names:
            try:
                self.poll_domain(name)
            except LedgerError as err:
                if err.code in RECONNECT or err.code in FATAL:
                    raise
                # the host changed under the poll (a checkpoint made or deleted meanwhile,
                # the domain undefined): the next poll sees it settled
                if err.code != "NO_DOMAIN" or self.domains:
                    self.say(f"{name}: {err.one_line()} (looking again at the next poll)")

    def poll_domain(self, name: str) -> None:
        """Record what changed on one domain since the last poll."""
        w = self.w
        with w.locked(name) as info:
            before = w.model.store.last_position()
            report = sync.reconcile(w, info, "watch")
            with self._mutex:
                result = self._results.pop(name, None)
            events = self.job_events(info, result, [*report.added, *report.replaced])
            if events:
                w.append(info, events, f"observed on {w.hypervisor.uri} by watch")
                self._remember(info, events)
            after = w.model.store.last_position()
            if after > before:
                self.recorded += after - before
                self.say(f"{name}: recorded {after - before} event(s)")

    def _state(self, info: DomainInfo) -> _Jobs:
        jobs = self._jobs.get(info.uuid)
        if jobs is None:
            views = backups(event_view(r) for r in self.w.model.store.read_stream(info.uuid))
            jobs = self._jobs[info.uuid] = _Jobs(seen={b.job for b in views})
            for b in views:
                if b.outcome == "running" and b.source == "observed":
                    jobs.open, jobs.open_at = b.job, _epoch(b.started_at)
                elif b.source == "observed":
                    jobs.last = (b.bytes, b.seconds)
        return jobs

    def _remember(self, info: DomainInfo, events: Sequence[Event]) -> None:
        jobs = self._state(info)
        for ev in events:
            if isinstance(ev, BackupStarted):
                jobs.seen.add(ev.job)
            if isinstance(ev, BackupEnded):
                jobs.last = (ev.bytes, ev.seconds)
                if ev.job == jobs.open:
                    jobs.open = None

    def job_events(
        self, info: DomainInfo, result: JobResult | None = None, added: Sequence[str] = ()
    ) -> list[Event]:
        """Events for the backup jobs of ``info`` the ledger has not recorded: kept by the
        hypervisor, running now, or ended (``result``, from a job event) since the last poll;
        ``added``: the checkpoints this poll observed (a job's own is among them)."""
        hv = self.w.hypervisor
        jobs = self._state(info)
        out: list[Event] = []
        for j in hv.backup_jobs(info.uuid):  # jobs the hypervisor keeps, each once
            key = f"{j.job}@{int(j.started)}"
            if key not in jobs.seen:
                out += [_started(j, key, j.checkpoint), _ended(key, j)]
        active = hv.active_backup(info.uuid)
        if jobs.open is not None and (active is None
                                      or abs(active.started - jobs.open_at) > SAME_JOB):
            result = result or hv.last_backup_result(info.uuid)
            out.append(BackupEnded(job=jobs.open, outcome=result.outcome if result else "failed",
                                   bytes=result.bytes if result else None,
                                   seconds=_seconds(result), at=time.time(),
                                   error=(result.error if result else
                                          "ended while no result was available")))
            jobs.open = None
            if active is None:
                return out
        if active is not None and jobs.open is None:
            key = active.job
            if key not in jobs.seen:
                made = self._created(info, added, active.started)
                out.append(_started(active, key, made))
                jobs.open, jobs.open_at = key, active.started
        elif active is None:  # a job may have begun and ended since the last poll
            result = result or hv.last_backup_result(info.uuid)
            if result is None or (result.bytes, _seconds(result)) == jobs.last:
                return out
            now = time.time()
            key = f"ended@{now:.3f}"
            began = now - (result.elapsed_ms or 0) / 1000.0
            made = self._created(info, added, began)
            out.append(BackupStarted(job=key, checkpoint=made, source="observed", at=began))
            out.append(BackupEnded(job=key, outcome=result.outcome, bytes=result.bytes,
                                   seconds=_seconds(result), error=result.error, at=now))
        return out

    def _created(self, info: DomainInfo, added: Sequence[str], started: float) -> str | None:
        """The checkpoint observed in this poll that the job made with its start."""
        state = self.w.model.states.get(info.uuid)
        if state is None:
            return None
        made = [n for n in added if n in state.checkpoints
                and state.checkpoints[n].creation_time >= int(started) - SAME_JOB]
        return made[-1] if made else None


def _started(j: HostJob, key: str, checkpoint: str | None) -> BackupStarted:
    return BackupStarted(job=key, mode=j.mode, disks=j.disks, checkpoint=checkpoint,
                         source="observed", at=j.started)


def _ended(key: str, j: HostJob) -> BackupEnded:
    ended = j.ended if j.ended is not None else j.started
    return BackupEnded(job=key, outcome="failed" if j.outcome == "running" else j.outcome,
                       bytes=j.bytes, seconds=max(0.0, ended - j.started), error=j.error,
                       at=ended)


def _seconds(result: JobResult | None) -> float | None:
    if result is None or result.elapsed_ms is None:
        return None
    return result.elapsed_ms / 1000.0


def _epoch(iso_text: str) -> float:
    return datetime.fromisoformat(iso_text.replace("Z", "+00:00")).timestamp()
