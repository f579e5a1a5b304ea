"""One measurement in a fresh interpreter: ``python -m bench.worker TASK JSON-KWARGS``.

Prints one JSON object (seconds, counts, peak RSS) on its last line. Each task times only
the work named in its docstring; inputs are prepared before the clock starts.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

from .common import DATA, maxrss_mb, median, timer, warm
from .on_libvirt import (
    create_answered_ours,
    create_libvirt_ours,
    create_libvirt_raw,
    replay_ours,
    replay_raw,
)

RAW_SCHEMA = (  # the store's table, as the raw floors write it with plain sqlite3
    "CREATE TABLE events (position INTEGER PRIMARY KEY, stream_id TEXT NOT NULL, "
    "stream_name TEXT NOT NULL, stream_version INTEGER NOT NULL, type TEXT NOT NULL, "
    "schema_version INTEGER NOT NULL, recorded_at REAL NOT NULL, payload BLOB NOT NULL, "
    "hash TEXT NOT NULL, UNIQUE(stream_id, stream_version))",
    "CREATE INDEX events_stream_id ON events(stream_id)",
)
RAW_INSERT = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_COLUMNS = "position, stream_id, stream_name, stream_version, type, schema_version, " \
    "recorded_at, payload"


def _settle() -> None:
    """Before a clock starts: collect, then move every object made so far (the inputs) out
    of the garbage collector's sight, so that no contender pays for scanning them."""
    import gc

    gc.collect()
    gc.freeze()


def _scratch() -> Path:
    DATA.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="scratch-", dir=DATA))


