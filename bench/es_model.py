"""The same history in the ``eventsourcing`` library: one aggregate per domain.

Each ledger event type has an ``eventsourcing`` event class carrying the same fields (and
the same provenance, as ``meta``) whose ``apply`` makes the same state change as
``DomainState.apply`` does, on plain dicts, in the library's idiom. Stored with its default
SQLite recorder (JSON transcoder, WAL, ``synchronous=FULL``, no snapshots, no cache).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate


class EsDomain(Aggregate):
    """A domain's checkpoint tree and bitmaps, folded by the library."""

    def __init__(self) -> None:
        """An empty domain (the library records this as its own ``Created`` event)."""
        self.name = ""
        self.policy = ""
        self.disks: list[dict[str, Any]] = []
        self.checkpoints: dict[str, dict[str, Any]] = {}
        self.current: str | None = None
        self.bitmaps: dict[str, dict[str, dict[str, Any]]] = {}

    class DomainEnrolled(Aggregate.Event):
        """The ledger's ``DomainEnrolled``."""

        name: str
        uuid: str
        disks: list[dict[str, Any]]
        policy: str
        hypervisor: str | None
        meta: dict[str, Any]

        def apply(self, aggregate: Any) -> None:
            """Name, policy and disks."""
            aggregate.name, aggregate.policy = self.name, self.policy
            aggregate.disks = self.disks

    class CheckpointCreated(Aggregate.Event):
        """The ledger's ``CheckpointCreated``."""

        name: str
        parent: str | None
        creation_time: int
        description: str | None
        disks: list[dict[str, Any]]
        domain_xml: str | None
        xml: str
        meta: dict[str, Any]

        def apply(self, aggregate: Any) -> None:
            """Insert into the tree, make current, add its recording bitmaps."""
            cps = aggregate.checkpoints
            cps[self.name] = {
                "parent": self.parent, "creation_time": self.creation_time,
                "description": self.description, "disks": self.disks,
                "domain_xml": self.domain_xml, "xml": self.xml, "children": [],
            }
            if self.parent is not None and self.parent in cps:
                cps[self.parent]["children"].append(self.name)
            aggregate.current = self.name
            for d in self.disks:
                if d["checkpoint"] == "bitmap":
                    bitmap = d["bitmap"] or self.name
                    aggregate.bitmaps.setdefault(d["name"], {})[bitmap] = {
                        "checkpoint": self.name, "active": True, "problem": None}

    class CheckpointDeleted(Aggregate.Event):
        """The ledger's ``CheckpointDeleted``."""

        name: str
        children: bool
        children_only: bool
        metadata_only: bool
        deleted: list[str]
        reparented: dict[str, str | None]
        meta: dict[str, Any]

        def apply(self, aggregate: Any) -> None:
            """Reparent, drop the deleted checkpoints, move current."""
            cps = aggregate.checkpoints
            target = cps[self.name]
            for child, new_parent in self.reparented.items():
                cp = cps.get(child)
                if cp is None:
                    continue
                cp["parent"] = new_parent
                if new_parent is not None and new_parent in cps:
                    cps[new_parent]["children"].append(child)
            for name in self.deleted:
                cp = cps.pop(name, None)
                if cp is not None and cp["parent"] is not None and cp["parent"] in cps:
                    siblings = cps[cp["parent"]]["children"]
                    if name in siblings:
                        siblings.remove(name)
            if aggregate.current in self.deleted:
                gone = set(self.deleted)
                aggregate.current = self.name if self.name not in gone else target["parent"]
                if aggregate.current not in cps:
                    aggregate.current = None

    class _Bitmap(Aggregate.Event):
        disk: str
        bitmap: str
        checkpoint: str
        meta: dict[str, Any]

    class BitmapDisabled(_Bitmap):
        """The ledger's ``BitmapDisabled``."""

        def apply(self, aggregate: Any) -> None:
            """The bitmap stops recording."""
            bm = aggregate.bitmaps.get(self.disk, {}).get(self.bitmap)
            if bm is not None:
                bm["active"] = False

    class BitmapEnabled(_Bitmap):
        """The ledger's ``BitmapEnabled``."""

        def apply(self, aggregate: Any) -> None:
            """The bitmap records again."""
            bm = aggregate.bitmaps.get(self.disk, {}).get(self.bitmap)
            if bm is not None:
                bm["active"] = True

    class BitmapRemoved(_Bitmap):
        """The ledger's ``BitmapRemoved``."""

        def apply(self, aggregate: Any) -> None:
            """The bitmap is gone."""
            aggregate.bitmaps.get(self.disk, {}).pop(self.bitmap, None)

    class BitmapMerged(_Bitmap):
        """The ledger's ``BitmapMerged`` (changes no bitmap's existence or state)."""

        into: str


EVENT_CLASSES: dict[str, type[Aggregate.Event]] = {
    name: getattr(EsDomain, name)
    for name in ("DomainEnrolled", "CheckpointCreated", "CheckpointDeleted", "BitmapDisabled",
                 "BitmapEnabled", "BitmapRemoved", "BitmapMerged")
}


class BenchApp(Application):
    """A default ``eventsourcing`` application (no snapshots, no aggregate cache)."""


def open_app(path: Path) -> BenchApp:
    """The application on the SQLite file ``path`` (created if absent)."""
    return BenchApp(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                         "SQLITE_DBNAME": str(path)})


def new_domain(stream_id: str) -> EsDomain:
    """A new aggregate whose ID is the domain's UUID."""
    return EsDomain._create(EsDomain.Created, id=UUID(stream_id))  # type: ignore[attr-defined]


def trigger(agg: EsDomain, type_: str, data: dict[str, Any], meta: dict[str, Any]) -> None:
    """Record the library's version of a ledger event (``data`` as stored by the ledger)."""
    fields = {k: v for k, v in data.items() if k != "type"}
    agg.trigger_event(EVENT_CLASSES[type_], meta=meta, **fields)


def generate_es_history(history: Path, path: Path, batch: int = 10_000) -> int:
    """Copy the ledger history at ``history`` into a new library database at ``path``.

    Every ``batch`` events, the aggregates touched are saved together (one transaction).
    """
    from backends.sqlite import SqliteStore
    from ledger.log.records import decode_payload

    from .common import remove_db

    tmp = path.with_name(path.name + ".tmp")
    remove_db(tmp)
    app = open_app(tmp)
    store = SqliteStore(str(history))
    aggs: dict[str, EsDomain] = {}
    dirty: dict[str, EsDomain] = {}
    n = 0
    try:
        for rec in store.read_all():
            agg = aggs.get(rec.stream_id)
            if agg is None:
                agg = aggs[rec.stream_id] = new_domain(rec.stream_id)
            data, meta = decode_payload(rec.payload)
            trigger(agg, rec.type, data, meta)
            dirty[rec.stream_id] = agg
            n += 1
            if n % batch == 0:
                app.save(*dirty.values())
                dirty.clear()
        if dirty:
            app.save(*dirty.values())
    finally:
        store.close()
        app.close()
    remove_db(path)
    tmp.rename(path)
    return n
