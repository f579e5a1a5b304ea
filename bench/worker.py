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

RAW_SCHEMA = (
    "CREATE TABLE events (position INTEGER PRIMARY KEY, stream_id TEXT NOT NULL, "
    "stream_name TEXT NOT NULL, stream_version INTEGER NOT NULL, type TEXT NOT NULL, "
    "schema_version INTEGER NOT NULL, recorded_at REAL NOT NULL, payload BLOB NOT NULL, "
    "UNIQUE(stream_id, stream_version))",
    "CREATE INDEX events_stream_id ON events(stream_id)",
)
RAW_INSERT = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_COLUMNS = "position, stream_id, stream_name, stream_version, type, schema_version, " \
    "recorded_at, payload"


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


def open_ledger(url: str, *, use_snapshot: bool, snapshot_every: int = 0) -> Any:
    """``Ledger.open(url)`` with the snapshot options this version of the ledger has."""
    import inspect

    from ledger.ledger import Ledger

    params = inspect.signature(Ledger.open).parameters
    kwargs: dict[str, Any] = {}
    if "use_snapshot" in params:
        kwargs["use_snapshot"] = use_snapshot
    if "snapshot_every" in params:
        kwargs["snapshot_every"] = snapshot_every
    return Ledger.open(url, **kwargs)


# ------------------------------------------------------------------------- rebuild
def rebuild_ours(history: str) -> dict[str, Any]:
    """``Ledger.open`` on the history ignoring any snapshot: every projection folded.

    ``snapshot_every=0``: closing saves no snapshot, so the cached history stays as made.
    """
    base = maxrss_mb()
    with timer() as t:
        lg = open_ledger(f"sqlite:///{history}", use_snapshot=False)
    seconds = t()
    out = {"seconds": seconds, "events": lg.position, "domains": len(lg.states),
           "rss_mb": maxrss_mb(), "rss_before_mb": base}
    lg.close()
    return out


def rebuild_raw(history: str) -> dict[str, Any]:
    """The floor: one ``SELECT`` of every row in position order + ``msgpack.unpackb``."""
    unpackb = msgpack.unpackb
    conn = sqlite3.connect(f"file:{history}?mode=ro", uri=True)
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
    n = 0
    with timer() as t:
        for i in ids:
            n += app.repository.get(i).version - 1  # less the library's own Created event
    app.close()
    return {"seconds": t(), "events": n, "domains": len(ids), "rss_mb": maxrss_mb()}


# -------------------------------------------------------------------------- import
def import_ours(history: str, events: int) -> dict[str, Any]:
    """``new_record`` (model_dump + packb) + ``SqliteStore.append``, one append per domain."""
    from backends.sqlite import SqliteStore
    from ledger.envelope import new_record

    from .inputs import streams

    inputs = streams(Path(history), events)
    scratch = _scratch()
    store = SqliteStore(str(scratch / "import.db"))
    n = 0
    try:
        with timer() as t:
            for st in inputs:
                recs = [new_record(st.stream_id, st.name, ev, prov, at)
                        for ev, prov, at in zip(st.events, st.provenance, st.recorded_at,
                                                strict=True)]
                store.append(recs, expected_version=0)
                n += len(recs)
    finally:
        store.close()
        shutil.rmtree(scratch)
    return {"seconds": t(), "events": n}


def import_raw(history: str, events: int) -> dict[str, Any]:
    """The floor: ``packb`` of plain dicts + ``executemany``, one transaction per domain."""
    from .inputs import streams

    inputs = streams(Path(history), events)
    scratch = _scratch()
    conn = _raw_connect(scratch / "raw.db")
    packb = msgpack.packb
    pos = 0
    try:
        with timer() as t:
            for st in inputs:
                rows = []
                for ver, ((type_, data, meta), at) in enumerate(
                        zip(st.plain, st.recorded_at, strict=True), 1):
                    pos += 1
                    rows.append((pos, st.stream_id, st.name, ver, type_, 1, at,
                                 packb({"data": data, "meta": meta}, use_bin_type=True)))
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(RAW_INSERT, rows)
                conn.execute("COMMIT")
    finally:
        conn.close()
        shutil.rmtree(scratch)
    return {"seconds": t(), "events": pos}


def import_es(history: str, events: int) -> dict[str, Any]:
    """eventsourcing: trigger each event on a new aggregate + ``app.save(agg)`` per domain."""
    from .es_model import new_domain, open_app, trigger
    from .inputs import streams

    inputs = streams(Path(history), events)
    scratch = _scratch()
    app = open_app(scratch / "es.db")
    n = 0
    try:
        with timer() as t:
            for st in inputs:
                agg = new_domain(st.stream_id)
                for type_, data, meta in st.plain:
                    trigger(agg, type_, data, meta)
                app.save(agg)
                n += len(st.plain)
    finally:
        app.close()
        shutil.rmtree(scratch)
    return {"seconds": t(), "events": n}


# ------------------------------------------------------------------ durable single
def create_ledger(creates: int, domains: int = 20) -> dict[str, Any]:
    """``Ledger.create`` on the mock hypervisor, SQLite store, one durable create each.

    ``domains`` domains (chained, 3 qcow2 disks), each on its own mock state file and
    ledger (all sharing one store file), take ``creates // domains`` creates in turn.
    """
    from adapters.mock import MockHypervisor
    from ledger.ledger import Ledger

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


def append_single(history: str, creates: int) -> dict[str, Any]:
    """``SqliteStore.append([record])``: one durable transaction per event."""
    from backends.sqlite import SqliteStore

    from .inputs import first_records

    recs = first_records(Path(history), creates)
    scratch = _scratch()
    store = SqliteStore(str(scratch / "single.db"))
    try:
        with timer() as t:
            for rec in recs:
                store.append([rec])
    finally:
        store.close()
        shutil.rmtree(scratch)
    return {"seconds": t(), "events": len(recs)}


def raw_commit(history: str, creates: int) -> dict[str, Any]:
    """The floor: ``BEGIN IMMEDIATE; INSERT; COMMIT`` per row, WAL, synchronous=FULL."""
    from .inputs import first_records

    recs = first_records(Path(history), creates)
    scratch = _scratch()
    conn = _raw_connect(scratch / "raw.db")
    try:
        with timer() as t:
            for pos, r in enumerate(recs, 1):
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(RAW_INSERT, (pos, r.stream_id, r.stream_name, pos, r.type,
                                          r.schema_version, r.recorded_at, r.payload))
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
    from ledger.ledger import Ledger

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
    from ledger.ledger import Ledger

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
    warm(Path(copy))
    with timer() as t:
        lg = open_ledger(f"sqlite:///{copy}", use_snapshot=True)
    out = {"seconds": t(), "events": lg.position,
           "status": str(getattr(lg, "snapshot_status", "?")),
           "folded": int(getattr(lg, "folded", -1)), "rss_mb": maxrss_mb()}
    lg.close()
    return out


TASKS: dict[str, Callable[..., dict[str, Any]]] = {
    f.__name__: f
    for f in (rebuild_ours, rebuild_raw, rebuild_es, import_ours, import_raw, import_es,
              create_ledger, append_single, raw_commit, plan, snapshot_prepare, open_snapshot)
}


def main(argv: list[str]) -> None:
    """Run ``argv[0]`` with the JSON kwargs ``argv[1]`` and print its result as JSON."""
    task, kwargs = argv[0], json.loads(argv[1]) if len(argv) > 1 else {}
    print(json.dumps(TASKS[task](**kwargs)))


if __name__ == "__main__":
    main(sys.argv[1:])
