"""The :class:`Ledger` facade: one object that runs every command through the same flow.

    catch up (fold new events) -> decide (rules, pure) -> apply (hypervisor)
    -> append (store, with the expected stream version) -> fold

Reads (``list``, ``show``, ``bitmaps``, ``plan``, ``log`` ...) use the projections only and
never touch the hypervisor; each first folds whatever the store gained since the ledger last
looked (another process's appends), so a long-lived ledger never answers from stale state.
The store and hypervisor are reached through ``ledger.ports``; a URL is turned into one by
``ledger.plugins``.
"""

from __future__ import annotations

import builtins
import gc
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from . import recovery, rules, snapshots
from .audit import LogFilter, event_view, fold_until, parse_point
from .chain import GENESIS
from .domain_xml import parse_domain_xml
from .envelope import Provenance, StoredRecord, new_record
from .errors import LedgerError, VersionConflict, no_checkpoint
from .events import DomainEnrolled, Event
from .fold import fold_rows
from .history import history as checkpoint_history
from .locks import check_timeout
from .model import CheckpointDef, CheckpointDisk, DomainInfo
from .plugins import open_hypervisor, open_store
from .policies import plan as plan_disks
from .ports import EventStore, Hypervisor, PartialDelete, ScanRow
from .projections import DomainState
from .views import (
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
)
from .xml import create_request_xml, parse_checkpoint_xml, parse_diskspec

RETRIES = 3
AsOf = int | str | datetime | None  # an event position or a time (see Ledger.state_at)


def _upto(pages: Iterable[Sequence[ScanRow]], upto: int) -> Iterator[Sequence[ScanRow]]:
    """``pages`` cut after position ``upto``."""
    for page in pages:
        if page and page[-1][0] > upto:
            cut = [row for row in page if row[0] <= upto]
            if cut:
                yield cut
            return
        yield page


