"""The :class:`Ledger` facade: one object that runs every command through the same flow.

    catch up (fold new events) -> decide (rules, pure) -> apply (hypervisor)
    -> append (store, with the expected stream version) -> fold

Reads (``list``, ``show``, ``bitmaps``, ``plan``, ``log`` ...) use the projections only and
never touch the hypervisor; each first folds whatever the store gained since the ledger last
looked (another process's appends), so a long-lived ledger never answers from stale state.
It is a thin facade: the projections live in a :class:`~ledger.app.read_model.ReadModel`,
every append goes through a :class:`~ledger.app.writer.Writer`; recovery, rebuild, copy and
follow use those two directly. A URL is turned into a store or hypervisor by
``ledger.app.plugins``.
"""

from __future__ import annotations

import builtins
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from ledger.app import backups as backup_jobs
from ledger.app import commands, read_model, recovery
from ledger.app.audit import LogFilter, event_view
from ledger.app.defaults import default_store_url
from ledger.app.history import history as checkpoint_history
from ledger.app.plugins import open_store
from ledger.app.read_model import ReadModel
from ledger.app.views import (
    BackupView,
    BitmapsView,
    BitmapView,
    CheckpointView,
    DeleteResult,
    EventView,
    HistoryEntry,
    ImportReport,
    PlanView,
    ReplayReport,
    VerifyReport,
    checkpoint_view,
)
from ledger.app.watch import Watcher
from ledger.app.writer import Writer
from ledger.domain.checkpoint_xml import (
    format_checkpoint_xml,
)
from ledger.domain.errors import LedgerError, no_checkpoint
from ledger.domain.hypervisor import Hypervisor
from ledger.domain.model import BackupDisk, CheckpointDisk
from ledger.domain.policies import plan as plan_disks
from ledger.domain.state import DomainState
from ledger.log.locks import check_timeout
from ledger.log.records import StoredRecord
from ledger.log.snapshot_codec import DEFAULT_EVERY
from ledger.log.store import EventStore

__all__ = ["AsOf", "Ledger", "default_store_url"]
AsOf = read_model.AsOf


