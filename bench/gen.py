"""Realistic histories, made with the real rules (``ledger.domain.rules``, ``.policies``).

Each domain has three qcow2 disks and the *chained* bitmap policy, and runs the command
schedule :data:`SCHEDULE`: creates (each disabling the previous checkpoint's bitmaps on all
three disks), deletes of the oldest checkpoint and deletes of a middle one (merging its
bitmaps into its parent's). That is exactly 100 events per domain: 1 ``DomainEnrolled``,
18 ``CheckpointCreated``, 51 ``BitmapDisabled``, 6 ``CheckpointDeleted``, 18
``BitmapRemoved``, 6 ``BitmapMerged``. Domains run their commands in rounds, so the events of
different domains interleave in the global log as they would on a real host.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from adapters.mock import domain_xml
from ledger.domain import rules
from ledger.domain.checkpoint_xml import format_checkpoint_xml
from ledger.domain.events import DomainEnrolled, Event
from ledger.domain.model import CheckpointDef, DomainDisk, DomainInfo, Policy
from ledger.domain.state import DomainState
from ledger.log.records import NewRecord, Provenance, new_record

# F: enroll + first create; C: create; R: delete the oldest; M: delete the second oldest.
SCHEDULE = "FCCCCRCCCCMCCCCRCCCCRCMR"
EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z: creation times are deterministic
IMAGES = "/var/lib/libvirt/images"
NAMESPACE = uuid.UUID("6f1c2b1e-2f0a-4c55-9a7e-6b7c1d0e9f00")
PROVENANCE = Provenance(actor="bench@bench-host", host="bench-host", reason=None)


def domain_info(i: int, policy: Policy = "chained", prefix: str = "dom") -> DomainInfo:
    """Domain number ``i``: three 1 GiB qcow2 disks, running, a deterministic UUID."""
    name = f"{prefix}-{i:05d}"
    uid = str(uuid.uuid5(NAMESPACE, name))
    disks = tuple(
        DomainDisk(name=d, format="qcow2", source=f"{IMAGES}/{name}-{d}.qcow2")
        for d in ("vda", "vdb", "vdc")
    )
    return DomainInfo(name=name, uuid=uid, running=True, policy=policy, disks=disks,
                      domain_xml=domain_xml(name, uid, disks, IMAGES))


@dataclass
class Sim:
    """One domain driven through the rules, as ``Ledger.create``/``delete`` would drive it."""

    info: DomainInfo
    state: DomainState = field(init=False)
    made: int = 0  # checkpoints created so far (names cp00001, cp00002 ...)
    clock: int = 0

    def __post_init__(self) -> None:
        self.state = DomainState(stream_id=self.info.uuid)

    def _fold(self, events: list[Event]) -> list[Event]:
        for ev in events:
            self.state.apply(ev, self.state.version + 1)
        return events

    def enroll(self) -> list[Event]:
        """The ``DomainEnrolled`` event a first command appends."""
        info = self.info
        return self._fold([DomainEnrolled(name=info.name, uuid=info.uuid, disks=info.disks,
                                          policy=info.policy, hypervisor="mock:///bench")])

    def create(self) -> list[Event]:
        """``checkpoint-create-as`` with the default disks (all three, bitmaps)."""
        self.made += 1
        self.clock += 1
        request = CheckpointDef(name=f"cp{self.made:05d}")
        now = EPOCH + self.clock * 3600
        definition = rules.decide_create(self.state, self.info, request, now)
        xml = format_checkpoint_xml(definition)
        return self._fold(rules.created_events(self.state, definition, xml))

    def delete(self, which: int) -> list[Event]:
        """Delete the ``which``-th oldest live checkpoint (0 = the oldest)."""
        name = list(self.state.checkpoints)[which]
        return self._fold(rules.decide_delete(self.state, name))

    def step(self, command: str) -> list[Event]:
        """One command of :data:`SCHEDULE`."""
        if command == "F":
            return [*self.enroll(), *self.create()]
        if command == "C":
            return self.create()
        if command == "R":
            return self.delete(0)
        if command == "M":
            return self.delete(1)
        raise ValueError(command)


def commands(domains: int, prefix: str = "dom") -> Iterator[tuple[DomainInfo, list[Event]]]:
    """Every command's events, round by round across ``domains`` domains."""
    sims = [Sim(domain_info(i, prefix=prefix)) for i in range(domains)]
    for command in SCHEDULE:
        for sim in sims:
            yield sim.info, sim.step(command)


# The mixed history: half the domains chained, half independent, each keeping a window of
# recent checkpoints (deleting the oldest, now and then one in the middle) as a backup tool's
# retention does. Per pair of domains (198 events): 39 creates, 22 deletes, 57 disables, 66
# bitmap removals, 12 merges and 2 enrolments, about the proportions of a real host's.
MIXED_SCHEDULES: dict[Policy, str] = {
    "chained": "FCCCCMCCRCCMCRCCRCMCRCCCRCMCRC",
    "independent": "FCCCCCRCRCRCRCRCCRCRCRCRCRCRCRC",
}


def mixed_commands(domains: int, prefix: str = "mix"
                   ) -> Iterator[tuple[DomainInfo, list[Event]]]:
    """The mixed history's commands (:data:`MIXED_SCHEDULES`), round by round across
    ``domains`` domains, even ones chained and odd ones independent."""
    policies: tuple[Policy, Policy] = ("chained", "independent")
    sims = [Sim(domain_info(i, policies[i % 2], prefix=prefix)) for i in range(domains)]
    rounds = max(len(s) for s in MIXED_SCHEDULES.values())
    for r in range(rounds):
        for sim in sims:
            schedule = MIXED_SCHEDULES[sim.info.policy]
            if r < len(schedule):
                yield sim.info, sim.step(schedule[r])


def records(info: DomainInfo, events: list[Event], at: float) -> list[NewRecord]:
    """``events`` wrapped for appending, with the bench provenance."""
    return [new_record(info.uuid, info.name, ev, PROVENANCE, at) for ev in events]


def generate_history(path: Path, domains: int, mixed: bool = False) -> int:
    """Write the rebuild history of ``domains`` domains into a new SQLite store at ``path``
    (:func:`commands`, or :func:`mixed_commands` when ``mixed``).

    Appends go through ``SqliteStore.append`` (one append per command, as the ledger does);
    the generator turns ``synchronous`` off on its own connection since only the reads are
    measured. Written to a temporary name and renamed when complete. Returns the event count.
    """
    from backends.sqlite import SqliteStore

    from .common import remove_db

    tmp = path.with_name(path.name + ".tmp")
    remove_db(tmp)
    path.parent.mkdir(parents=True, exist_ok=True)
    store = SqliteStore(str(tmp))
    db = getattr(store, "db", None)
    if db is not None:
        db.execute("PRAGMA synchronous = OFF")
    n = 0
    at = float(EPOCH)
    try:
        for info, events in (mixed_commands if mixed else commands)(domains):
            at += 0.01
            store.append(records(info, events, at))
            n += len(events)
    finally:
        store.close()
    remove_db(path)
    tmp.rename(path)
    return n


def ensure_history(path: Path, domains: int, mixed: bool = False) -> bool:
    """Generate the cached history unless it exists; True when it was generated now."""
    if path.exists():
        return False
    generate_history(path, domains, mixed)
    return True
