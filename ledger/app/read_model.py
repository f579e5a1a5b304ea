"""The read model: every domain's projection folded from one store, kept caught up.

It starts from the store's snapshot when that can be trusted (ledger/log/snapshot_codec.py)
and folds only newer events; before every answer :meth:`ReadModel.refresh` looks at the
store's head (one indexed query) and folds what other processes appended meanwhile.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from datetime import datetime

from ledger.app.audit import fold_until, parse_point
from ledger.domain.errors import LedgerError
from ledger.domain.state import DomainState
from ledger.log import snapshot_codec
from ledger.log.chain import GENESIS
from ledger.log.fold import fold_rows
from ledger.log.records import StoredRecord
from ledger.log.store import EventStore, ScanRow

AsOf = int | str | datetime | None  # an event position or a time (see ReadModel.state_at)


def _upto(pages: Iterable[Sequence[ScanRow]], upto: int) -> Iterator[Sequence[ScanRow]]:
    """``pages`` cut after position ``upto``."""
    for page in pages:
        if page and page[-1][0] > upto:
            cut = [row for row in page if row[0] <= upto]
            if cut:
                yield cut
            return
        yield page


def _told(pages: Iterable[Sequence[ScanRow]], total: int,
          progress: Callable[[int, int], None]) -> Iterator[Sequence[ScanRow]]:
    """``pages``, telling ``progress(position, total)`` after each."""
    for page in pages:
        yield page
        if page:
            progress(page[-1][0], max(total, page[-1][0]))


# events folded in one catch-up past which its new objects go straight to the oldest generation
PROMOTE_AFTER = 10_000


def _promote_young_objects() -> None:
    """Move every object the collector tracks into its oldest generation, without a
    collection. After a long fold with collection off, the youngest generation holds every
    projection object just made (hundreds of thousands, all live); the young collection that
    would follow traverses each of them only to keep it (about 0.1 s after 300,000 events).
    Other young objects of the process are promoted too: a garbage cycle among them is
    collected by the next full collection instead of a young one."""
    gc.freeze()  # every tracked object to the permanent generation ...
    gc.unfreeze()  # ... and from there to the oldest one


class ReadModel:
    """The projections of one store: ``states`` by stream id, ``by_name`` (domain name ->
    stream id), and the ``position`` of the last event folded."""

    def __init__(self, store: EventStore, *, readonly: bool = False) -> None:
        self.store = store
        self.readonly = readonly  # never save a snapshot (the store may refuse writes too)
        # stream id -> state (a snapshot_codec.LazyStates when loaded from a snapshot)
        self.states: MutableMapping[str, DomainState] = {}
        self.by_name: dict[str, str] = {}
        self.position = 0
        self._hash_at: tuple[int, str] = (0, GENESIS)  # (position, its chain hash), read lazily
        self.folded = 0  # events folded here (a snapshot's are not counted)
        self.snapshot_position = 0  # position of the snapshot loaded or last saved
        self.snapshot_every = snapshot_codec.DEFAULT_EVERY  # 0: never save one
        self.snapshot_status: str = "none"  # what restore_snapshot found
        self._folding = threading.RLock()  # threads of one replay fold one at a time

    # ------------------------------------------------------------------ snapshots
    def restore_snapshot(self) -> str:
        """Start from the store's snapshot when it can be trusted; its status
        (:func:`ledger.log.snapshot_codec.load`)."""
        snap, status, _ = snapshot_codec.load(self.store)
        if snap is not None:
            self.states = snap.states
            self.by_name = snap.by_name
            self.position = snap.position
            self._hash_at = (snap.position, snap.hash)
            self.snapshot_position = snap.position
        self.snapshot_status = status
        return status

    def save_snapshot(self, force: bool = False) -> bool:
        """Save the projections as the store's snapshot when ``snapshot_every`` events were
        folded since the last one (always when ``force``); True if one was saved. A
        read-only model saves none."""
        behind = self.position - self.snapshot_position
        if self.readonly or self.position == 0 or behind <= 0 or (
                not force and (self.snapshot_every <= 0 or behind < self.snapshot_every)):
            return False
        snapshot_codec.save(self.store, self.states, self.by_name, self.position,
                            self.position_hash)
        self.snapshot_position = self.position
        return True

    @property
    def position_hash(self) -> str:
        """The chain hash of the event at ``position`` (GENESIS before the first), read from
        the store when first asked for at this position (only snapshots need it)."""
        at, hash_ = self._hash_at
        if at != self.position:
            found = snapshot_codec.hash_at(self.store, self.position)
            if found is None:
                raise LedgerError("STORE_ERROR", f"event {self.position} is no longer in the "
                                  f"store {self.store.url}")
            self._hash_at = (self.position, found)
            hash_ = found
        return hash_

    # ------------------------------------------------------------------ folding
    def catch_up(self, upto: int | None = None,
                 progress: Callable[[int, int], None] | None = None) -> None:
        """Fold every event appended since the last one folded (ledger/log/fold.py), or
        only those up to position ``upto``. Threads catch up one at a time."""
        with self._folding:
            pages: Iterable[Sequence[ScanRow]] = self.store.scan(after=self.position)
            if upto is not None:
                pages = _upto(pages, upto)
            if progress is not None:
                pages = _told(pages, upto or self.store.last_position(), progress)
            # the fold makes no reference cycles: collecting during a long catch-up only costs
            enabled = gc.isenabled()
            if enabled:
                gc.disable()
            before = self.folded
            try:
                fold_rows(self.states, self.by_name, pages, self._folded)
            finally:
                if enabled:
                    if self.folded - before >= PROMOTE_AFTER:
                        _promote_young_objects()
                    gc.enable()

    def fold_appended(self, records: Sequence[StoredRecord]) -> None:
        """Fold what an append just returned (oldest first) from its records, without
        reading the store again, when they follow the last event folded; otherwise catch up
        (another writer's events came between, or these were folded already)."""
        if not records:
            return
        with self._folding:
            if self.position == records[0].position - 1:
                fold_rows(self.states, self.by_name,
                          [[(r.position, r.stream_id, r.stream_version, r.schema_version,
                             r.payload) for r in records]], self._folded)
            elif self.position < records[-1].position:
                self.catch_up()

    def _folded(self, position: int, count: int) -> None:
        if count:
            self.folded += count
            self.position = position

    def refresh(self) -> None:
        """Catch up if the store has moved on: one look at its head (``last_position``),
        then a fold of only the new events. STORE_ERROR when the store now ends before what
        was already folded (events were removed from it)."""
        last = self.store.last_position()
        if last == self.position:
            return
        if last < self.position:
            raise LedgerError("STORE_ERROR", f"store {self.store.url} now ends at position "
                              f"{last}, before position {self.position} already read: events "
                              "were removed", hint="check it with `ckpt-ledger verify-log`")
        self.catch_up()

    # ------------------------------------------------------------------ answers
    def state(self, domain: str) -> DomainState:
        """The live projection of ``domain`` after :meth:`refresh`; NO_DOMAIN if the store
        has nothing for it."""
        self.refresh()
        stream = self.by_name.get(domain)
        if stream is None and domain.lower() in self.states:  # by UUID, as virsh
            stream = domain.lower()
        if stream is None:
            raise LedgerError(
                "NO_DOMAIN",
                f"no domain with matching name '{domain}' in the ledger (nothing has been "
                "recorded for it)",
                hint="create a checkpoint or run `ckpt-ledger import`",
            )
        return self.states[stream]

    def domains(self) -> list[str]:
        """Names of every domain in the store, sorted, after :meth:`refresh`."""
        self.refresh()
        return sorted(self.by_name)

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