class Ledger:
    """The library API: every CLI command is one method here."""

    def __init__(
        self,
        store: EventStore,
        hypervisor: Hypervisor | str | None = None,
        *,
        actor: str | None = None,
        reason: str | None = None,
        correlation_id: str | None = None,
        readonly: bool = False,
    ) -> None:
        self.model = ReadModel(store, readonly=readonly)
        self.writer = Writer(self.model, hypervisor, actor=actor, reason=reason,
                             correlation_id=correlation_id)

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        store: str | os.PathLike[str] | EventStore | None = None,
        hypervisor: str | Hypervisor | None = None,
        *,
        actor: str | None = None,
        reason: str | None = None,
        correlation_id: str | None = None,
        use_snapshot: bool = True,
        snapshot_every: int | None = None,
        lock_timeout: float | None = None,
        readonly: bool = False,
    ) -> Ledger:
        """Open a ledger on a store URL, a path (SQLite) or an EventStore instance and,
        optionally, a hypervisor URI.

        ``readonly``: open a store URL read-only (``ledger.app.plugins.open_store``): nothing is
        created or written, a missing store is refused, every write fails; with a store
        instance or URL alike, ``close`` then saves no snapshot.

        ``actor``, ``reason`` and ``correlation_id`` go into the provenance of every event
        appended (``correlation_id`` defaults to ``$CKPT_LEDGER_CORRELATION_ID``).

        The projections start from the store's snapshot when it can be trusted
        (``use_snapshot``; see ledger/log/snapshot_codec.py) and fold only newer events. ``close``
        saves a fresh snapshot once ``snapshot_every`` events (default
        ``$CKPT_LEDGER_SNAPSHOT_EVERY`` or 1000; 0 = never) were folded since the last.

        ``lock_timeout``: how many seconds a command waits for the domain's lock when another
        process holds it (default ``$CKPT_LEDGER_LOCK_TIMEOUT`` or 60; 0 = fail at once,
        ``inf`` = for ever), then fails with OPERATION_TIMEOUT naming the holder
        (ledger/log/locks.py).
        """
        if lock_timeout is not None:
            lock_timeout = check_timeout(lock_timeout)
        opened: EventStore
        if store is None or isinstance(store, str):
            url = store or default_store_url(create=not readonly)
            opened = open_store(url, readonly=True) if readonly else open_store(url)
        elif isinstance(store, os.PathLike):
            path = os.fspath(store)
            if not isinstance(path, str):
                raise LedgerError("STORE_URL", f"a store path must be text, not {path!r:.60}")
            opened = open_store("sqlite:///" + path, readonly=True) if readonly else \
                open_store("sqlite:///" + path)
        elif isinstance(store, EventStore):
            opened = store
        else:
            raise LedgerError("STORE_URL", "a store is a URL, a path or an EventStore, not "
                              f"{type(store).__name__}")
        if lock_timeout is not None and hasattr(opened, "lock_timeout"):
            opened.lock_timeout = lock_timeout
        if hypervisor is None:
            hypervisor = os.environ.get("CKPT_LEDGER_HYPERVISOR") or None
        if correlation_id is None:
            correlation_id = os.environ.get("CKPT_LEDGER_CORRELATION_ID") or None
        lg = cls(opened, hypervisor, actor=actor, reason=reason, correlation_id=correlation_id,
                 readonly=readonly)
        if snapshot_every is None:
            env = os.environ.get("CKPT_LEDGER_SNAPSHOT_EVERY", "")
            snapshot_every = int(env) if env.strip().isdigit() else DEFAULT_EVERY
        lg.model.snapshot_every = snapshot_every
        try:
            if use_snapshot:
                lg.model.restore_snapshot()
            lg.model.catch_up()
        except Exception:
            lg.close()
            raise
        return lg

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def save_snapshot(self, force: bool = False) -> bool:
        """Save the projections as the store's snapshot when due (always when ``force``);
        True if one was saved (see :meth:`ReadModel.save_snapshot`)."""
        return self.model.save_snapshot(force)

    def close(self) -> None:
        """Save a snapshot if due (see :meth:`open`), close the store and the hypervisor."""
        try:
            self.model.save_snapshot()
        except LedgerError as err:  # only a cache: the next open rebuilds
            logging.getLogger(__name__).warning("snapshot not saved: %s", err.one_line())
        self.writer.close()
        self.model.store.close()

    # ---------------------------------------------------- the parts, for reading
    @property
    def store(self) -> EventStore:
        """The event store."""
        return self.model.store

    @property
    def hypervisor(self) -> Hypervisor:
        """The hypervisor, opened on first use (reads never need one)."""
        return self.writer.hypervisor

    def has_hypervisor(self) -> bool:
        """Whether a hypervisor was given (reads never need one)."""
        return self.writer.has_hypervisor()

    @property
    def states(self) -> MutableMapping[str, DomainState]:
        """Every domain's live projection, by stream id."""
        return self.model.states

    @property
    def by_name(self) -> dict[str, str]:
        """Domain name -> stream id."""
        return self.model.by_name

    @property
    def position(self) -> int:
        """Position of the last event folded."""
        return self.model.position

    @property
    def position_hash(self) -> str:
        """Chain hash of the event at :attr:`position`."""
        return self.model.position_hash

    @property
    def folded(self) -> int:
        """Events folded since open (a snapshot's are not counted)."""
        return self.model.folded

    @property
    def snapshot_status(self) -> str:
        """What open found of the store's snapshot (ledger/log/snapshot_codec.py)."""
        return self.model.snapshot_status

    @property
    def snapshot_position(self) -> int:
        """Position of the snapshot loaded or last saved."""
        return self.model.snapshot_position

    @property
    def snapshot_every(self) -> int:
        """Save a snapshot on close once this many events were folded (0: never)."""
        return self.model.snapshot_every

    @snapshot_every.setter
    def snapshot_every(self, value: int) -> None:
        self.model.snapshot_every = value

    @property
    def readonly(self) -> bool:
        """Whether this ledger never writes (no snapshot either)."""
        return self.model.readonly

    def catch_up(self, upto: int | None = None) -> None:
        """Fold what the store gained (up to ``upto`` when given)."""
        self.model.catch_up(upto)

    def state(self, domain: str) -> DomainState:
        """The projection of ``domain`` (NO_DOMAIN if the store has nothing for it), after
        folding what the store gained since the last read.

        It is the live projection, not a copy: a later read or write of this ledger that
        folds new events of the domain changes it in place. ``clone()`` it, or use
        :meth:`state_at` with a position, for one that stays as it is.
        """
        return self.model.state(domain)

    def domains(self) -> list[str]:
        """Names of every domain in the store, sorted."""
        return self.model.domains()

    def event_count(self) -> int:
        """How many events the store holds."""
        return self.model.store.last_position()

    # ------------------------------------------------------------ the write path
    def create(
        self,
        domain: str,
        name: str | None = None,
        disks: Sequence[str | CheckpointDisk] | None = None,
        description: str | None = None,
        reason: str | None = None,
        correlation_id: str | None = None,
    ) -> CheckpointView:
        """Create a checkpoint (``virsh checkpoint-create-as``) and record what was made."""
        return commands.create(self.writer, domain, name, disks, description, reason,
                               correlation_id)

    def print_xml(
        self,
        name: str | None = None,
        disks: Sequence[str | CheckpointDisk] | None = None,
        description: str | None = None,
    ) -> str:
        """The XML ``create`` would send (``--print-xml``); creates nothing."""
        return commands.print_xml(name, disks, description)

    def redefine(
        self,
        domain: str,
        xml: str | bytes,
        validate: bool = False,
        reason: str | None = None,
        correlation_id: str | None = None,
    ) -> CheckpointView:
        """Redefine a checkpoint from its XML (``checkpoint-create --redefine``)."""
        return commands.redefine(self.writer, domain, xml, validate, reason, correlation_id)

    def delete(
        self,
        domain: str,
        name: str,
        *,
        children: bool = False,
        children_only: bool = False,
        metadata_only: bool = False,
        reason: str | None = None,
        correlation_id: str | None = None,
    ) -> DeleteResult:
        """Delete a checkpoint (``virsh checkpoint-delete``) and record what happened."""
        return commands.delete(self.writer, domain, name, children=children,
                               children_only=children_only, metadata_only=metadata_only,
                               reason=reason, correlation_id=correlation_id)

    def forget(self, domain: str, name: str, reason: str) -> None:
        """Record that checkpoint ``name`` is gone from the host (a hand correction, with who
        and why): refused while the hypervisor, when given, still has it."""
        commands.forget(self.writer, domain, name, reason)

    # ------------------------------------------------ backups (ledger/app/backups.py)
    def record_backup(
        self,
        domain: str,
        job: str,
        *,
        mode: Literal["push", "pull"] = "push",
        disks: Sequence[BackupDisk] = (),
        checkpoint: str | None = None,
        tool: str | None = None,
        target: str | None = None,
        outcome: Literal["completed", "failed", "aborted"] | None = None,
        size: int | None = None,
        seconds: float | None = None,
        error: str | None = None,
        reason: str | None = None,
    ) -> BackupView:
        """Record a backup job a tool ran (its start; its end too when ``outcome`` is
        given; a job already started is only ended)."""
        return backup_jobs.record_backup(
            self.writer, domain, job, mode=mode, disks=disks, checkpoint=checkpoint, tool=tool,
            target=target, outcome=outcome, size=size, seconds=seconds, error=error,
            reason=reason)

    def backups(self, domain: str) -> builtins.list[BackupView]:
        """The domain's backup jobs, numbered from 1 in the order they started."""
        if not self._known(domain):
            return []
        return backup_jobs.backups(self.log(domain))

    def between_backups(self, domain: str, first: int, last: int) -> builtins.list[EventView]:
        """Every event from backup ``first``'s start to backup ``last``'s end."""
        return backup_jobs.between(self.log(domain), first, last)

    def watch(
        self,
        domains: Sequence[str] = (),
        *,
        interval: float = 10.0,
        stop: threading.Event | None = None,
        once: bool = False,
        say: Callable[[str], None] = lambda _line: None,
    ) -> int:
        """Record what happens on the host until ``stop`` is set (``once``: one poll): other
        tools' checkpoints and backup jobs, as observed (ledger/app/watch.py). Returns the
        number of events recorded."""
        watcher = Watcher(self.writer, domains, interval, say)
        watcher.run(stop or threading.Event(), once=once)
        return watcher.recorded

    def _known(self, domain: str) -> bool:
        """Whether the ledger has the domain; NO_DOMAIN unless the hypervisor (when given)
        has it."""
        try:
            self.state(domain)
            return True
        except LedgerError as err:
            if err.code != "NO_DOMAIN" or not self.has_hypervisor():
                raise
            try:
                self.hypervisor.domain_info(domain)
            except LedgerError:
                raise err from None
            return False

    # ------------------------------------------------ recovery (ledger/app/recovery.py)
    def import_(self, domains: Sequence[str] = (), *,
                progress: Callable[[int, int], None] | None = None
                ) -> builtins.list[ImportReport]:
        """Append what the hypervisor has and the ledger does not (actor ``import``);
        ``progress(done, total)`` is told after each domain."""
        return recovery.import_domains(self.writer, domains, progress)

    def import_xml(self, domain: str, folder: str | Path, *,
                   progress: Callable[[int, int], None] | None = None) -> ImportReport:
        """Import a directory of checkpoint XML files, ordered by their parent links;
        ``progress(done, total)`` is told as the files are checked."""
        return recovery.import_xml_dir(self.writer, domain, Path(folder), progress)

    def replay(
        self,
        domains: Sequence[str] = (),
        *,
        dry_run: bool = False,
        validate: bool = False,
        overwrite: bool = False,
        as_of: Any = None,
        progress: Any = None,
        jobs: int = 1,
    ) -> builtins.list[ReplayReport]:
        """Redefine every live checkpoint into the hypervisor, parents first; ``jobs``
        domains at once (see :func:`ledger.app.recovery.replay`)."""
        return recovery.replay(self.writer, domains, dry_run=dry_run, validate=validate,
                               overwrite=overwrite, as_of=as_of, progress=progress, jobs=jobs)

    def verify(self, domains: Sequence[str] = (), record: bool = False) -> builtins.list[
            VerifyReport]:
        """Compare the ledger, the hypervisor's metadata and the bitmaps in the images."""
        return recovery.verify(self.writer, domains, record=record)

    # ------------------------------------------------------------------- reads
    def state_at(self, domain: str, as_of: AsOf) -> DomainState:
        """A fresh projection of ``domain`` as it was at ``as_of`` (the live one for None);
        see :meth:`ReadModel.state_at`."""
        return self.model.state_at(domain, as_of)

    def _state_or_host(self, domain: str, as_of: AsOf) -> DomainState:
        """:meth:`state_at`; for a domain the ledger never recorded that the hypervisor
        (when given) has, an empty state, as virsh lists a domain without checkpoints."""
        try:
            return self.state_at(domain, as_of)
        except LedgerError as err:
            if err.code != "NO_DOMAIN" or as_of is not None or not self.has_hypervisor():
                raise
            try:
                info = self.hypervisor.domain_info(domain)
            except LedgerError:
                raise err from None
            return DomainState(stream_id=info.uuid, name=info.name, uuid=info.uuid,
                               policy=info.policy, disks=info.disks)

    def show(self, domain: str, name: str, *, as_of: AsOf = None) -> CheckpointView:
        """One checkpoint (NO_DOMAIN_CHECKPOINT if it does not exist), now or ``as_of``."""
        state = self._state_or_host(domain, as_of)
        if name not in state.checkpoints:
            raise no_checkpoint(name)
        return checkpoint_view(state, name)

    def xml(self, domain: str, name: str, no_domain: bool = False, *, as_of: AsOf = None) -> str:
        """The checkpoint's XML exactly as libvirt formats it (now or ``as_of``)."""
        state = self.state_at(domain, as_of)
        cp = state.get(name)
        if cp is None:
            raise no_checkpoint(name)
        return format_checkpoint_xml(cp.definition(), no_domain=no_domain)

    def list(
        self,
        domain: str,
        *,
        roots: bool = False,
        leaves: bool = False,
        no_leaves: bool = False,
        topological: bool = False,
        from_: str | None = None,
        descendants: bool = False,
        as_of: AsOf = None,
    ) -> list[CheckpointView]:
        """``virDomainListAllCheckpoints`` / ``ListAllChildren`` with libvirt's filters.

        Without ``topological`` the order is by name; with it, parents come first.
        With ``as_of``, the checkpoints as they were then (see :meth:`state_at`).
        """
        state = self._state_or_host(domain, as_of)
        if from_ is not None:
            if from_ not in state.checkpoints:
                raise no_checkpoint(from_)
            names = (
                state.descendants(from_) if descendants else list(state.checkpoints[from_].children)
            )
            if roots and not descendants:
                raise LedgerError("INVALID_ARG", "the roots and the children of one checkpoint "
                                  "cannot be listed at once")
        else:
            names = state.topological()
            if roots:
                names = state.roots()  # orphans are roots of the ledger's tree
        if leaves:
            names = [n for n in names if not state.checkpoints[n].children]
        if no_leaves:
            names = [n for n in names if state.checkpoints[n].children]
        if not topological:
            names = sorted(names, key=lambda n: (n.lower(), n))
        return [checkpoint_view(state, n) for n in names]

    def bitmaps(self, domain: str, *, as_of: AsOf = None) -> BitmapsView:
        """Every bitmap the ledger believes each disk holds (now or ``as_of``), oldest first."""
        state = self._state_or_host(domain, as_of)
        disks = {
            disk: [
                BitmapView(bitmap=b.name, checkpoint=b.checkpoint, active=b.active)
                for b in state.bitmaps.get(disk, {}).values()
            ]
            for disk in state.disk_names()
        }
        for disk, bms in state.bitmaps.items():  # bitmaps on disks no longer listed
            if disk not in disks and bms:
                disks[disk] = [BitmapView(bitmap=b.name, checkpoint=b.checkpoint,
                                          active=b.active) for b in bms.values()]
        return BitmapsView(domain=state.name, policy=state.policy, disks=disks)

    def plan(self, domain: str, since: str, *, as_of: AsOf = None) -> PlanView:
        """Which bitmaps to merge, per disk, to back up everything written since ``since``
        (as the plan was at ``as_of`` when given)."""
        state = self.state_at(domain, as_of)
        if since not in state.checkpoints:
            raise no_checkpoint(since)
        return PlanView(
            domain=state.name, since=since, policy=state.policy, disks=plan_disks(state, since)
        )

    def log(
        self, domain: str | None = None, filter: LogFilter | None = None
    ) -> builtins.list[EventView]:
        """Every event, oldest first: only ``domain``'s when given, only those ``filter`` keeps."""
        return builtins.list(self.iter_log(domain, filter))

    def iter_log(
        self, domain: str | None = None, filter: LogFilter | None = None
    ) -> Iterator[EventView]:
        """:meth:`log` one event at a time, read from the store as it goes (constant
        memory, for logs of any length)."""
        flt = filter or LogFilter()
        domain = domain if domain is not None else flt.domain
        if domain is not None:
            records: Iterator[StoredRecord] = self.store.read_stream(self.state(domain).stream_id)
            flt = replace(flt, domain=None)  # the stream is the domain, whatever it was called
        else:
            after = flt.since - 1 if isinstance(flt.since, int) and flt.since > 0 else 0
            records = self.store.read_all(after=after)
        return flt.select(event_view(rec) for rec in records)

    def history(self, domain: str, name: str) -> builtins.list[HistoryEntry]:
        """Every fact in the life of checkpoint ``name``, even after it was deleted.

        NO_DOMAIN_CHECKPOINT if the domain never had a checkpoint of that name.
        """
        return checkpoint_history(self.log(domain), name)

    def follow(
        self, after: int = 0, timeout: float | None = None, *, poll: float = 0.2
    ) -> Iterator[EventView]:
        """Events with position > ``after`` as they commit, oldest first, without end.

        A store with a ``follow(after, timeout)`` of its own (PostgreSQL: LISTEN/NOTIFY) is
        tailed through it; any other is polled with ``read_all`` every ``poll`` seconds.
        The iterator ends once ``timeout`` seconds pass with no new event (``None``: never;
        stop it by closing it or with Ctrl-C). The ledger's own projections are not touched.
        A store with a ``gone()`` (the file stores) is asked at each poll whether its file
        is still the one at its path: once deleted or replaced, STORE_ERROR says so.
        """
        native = getattr(self.store, "follow", None)
        if callable(native):
            records: Iterator[StoredRecord] = native(after=after, timeout=timeout)
            for rec in records:
                yield event_view(rec)
            return
        gone = getattr(self.store, "gone", None)
        last, idle_since = after, time.monotonic()
        while True:
            why = gone() if callable(gone) else None
            if why is not None:
                raise LedgerError("STORE_ERROR", f"stopped following store {self.store.url}: "
                                  f"{why}")
            for rec in self.store.read_all(after=last):
                last, idle_since = rec.position, time.monotonic()
                yield event_view(rec)
            wait = poll
            if timeout is not None:
                left = timeout - (time.monotonic() - idle_since)
                if left <= 0:
                    return
                wait = min(wait, left)
            time.sleep(wait)