def _raw_connect(path: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection with the store's durability: WAL, synchronous=FULL."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    for stmt in RAW_SCHEMA:
        conn.execute(stmt)
    return conn


def ledger_opener(use_snapshot: bool, snapshot_every: int = 0) -> Callable[[str], Any]:
    """``Ledger.open`` with the snapshot options this version of the ledger has.

    Imports happen here, before any clock starts: a rebuild and an open from a snapshot
    are timed from the call of ``Ledger.open`` (importing the package takes ~0.1 s either
    way, whatever the history).
    """
    import inspect

    import backends.sqlite  # noqa: F401  (the store plugin Ledger.open would import)
    from ledger.app.ledger import Ledger

    params = inspect.signature(Ledger.open).parameters
    kwargs: dict[str, Any] = {}
    if "use_snapshot" in params:
        kwargs["use_snapshot"] = use_snapshot
    if "snapshot_every" in params:
        kwargs["snapshot_every"] = snapshot_every
    return lambda url: Ledger.open(url, **kwargs)


def open_ledger(url: str, *, use_snapshot: bool, snapshot_every: int = 0) -> Any:
    """``Ledger.open(url)`` (see :func:`ledger_opener`)."""
    return ledger_opener(use_snapshot, snapshot_every)(url)


# ---------------------------------------------------------------------- the inputs
def generate(history: str, domains: int, mixed: bool = False) -> dict[str, Any]:
    """Make a cached rebuild history (bench/gen.py): the chained one, or the mixed one."""
    from .gen import ensure_history

    ensure_history(Path(history), domains, mixed)
    return {}


def generate_es(history: str, es_history: str) -> dict[str, Any]:
    """Copy the cached history into the eventsourcing database (bench/es_model.py)."""
    from .es_model import generate_es_history

    return {"events": generate_es_history(Path(history), Path(es_history))}


# ------------------------------------------------------------------------- rebuild
def rebuild_ours(history: str) -> dict[str, Any]:
    """``Ledger.open`` on the history ignoring any snapshot: every projection folded.

    ``snapshot_every=0``: closing saves no snapshot, so the cached history stays as made.
    """
    opener = ledger_opener(use_snapshot=False)
    warm(Path(history))
    base = maxrss_mb()
    with timer() as t:
        lg = opener(f"sqlite:///{history}")
    seconds = t()
    out = {"seconds": seconds, "events": lg.position, "domains": len(lg.states),
           "rss_mb": maxrss_mb(), "rss_before_mb": base}
    lg.close()
    return out


def rebuild_raw(history: str) -> dict[str, Any]:
    """The floor: one ``SELECT`` of every row in position order + ``msgpack.unpackb``."""
    unpackb = msgpack.unpackb
    conn = sqlite3.connect(f"file:{history}?mode=ro", uri=True)
    warm(Path(history))
    n = 0
    with timer() as t:
        for row in conn.execute(f"SELECT {_COLUMNS} FROM events ORDER BY position"):
            unpackb(row[7], raw=False, strict_map_key=False)
            n += 1
    conn.close()
    return {"seconds": t(), "events": n, "rss_mb": maxrss_mb()}


def rebuild_es(history: str, es_history: str) -> dict[str, Any]:
    """eventsourcing: ``repository.get(id)`` of every domain's aggregate (full replay)."""
    from uuid import UUID

    from .es_model import open_app
    from .inputs import stream_ids

    ids = [UUID(s) for s in stream_ids(Path(history))]
    app = open_app(Path(es_history))
    warm(Path(es_history))
    n = 0
    with timer() as t:
        for i in ids:
            n += app.repository.get(i).version - 1  # less the library's own Created event
    app.close()
    return {"seconds": t(), "events": n, "domains": len(ids), "rss_mb": maxrss_mb()}


# -------------------------------------------------------------------------- import
IMPORT_GROUP = 100  # domains (of 100 events each) per transaction in every batched import


def _groups(items: list[Any], size: int = IMPORT_GROUP) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def import_ours(history: str, events: int) -> dict[str, Any]:
    """``new_record`` (model_dump + packb) + ``SqliteStore.append_many``: each transaction
    appends the whole histories of 100 domains (10,000 events), each with its own expected
    version (no stream)."""
    from backends.sqlite import SqliteStore
    from ledger.log.records import new_record

    from .inputs import streams

    groups = _groups(streams(Path(history), events))
    _settle()
    scratch = _scratch()
    store = SqliteStore(str(scratch / "import.db"))
    n = 0
    try:
        with timer() as t:
            for group in groups:
                batches = []
                for st in group:
                    recs = [new_record(st.stream_id, st.name, ev, prov, at)
                            for ev, prov, at in zip(st.events, st.provenance, st.recorded_at,
                                                    strict=True)]
                    batches.append((recs, 0))
                    n += len(recs)
                store.append_many(batches)
    finally:
        store.close()
        shutil.rmtree(scratch)
    return {"seconds": t(), "events": n}


def import_raw(history: str, events: int) -> dict[str, Any]:
    """The floor: ``packb`` of plain dicts + one ``executemany`` per 100 domains."""
    from .inputs import streams

    groups = _groups(streams(Path(history), events))
    _settle()
    scratch = _scratch()
    conn = _raw_connect(scratch / "raw.db")
    packb = msgpack.packb
    pos = 0
    try:
        with timer() as t:
            for group in groups:
                rows = []
                for st in group:
                    for ver, ((type_, data, meta), at, rec) in enumerate(
                            zip(st.plain, st.recorded_at, st.records, strict=True), 1):
                        pos += 1
                        # the payload as the ledger lays it out (schema 2: meta packed); the
                        # row carries a hash of the same size as the ledger's (its own,
                        # from the history: the floor does not compute one)
                        payload = packb({"data": data, "meta": packb(meta, use_bin_type=True)},
                                        use_bin_type=True)
                        rows.append((pos, st.stream_id, st.name, ver, type_, 2, at, payload,
                                     rec.hash))
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(RAW_INSERT, rows)
                conn.execute("COMMIT")
    finally:
        conn.close()
        shutil.rmtree(scratch)
    return {"seconds": t(), "events": pos}


def import_es(history: str, events: int) -> dict[str, Any]:
    """eventsourcing: trigger each event on a new aggregate + one ``app.save(*aggregates)``
    per 100 domains (its own multi-aggregate atomic save)."""
    from .es_model import new_domain, open_app, trigger
    from .inputs import streams

    groups = _groups(streams(Path(history), events))
    _settle()
    scratch = _scratch()
    app = open_app(scratch / "es.db")
    n = 0
    try:
        with timer() as t:
            for group in groups:
                aggs = []
                for st in group:
                    agg = new_domain(st.stream_id)
                    for type_, data, meta in st.plain:
                        trigger(agg, type_, data, meta)
                    aggs.append(agg)
                    n += len(st.plain)
                app.save(*aggs)
    finally:
        app.close()
        shutil.rmtree(scratch)
    return {"seconds": t(), "events": n}


# ------------------------------------------------------------------ durable single
def create_append(history: str, creates: int, policy: str = "independent") -> dict[str, Any]:
    """One durable create as the ledger records it: ``new_record`` of each of the create's
    events + one ``SqliteStore.append`` (a transaction, an fsync) with the stream's expected
    version. The creates are the history's first ``creates`` ones that succeed a checkpoint;
    ``independent``: the CheckpointCreated alone (libvirt >= 6.5 disables nothing);
    ``chained``: with the BitmapDisabled of the checkpoint it succeeds on each disk."""
    from backends.sqlite import SqliteStore
    from ledger.log.records import new_record

    from .inputs import create_commands

    work = []  # (stream id, name, the create's events, the stream's version before it)
    versions: dict[str, int] = {}
    for cmd in create_commands(Path(history), creates):
        events = [(ev, prov, at) for ev, prov, at in zip(cmd.events, cmd.provenance,
                                                          cmd.recorded_at, strict=True)
                  if policy == "chained" or ev.type == "CheckpointCreated"]
        version = versions.get(cmd.stream_id, 0)
        work.append((cmd.stream_id, cmd.name, events, version))
        versions[cmd.stream_id] = version + len(events)
    _settle()
    scratch = _scratch()
    store = SqliteStore(str(scratch / "creates.db"))
    try:
        with timer() as t:
            for stream_id, name, events, version in work:
                store.append([new_record(stream_id, name, ev, prov, at)
                              for ev, prov, at in events], expected_version=version)
    finally:
        store.close()
        shutil.rmtree(scratch)
    return {"seconds": t(), "events": len(work), "rows": sum(len(w[2]) for w in work)}


def create_ledger(creates: int, domains: int = 20) -> dict[str, Any]:
    """``Ledger.create`` end to end on the mock hypervisor, SQLite store: informational.

    ``domains`` domains (chained, 3 qcow2 disks), each on its own mock state file and
    ledger (all sharing one store file), take ``creates // domains`` creates in turn. Each
    create also appends and fsyncs a line of the mock's journal (its simulated host).
    """
    from adapters.mock import MockHypervisor
    from ledger.app.ledger import Ledger

    scratch = _scratch()
    store = f"sqlite:///{scratch / 'ledger.db'}"
    ledgers = []
    per = max(1, creates // domains)
    try:
        for i in range(domains):
            mock = MockHypervisor(str(scratch / f"mock-{i}.json"))
            mock.define(f"vm{i}", ["vda", "vdb", "vdc"], policy="chained")
            ledgers.append((f"vm{i}", Ledger.open(store, mock)))
        n = 0
        with timer() as t:
            for name, lg in ledgers:
                for j in range(per):
                    lg.create(name, name=f"c{j:05d}")
                    n += 1
    finally:
        for _, lg in ledgers:
            lg.close()
        shutil.rmtree(scratch)
    return {"seconds": t(), "events": n}


def raw_commit(history: str, creates: int) -> dict[str, Any]:
    """The floor: ``BEGIN IMMEDIATE; INSERT; COMMIT`` per row, WAL, synchronous=FULL; the
    rows are the CheckpointCreated records of the creates ``create_append`` makes."""
    from .inputs import create_commands

    recs = [r for cmd in create_commands(Path(history), creates)
            for r in cmd.records if r.type == "CheckpointCreated"]
    _settle()
    scratch = _scratch()
    conn = _raw_connect(scratch / "raw.db")
    try:
        with timer() as t:
            for pos, r in enumerate(recs, 1):
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(RAW_INSERT, (pos, r.stream_id, r.stream_name, pos, r.type,
                                          r.schema_version, r.recorded_at, r.payload, r.hash))
                conn.execute("COMMIT")
    finally:
        conn.close()
        shutil.rmtree(scratch)
    return {"seconds": t(), "events": len(recs)}


# ---------------------------------------------------------------------------- plan
def plan(chain: int, others: int, calls: int = 21) -> dict[str, Any]:
    """``Ledger.plan(dom, since=oldest)`` on a ``chain``-checkpoint chained domain.

    ``others`` other domains (enrolled, 3 checkpoints each) share the ledger. The median of
    ``calls`` plans is reported.
    """
    from backends.memory import MemoryStore
    from ledger.app.ledger import Ledger

    from .gen import Sim, domain_info, records

    store = MemoryStore()
    target = Sim(domain_info(0, prefix="chain"))
    store.append(records(target.info, target.step("F"), 0.0))
    for _ in range(chain - 1):
        store.append(records(target.info, target.step("C"), 0.0))
    for i in range(others):
        sim = Sim(domain_info(i, prefix="other"))
        for command in "FCC":
            store.append(records(sim.info, sim.step(command), 0.0))
    lg = Ledger.open(store)
    name = target.info.name
    result = lg.plan(name, "cp00001")
    bitmaps = {d: len(p.bitmaps) for d, p in result.disks.items()}
    assert all(n == chain for n in bitmaps.values()), bitmaps
    times = []
    for _ in range(calls):
        with timer() as t:
            lg.plan(name, "cp00001")
        times.append(t())
    return {"seconds": median(times), "events": lg.position, "domains": len(lg.states),
            "bitmaps": bitmaps}


# ------------------------------------------------------------------------ snapshot
def snapshot_prepare(history: str, copy: str) -> dict[str, Any]:
    """Copy the history to ``copy``, rebuild it and let ``close`` save a snapshot.

    Reports ``available: False`` when this ledger cannot save snapshots yet.
    """
    import inspect

    from backends.sqlite import SqliteStore
    from ledger.app.ledger import Ledger

    if not hasattr(SqliteStore, "save_snapshot"):
        return {"available": False, "why": "SqliteStore has no save_snapshot"}
    if "use_snapshot" not in inspect.signature(Ledger.open).parameters:
        return {"available": False, "why": "Ledger.open does not load snapshots"}
    shutil.copyfile(history, copy)
    lg = open_ledger(f"sqlite:///{copy}", use_snapshot=False, snapshot_every=1)
    events = lg.position
    lg.close()  # saves the snapshot (snapshot_every=1)
    return {"available": True, "events": events}


def open_snapshot(copy: str) -> dict[str, Any]:
    """``Ledger.open`` from the snapshot ``snapshot_prepare`` saved (+ no newer events)."""
    opener = ledger_opener(use_snapshot=True)
    warm(Path(copy))
    with timer() as t:
        lg = opener(f"sqlite:///{copy}")
    out = {"seconds": t(), "events": lg.position,
           "status": str(getattr(lg, "snapshot_status", "?")),
           "folded": int(getattr(lg, "folded", -1)), "rss_mb": maxrss_mb()}
    lg.close()
    return out


TASKS: dict[str, Callable[..., dict[str, Any]]] = {
    f.__name__: f
    for f in (generate, generate_es, rebuild_ours, rebuild_raw, rebuild_es, import_ours,
              import_raw, import_es, create_append, create_ledger, raw_commit, plan,
              snapshot_prepare, open_snapshot, replay_ours, replay_raw, create_libvirt_ours,
              create_answered_ours, create_libvirt_raw)
}


def main(argv: list[str]) -> None:
    """Run ``argv[0]`` with the JSON kwargs ``argv[1]`` and print its result as JSON."""
    task, kwargs = argv[0], json.loads(argv[1]) if len(argv) > 1 else {}
    print(json.dumps(TASKS[task](**kwargs)))


if __name__ == "__main__":
    main(sys.argv[1:])
