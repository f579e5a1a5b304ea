"""The writer: the one way events reach the store.

Under the domain's lock it catches the read model up, enrolls the domain when it is new or
changed, stamps provenance (who, where, why) and appends with the expected stream version;
on a conflict it refolds and re-derives the events (:meth:`Writer.record`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from ledger.app.plugins import open_hypervisor
from ledger.app.read_model import ReadModel
from ledger.domain.errors import LedgerError, VersionConflict
from ledger.domain.events import DomainEnrolled, Event
from ledger.domain.hypervisor import Hypervisor
from ledger.domain.model import DomainInfo
from ledger.domain.state import DomainState
from ledger.log.records import Provenance, new_record

RETRIES = 3
log = logging.getLogger(__name__)


class Writer:
    """Appends events for one read model, on behalf of one hypervisor (opened on first use
    when given as a URI)."""

    def __init__(
        self,
        model: ReadModel,
        hypervisor: Hypervisor | str | None = None,
        *,
        actor: str | None = None,
        reason: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        self.model = model
        self._hypervisor = hypervisor
        self.actor = actor
        self.reason = reason
        self.correlation_id = correlation_id  # stored with every event appended

    @property
    def hypervisor(self) -> Hypervisor:
        """The hypervisor, opened on first use (reads never need one)."""
        if self._hypervisor is None:
            raise LedgerError(
                "NO_CONNECT", "this command needs a hypervisor and none was given",
                hint="pass --hypervisor URI or set CKPT_LEDGER_HYPERVISOR "
                "(mock:///path/state.json, qemu:///system ...)",
            )
        if isinstance(self._hypervisor, str):
            self._hypervisor = open_hypervisor(self._hypervisor)
        assert not isinstance(self._hypervisor, str)
        return self._hypervisor

    def reconnect(self) -> None:
        """Close the hypervisor's connection; the next use opens it again (when it was
        given as a URI)."""
        hv = self._hypervisor
        if hv is not None and not isinstance(hv, str):
            uri = hv.uri
            with contextlib.suppress(Exception):
                hv.close()
            self._hypervisor = uri

    def has_hypervisor(self) -> bool:
        """Whether a hypervisor was given."""
        return self._hypervisor is not None

    def close(self) -> None:
        """Close the hypervisor if this writer opened it or was handed one."""
        if self._hypervisor is not None and not isinstance(self._hypervisor, str):
            self._hypervisor.close()

    def provenance(self, reason: str | None, actor: str | None = None) -> Provenance:
        """Who, where and why, for events appended now."""
        return Provenance.default(actor=actor or self.actor, reason=reason or self.reason,
                                  correlation_id=self.correlation_id)

    @contextmanager
    def correlated(self, correlation_id: str | None) -> Iterator[None]:
        """Record ``correlation_id`` (when given) instead of the writer's own, for one call."""
        saved = self.correlation_id
        if correlation_id is not None:
            self.correlation_id = correlation_id
        try:
            yield
        finally:
            self.correlation_id = saved

    @contextmanager
    def locked(self, domain: str) -> Iterator[DomainInfo]:
        """The hypervisor's view of ``domain``, under the store's lock for it, with the read
        model caught up."""
        info = self.hypervisor.domain_info(domain)
        with self.model.store.lock(info.uuid):
            self.model.catch_up()
            yield info

    def enrollment(self, info: DomainInfo) -> tuple[DomainState, list[Event]]:
        """The domain's state, plus a DomainEnrolled event if it is new or has changed."""
        state = self.model.states.get(info.uuid)
        if state is None:
            state = DomainState(stream_id=info.uuid)
        elif (state.name, state.disks, state.policy) == (info.name, info.disks, info.policy):
            return state, []
        enrolled = DomainEnrolled(
            name=info.name,
            uuid=info.uuid,
            disks=info.disks,
            policy=info.policy,
            hypervisor=self.hypervisor.uri if self.has_hypervisor() else None,
        )
        trial = state.clone()
        trial.apply(enrolled)
        return trial, [enrolled]

    def append(
        self,
        info: DomainInfo,
        events: Sequence[Event],
        reason: str | None,
        actor: str | None = None,
    ) -> None:
        """Append ``events`` to the domain's stream at the version the read model holds,
        then fold them. VERSION_CONFLICT when another writer got there first."""
        prov = self.provenance(reason, actor)
        state = self.model.states.get(info.uuid)
        expected = state.version if state else 0
        now = time.time()
        records = [new_record(info.uuid, info.name, ev, prov, now) for ev in events]
        try:
            stored = self.model.store.append(records, expected_version=expected)
        except VersionConflict as err:
            raise LedgerError(
                "VERSION_CONFLICT",
                f"another writer changed domain {info.name} meanwhile ({err.detail}); "
                "the hypervisor was changed but this event was not recorded",
                hint=f"`ckpt-ledger import {info.name}` reconciles",
            ) from err
        self.model.fold_appended(stored)
        log.debug("appended %s to domain %s (%s)", ", ".join(e.type for e in events),
                  info.name, reason or "no reason given")

    def record(
        self,
        info: DomainInfo,
        build: Callable[[DomainState], Sequence[Event]],
        reason: str | None,
        actor: str | None = None,
    ) -> None:
        """Append what ``build`` derives from the newest state; on a conflict, refold and retry.

        The hypervisor has already acted when this runs, so a conflict (another writer got
        there first, e.g. through a store without cross-process locks) means: fold the other
        writer's events, re-derive ours from the hypervisor's answer, and try again.
        """
        for attempt in range(RETRIES):
            state, pre = self.enrollment(info)
            events = [*pre, *build(state)]
            try:
                self.append(info, events, reason, actor)
                return
            except LedgerError as err:
                if err.code == "STORE_ERROR":
                    raise LedgerError(
                        "STORE_ERROR",
                        f"{err.detail}; the hypervisor already did it, so the ledger now lags "
                        "behind it",
                        hint=f"once the store works, `ckpt-ledger import {info.name}` catches up",
                    ) from err
                if err.code != "VERSION_CONFLICT" or attempt == RETRIES - 1:
                    raise
                self.model.catch_up()