def default_store_url(create: bool = True) -> str:
    """``$CKPT_LEDGER_STORE``, else ``$XDG_DATA_HOME/ckpt-ledger/ledger.db`` (a relative
    ``$XDG_DATA_HOME`` is ignored, as the XDG spec says; then ``~/.local/share``).

    Its folder is made when ``create``; STORE_ERROR naming the folder and the variable it
    came from when it cannot be made or used.
    """
    env = os.environ.get("CKPT_LEDGER_STORE")
    if env:
        return env
    xdg = os.environ.get("XDG_DATA_HOME", "")
    if os.path.isabs(xdg):
        base, origin = Path(xdg), f"$XDG_DATA_HOME={xdg}"
    else:
        try:
            home = Path.home()
        except RuntimeError:  # no $HOME and no passwd entry
            home = Path("")
        if not home.is_absolute():
            raise LedgerError("STORE_ERROR", "no folder for the default store: neither "
                              "$XDG_DATA_HOME nor $HOME is an absolute path; pass --store URL "
                              "or set CKPT_LEDGER_STORE")
        base, origin = home / ".local" / "share", f"$HOME={home}"
    folder = base / "ckpt-ledger"
    if not create:
        return "sqlite:///" + str(folder / "ledger.db")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(13, os.strerror(13))
    except OSError as e:
        raise LedgerError("STORE_ERROR", f"cannot use {folder} for the default store (from "
                          f"{origin}): {e.strerror or e}; pass --store URL or set "
                          "CKPT_LEDGER_STORE") from None
    return "sqlite:///" + str(folder / "ledger.db")


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
        self.store = store
        self.readonly = readonly  # never save a snapshot (the store may refuse writes too)
        self._hypervisor = hypervisor
        self.actor = actor
        self.reason = reason
        self.correlation_id = correlation_id  # stored with every event this ledger appends
        # stream id -> state (a snapshots.LazyStates when loaded from a snapshot)
        self.states: MutableMapping[str, DomainState] = {}
        self.by_name: dict[str, str] = {}  # domain name -> stream id
        self.position = 0
        self._hash_at: tuple[int, str] = (0, GENESIS)  # (position, its chain hash), read lazily
        self.folded = 0  # events this instance has folded (a snapshot's are not counted)
        self.snapshot_position = 0  # position of the snapshot loaded or last saved
        self.snapshot_every = snapshots.DEFAULT_EVERY  # 0: never save one on close
        self.snapshot_status: str = "none"  # what open() found (ledger/snapshots.py)

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

        ``readonly``: open a store URL read-only (``ledger.plugins.open_store``): nothing is
        created or written, a missing store is refused, every write fails; with a store
        instance or URL alike, ``close`` then saves no snapshot.

        ``actor``, ``reason`` and ``correlation_id`` go into the provenance of every event
        appended (``correlation_id`` defaults to ``$CKPT_LEDGER_CORRELATION_ID``).

        The projections start from the store's snapshot when it can be trusted
        (``use_snapshot``; see ledger/snapshots.py) and fold only newer events. ``close``
        saves a fresh snapshot once ``snapshot_every`` events (default
        ``$CKPT_LEDGER_SNAPSHOT_EVERY`` or 1000; 0 = never) were folded since the last.

        ``lock_timeout``: how many seconds a command waits for the domain's lock when another
        process holds it (default ``$CKPT_LEDGER_LOCK_TIMEOUT`` or 60; 0 = fail at once,
        ``inf`` = for ever), then fails with OPERATION_TIMEOUT naming the holder
        (ledger/locks.py).
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
            snapshot_every = int(env) if env.strip().isdigit() else snapshots.DEFAULT_EVERY
        lg.snapshot_every = snapshot_every
        try:
            if use_snapshot:
                lg.snapshot_status = snapshots.restore(lg)
            lg.catch_up()
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
        """Save the projections as the store's snapshot when ``snapshot_every`` events were
        folded since the last one (always when ``force``); True if one was saved. A
        read-only ledger saves none."""
        behind = self.position - self.snapshot_position
        if self.readonly or self.position == 0 or behind <= 0 or (
                not force and (self.snapshot_every <= 0 or behind < self.snapshot_every)):
            return False
        snapshots.save(self.store, self.states, self.by_name, self.position,
                       self.position_hash)
        self.snapshot_position = self.position
        return True

    def close(self) -> None:
        """Save a snapshot if due (see :meth:`open`), close the store and the hypervisor."""
        try:
            self.save_snapshot()
        except LedgerError as err:  # only a cache: the next open rebuilds
            logging.getLogger(__name__).warning("snapshot not saved: %s", err.one_line())
        if self._hypervisor is not None and not isinstance(self._hypervisor, str):
            self._hypervisor.close()
        self.store.close()

    @property
    def hypervisor(self) -> Hypervisor:
        """The hypervisor, opened on first use (reads never need one)."""
        if self._hypervisor is None:
            raise LedgerError(
                "STORE_URL",
                "this command needs a hypervisor: pass --hypervisor URI or set "
                "CKPT_LEDGER_HYPERVISOR (mock:///path/state.json, qemu:///system ...)",
            )
        if isinstance(self._hypervisor, str):
            self._hypervisor = open_hypervisor(self._hypervisor)
        assert not isinstance(self._hypervisor, str)
        return self._hypervisor

    # -------------------------------------------------------------- projections
    def catch_up(self, upto: int | None = None) -> None:
        """Fold every event appended since the last one this ledger saw (ledger/fold.py),
        or only those up to position ``upto``."""
        pages: Iterable[Sequence[ScanRow]] = self.store.scan(after=self.position)
        if upto is not None:
            pages = _upto(pages, upto)
        # the fold makes no reference cycles: collecting during a long catch-up only costs
        enabled = gc.isenabled()
        if enabled:
            gc.disable()
        try:
            fold_rows(self.states, self.by_name, pages, self._folded)
        finally:
            if enabled:
                gc.enable()

    def _refresh(self) -> None:
        """Catch up if the store has moved on: one look at its head (``last_position``, an
        indexed query), then a fold of only the new events. STORE_ERROR when the store now
        ends before what this ledger has already folded (events were removed from it)."""
        last = self.store.last_position()
        if last == self.position:
            return
        if last < self.position:
            raise LedgerError("STORE_ERROR", f"store {self.store.url} now ends at position "
                              f"{last}, before position {self.position} this ledger has "
                              "already read: events were removed (check it with "
                              "`ckpt-ledger verify-log`)")
        self.catch_up()

    def _folded(self, position: int, count: int) -> None:
        """After a bulk fold: move to ``position``."""
        if count:
            self.folded += count
            self.position = position

    @property
    def position_hash(self) -> str:
        """The chain hash of the event at ``position`` (GENESIS before the first), read from
        the store when first asked for at this position (only snapshots need it)."""
        at, hash_ = self._hash_at
        if at != self.position:
            found = snapshots.hash_at(self.store, self.position)
            if found is None:
                raise LedgerError("STORE_ERROR", f"event {self.position} is no longer in the "
                                  f"store {self.store.url}")
            self._hash_at = (self.position, found)
            hash_ = found
        return hash_

    @position_hash.setter
    def position_hash(self, value: str) -> None:
        self._hash_at = (self.position, value)

    def state(self, domain: str) -> DomainState:
        """The projection of ``domain`` (NO_DOMAIN if the store has nothing for it), after
        folding what the store gained since the last read.

        It is the live projection, not a copy: a later read or write of this ledger that
        folds new events of the domain changes it in place. ``clone()`` it, or use
        :meth:`state_at` with a position, for one that stays as it is.
        """
        self._refresh()
        stream = self.by_name.get(domain)
        if stream is None:
            raise LedgerError(
                "NO_DOMAIN",
                f"no domain with matching name '{domain}' in the ledger (nothing has been "
                "recorded for it: create a checkpoint or run `ckpt-ledger import`)",
            )
        return self.states[stream]

    def domains(self) -> list[str]:
        """Names of every domain in the store, sorted."""
        self._refresh()
        return sorted(self.by_name)

    def event_count(self) -> int:
        """How many events the store holds."""
        return self.store.last_position()

    # ------------------------------------------------------------ the write path
    def _provenance(self, reason: str | None, actor: str | None = None) -> Provenance:
        return Provenance.default(actor=actor or self.actor, reason=reason or self.reason,
                                  correlation_id=self.correlation_id)

    def has_hypervisor(self) -> bool:
        """Whether a hypervisor was given (reads never need one)."""
        return self._hypervisor is not None

    def _enrollment(self, info: DomainInfo) -> tuple[DomainState, list[Event]]:
        """The domain's state, plus a DomainEnrolled event if it is new or has changed."""
        state = self.states.get(info.uuid)
        enrolled = DomainEnrolled(
            name=info.name,
            uuid=info.uuid,
            disks=info.disks,
            policy=info.policy,
            hypervisor=self.hypervisor.uri if self.has_hypervisor() else None,
        )
        if state is None:
            state = DomainState(stream_id=info.uuid)
        elif (state.name, state.disks, state.policy) == (info.name, info.disks, info.policy):
            return state, []
        trial = state.clone()
        trial.apply(enrolled)
        return trial, [enrolled]

    @contextmanager
    def _correlated(self, correlation_id: str | None) -> Iterator[None]:
        """Record ``correlation_id`` (when given) instead of the ledger's own, for one call."""
        saved = self.correlation_id
        if correlation_id is not None:
            self.correlation_id = correlation_id
        try:
            yield
        finally:
            self.correlation_id = saved

    @contextmanager
    def _domain_lock(self, domain: str) -> Iterator[DomainInfo]:
        info = self.hypervisor.domain_info(domain)
        with self.store.lock(info.uuid):
            self.catch_up()
            yield info

    def _append(
        self,
        info: DomainInfo,
        events: Sequence[Event],
        reason: str | None,
        actor: str | None = None,
    ) -> None:
        prov = self._provenance(reason, actor)
        state = self.states.get(info.uuid)
        expected = state.version if state else 0
        now = time.time()
        records = [new_record(info.uuid, info.name, ev, prov, now) for ev in events]
        try:
            self.store.append(records, expected_version=expected)
        except VersionConflict as err:
            raise LedgerError(
                "VERSION_CONFLICT",
                f"another writer changed domain {info.name} meanwhile ({err.detail}); "
                "the hypervisor was changed but this event was not recorded: run "
                "`ckpt-ledger import` to reconcile",
            ) from err
        self.catch_up()

    def _record(
        self,
        info: DomainInfo,
        build: Callable[[DomainState], Sequence[Event]],
        reason: str | None,
        actor: str | None = None,
    ) -> None:
        """Append what ``build`` derives from the newest state; on a conflict, re-read and retry.

        The hypervisor has already acted when this runs, so a conflict (another writer got
        there first, e.g. through a store without cross-process locks) means: fold the other
        writer's events, re-derive ours from the hypervisor's answer, and try again.
        """
        for attempt in range(RETRIES):
            state, pre = self._enrollment(info)
            events = [*pre, *build(state)]
            try:
                self._append(info, events, reason, actor)
                return
            except LedgerError as err:
                if err.code == "STORE_ERROR":
                    raise LedgerError(
                        "STORE_ERROR",
                        f"{err.detail}; the hypervisor already did it, so the ledger now lags "
                        f"behind it: once the store works, run `ckpt-ledger import {info.name}`",
                    ) from err
                if err.code != "VERSION_CONFLICT" or attempt == RETRIES - 1:
                    raise
                self.catch_up()

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
        request = self._request(name, disks, description)
        with self._correlated(correlation_id), self._domain_lock(domain) as info:
            state, pre = self._enrollment(info)
            rules.decide_create(state, info, request, int(time.time()))
            xml = self.hypervisor.create_checkpoint(domain, self._request_xml(request))
            actual = parse_checkpoint_xml(xml, redefine=True)
            self._record(info, lambda st: rules.created_events(st, actual, xml), reason)
        assert actual.name is not None
        return self.show(domain, actual.name)

    def _request(
        self,
        name: str | None,
        disks: Sequence[str | CheckpointDisk] | None,
        description: str | None,
    ) -> CheckpointDef:
        parsed = None
        if disks:
            parsed = tuple(d if isinstance(d, CheckpointDisk) else parse_diskspec(d) for d in disks)
        request = CheckpointDef(name=name, description=description, disks=parsed)
        parse_checkpoint_xml(self._request_xml(request))  # the schema checks, as libvirt's
        return request

    @staticmethod
    def _request_xml(request: CheckpointDef) -> str:
        return create_request_xml(request.name, request.description, request.disks)

    def print_xml(
        self,
        name: str | None = None,
        disks: Sequence[str | CheckpointDisk] | None = None,
        description: str | None = None,
    ) -> str:
        """The XML ``create`` would send (``--print-xml``); creates nothing."""
        return self._request_xml(self._request(name, disks, description))

    def redefine(
        self,
        domain: str,
        xml: str | bytes,
        validate: bool = False,
        reason: str | None = None,
        correlation_id: str | None = None,
    ) -> CheckpointView:
        """Redefine a checkpoint from its XML (``checkpoint-create --redefine``)."""
        request = parse_checkpoint_xml(xml, redefine=True)
        embedded = None
        if request.domain_xml is not None:
            dom = parse_domain_xml(request.domain_xml)
            embedded = (dom.uuid, dom.disks)
        with self._correlated(correlation_id), self._domain_lock(domain) as info:
            state, pre = self._enrollment(info)
            rules.decide_redefine(state, request, embedded)
            text = xml.decode() if isinstance(xml, bytes) else xml
            out = self.hypervisor.redefine_checkpoint(domain, text, validate=validate)
            actual = parse_checkpoint_xml(out, redefine=True)
            self._record(
                info, lambda st: rules.redefined_events(st, actual, out, validate), reason
            )
        assert actual.name is not None
        return self.show(domain, actual.name)

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
        rules.check_delete_flags(children, children_only)
        with self._correlated(correlation_id), self._domain_lock(domain) as info:
            state, pre = self._enrollment(info)
            flags: dict[str, Any] = dict(
                children=children, children_only=children_only, metadata_only=metadata_only
            )
            events = rules.decide_delete(state, name, **flags)
            try:
                self.hypervisor.delete_checkpoint(domain, name, **flags)
            except PartialDelete as partial:
                self._record_partial(info, state, pre, name, partial, reason)
                raise partial.error from None
            self._record(info, lambda st: rules.decide_delete(st, name, **flags), reason)
        deleted = events[-1]
        return DeleteResult(
            name=name,
            deleted=list(getattr(deleted, "deleted", [])),
            reparented=dict(getattr(deleted, "reparented", {})),
            children_only=children_only,
        )

    def _record_partial(
        self,
        info: DomainInfo,
        state: DomainState,
        pre: list[Event],
        name: str,
        partial: PartialDelete,
        reason: str | None,
    ) -> None:
        """Record the reparenting a failed qemu delete did before it failed (§5.2 item 3)."""
        events: list[Event] = list(pre)
        for child, new_parent in partial.reparented.items():
            cp = state.get(child)
            if cp is None:
                continue
            moved = cp.definition().model_copy(update={"parent": new_parent})
            xml = self.hypervisor.checkpoint_xml(info.name, child)
            events.extend(rules.redefined_events(state, moved, xml))
        if len(events) > len(pre):
            self._append(info, events, reason or f"partial delete of {name}: {partial.error}")

    # ------------------------------------------------ recovery (ledger/recovery.py)
    def import_(self, domains: Sequence[str] = ()) -> builtins.list[ImportReport]:
        """Append what the hypervisor has and the ledger does not (actor ``import``)."""
        return recovery.import_domains(self, domains)

    def import_xml(self, domain: str, folder: str | Path) -> ImportReport:
        """Import a directory of checkpoint XML files, ordered by their parent links."""
        return recovery.import_xml_dir(self, domain, Path(folder))

    def replay(
        self,
        domains: Sequence[str] = (),
        *,
        dry_run: bool = False,
        validate: bool = False,
        overwrite: bool = False,
        as_of: Any = None,
        progress: Any = None,
    ) -> builtins.list[ReplayReport]:
        """Redefine every live checkpoint into the hypervisor, parents first."""
        return recovery.replay(self, domains, dry_run=dry_run, validate=validate,
                               overwrite=overwrite, as_of=as_of, progress=progress)

    def verify(self, domains: Sequence[str] = (), record: bool = False) -> builtins.list[
            VerifyReport]:
        """Compare the ledger, the hypervisor's metadata and the bitmaps in the images."""
        return recovery.verify(self, domains, record=record)

    # ------------------------------------------------------------------- reads
    def _view(self, state: DomainState, name: str) -> CheckpointView:
        cp = state.checkpoints[name]
        return CheckpointView(
            name=cp.name,
            parent=cp.parent,
            creation_time=cp.creation_time,
            description=cp.description,
            current=state.current == cp.name,
            disks=list(cp.disks),
            children=list(cp.children),
        )

    def state_at(self, domain: str, as_of: AsOf) -> DomainState:
        """A fresh projection of ``domain`` as it was at ``as_of`` (the live one for None).

        ``as_of`` is an event position (events up to it are folded) or a time (events recorded
        up to it, to the second; a bare date means its end); text is parsed as ``--as-of`` is.
        The live projection is not touched. NO_DOMAIN if the domain did not exist yet.
        """
        if as_of is None:
            return self.state(domain)
        point = parse_point(as_of, upper=True)
        state = fold_until(self.store.read_stream(self.state(domain).stream_id), point)
        if state is None:
            raise LedgerError("NO_DOMAIN", f"no domain with matching name '{domain}' "
                              f"as of {as_of}")
        return state

    def show(self, domain: str, name: str, *, as_of: AsOf = None) -> CheckpointView:
        """One checkpoint (NO_DOMAIN_CHECKPOINT if it does not exist), now or ``as_of``."""
        state = self.state_at(domain, as_of)
        if name not in state.checkpoints:
            raise no_checkpoint(name)
        return self._view(state, name)

    def xml(self, domain: str, name: str, no_domain: bool = False, *, as_of: AsOf = None) -> str:
        """The checkpoint's XML exactly as libvirt formats it (now or ``as_of``)."""
        from .xml import format_checkpoint_xml

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
        state = self.state_at(domain, as_of)
        if from_ is not None:
            if from_ not in state.checkpoints:
                raise no_checkpoint(from_)
            names = (
                state.descendants(from_) if descendants else list(state.checkpoints[from_].children)
            )
            if roots and not descendants:
                raise LedgerError("INVALID_ARG", "--roots and --from are mutually exclusive")
        else:
            names = state.topological()
            if roots:
                names = [n for n in names if state.checkpoints[n].parent is None]
        if leaves:
            names = [n for n in names if not state.checkpoints[n].children]
        if no_leaves:
            names = [n for n in names if state.checkpoints[n].children]
        if not topological:
            names = sorted(names, key=lambda n: (n.lower(), n))
        return [self._view(state, n) for n in names]

    def bitmaps(self, domain: str, *, as_of: AsOf = None) -> BitmapsView:
        """Every bitmap the ledger believes each disk holds (now or ``as_of``), oldest first."""
        state = self.state_at(domain, as_of)
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
        flt = filter or LogFilter()
        domain = domain if domain is not None else flt.domain
        if domain is not None:
            records: Iterator[StoredRecord] = self.store.read_stream(self.state(domain).stream_id)
            flt = replace(flt, domain=None)  # the stream is the domain, whatever it was called
        else:
            after = flt.since - 1 if isinstance(flt.since, int) and flt.since > 0 else 0
            records = self.store.read_all(after=after)
        return flt.apply(event_view(rec) for rec in records)

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
