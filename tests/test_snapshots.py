"""Projection snapshots: opening folds only newer events; a snapshot that cannot be trusted
is ignored; ``rebuild`` compares and rewrites; results equal a full rebuild everywhere."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from backends.memory import MemoryStore
from backends.msgpack_log import MsgpackLogStore
from backends.sqlite import SqliteStore
from ledger import Ledger, snapshots
from ledger import ledger as ledger_module
from ledger.chain import GENESIS
from ledger.ports import EventStore

try:
    from .helpers import Host, command
    from .store_contract import domain_history
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    from helpers import Host, command  # type: ignore[no-redef]
    from store_contract import domain_history  # type: ignore[no-redef]

PG_URL = os.environ.get("CKPT_LEDGER_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _plain(lg: Ledger) -> tuple[dict[str, Any], dict[str, str], int, str]:
    states = {sid: st.to_dict() for sid, st in lg.states.items()}
    return states, dict(lg.by_name), lg.position, lg.position_hash


def _full(store: EventStore) -> Ledger:
    """A ledger folded from every event, ignoring any snapshot (store left open)."""
    lg = Ledger(store)
    lg.catch_up()
    return lg


@pytest.fixture
def applies(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per event really folded: every row the catch-up's fold reads
    (ledger/fold.py)."""
    calls: list[int] = []
    real_rows = ledger_module.fold_rows

    def counting_rows(states: Any, by_name: Any, pages: Any, done: Any) -> None:
        def counted() -> Iterator[Any]:
            for page in pages:
                calls.extend(1 for _ in page)
                yield page
        real_rows(states, by_name, counted(), done)

    monkeypatch.setattr(ledger_module, "fold_rows", counting_rows)
    return calls


def test_open_with_a_snapshot_folds_only_newer_events(tmp_path: Path, applies: list[int]) -> None:
    url = f"sqlite:///{tmp_path}/l.db"
    store = SqliteStore(str(tmp_path / "l.db"))
    first = domain_history(store, domains=3, checkpoints=8)
    store.close()
    with Ledger.open(url, snapshot_every=10) as lg:
        assert lg.snapshot_status == "none" and lg.folded == len(first) == len(applies)
    # closing saved a snapshot at the head
    store = SqliteStore(str(tmp_path / "l.db"))
    assert store.load_snapshot(snapshots.SNAPSHOT_KEY)[0] == len(first)  # type: ignore[index]
    more = domain_history(store, domains=1, checkpoints=2, seed=7)
    store.close()
    applies.clear()
    with Ledger.open(url, snapshot_every=10) as lg:
        assert lg.snapshot_status == "loaded" and lg.snapshot_position == len(first)
        assert lg.folded == len(more) == len(applies)  # only the newer events
        seen = _plain(lg)
        assert lg.domains() == ["vm0", "vm1", "vm2"]  # seed 7 reuses name vm0, new uuid
    with Ledger.open(url, use_snapshot=False, snapshot_every=0) as full:
        assert full.folded == len(first) + len(more) and _plain(full) == seen
    applies.clear()
    with Ledger.open(url) as lg:  # still the old snapshot: fewer than 1000 new events
        assert lg.folded == len(more) == len(applies)


def test_snapshot_every_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path}/l.db"
    store = SqliteStore(str(tmp_path / "l.db"))
    n = len(domain_history(store, domains=1, checkpoints=3))
    store.close()
    with Ledger.open(url) as lg:  # default 1000: nothing saved
        assert lg.snapshot_every == 1000 and lg.folded == n
    with Ledger.open(url, snapshot_every=0) as lg:
        assert lg.snapshot_status == "none"
    monkeypatch.setenv("CKPT_LEDGER_SNAPSHOT_EVERY", str(n))
    with Ledger.open(url) as lg:
        assert lg.snapshot_every == n and lg.snapshot_status == "none"
    with Ledger.open(url) as lg:
        assert lg.snapshot_status == "loaded" and lg.folded == 0


def _saved(store: EventStore) -> tuple[int, bytes]:
    got = store.load_snapshot(snapshots.SNAPSHOT_KEY)
    assert got is not None
    return got


def _with_snapshot(tmp_path: Path) -> tuple[SqliteStore, Ledger]:
    store = SqliteStore(str(tmp_path / "l.db"))
    domain_history(store, domains=2, checkpoints=5)
    lg = _full(store)
    assert lg.save_snapshot(force=True)
    return store, lg


@pytest.mark.parametrize("damage", ["other-projection-version", "other-format", "format-2",
                                    "garbage", "cut", "flipped-blob", "flipped-crc",
                                    "bad-index", "position-mismatch"])
def test_an_unusable_snapshot_is_ignored(tmp_path: Path, damage: str) -> None:
    store, good = _with_snapshot(tmp_path)
    position, data = _saved(store)
    header, blobs = snapshots.split(data)

    def rejoin(**changes: Any) -> bytes:
        return snapshots.join(msgpack.packb({**header, **changes}), bytes(blobs))

    if damage == "other-projection-version":
        data, want = rejoin(projection_version=header["projection_version"] + 1), "other-version"
    elif damage == "other-format":
        data, want = b"ckpt-ledger snapshot 99\n" + data[24:], "other-version"
    elif damage == "format-2":  # what the previous release wrote: a msgpack map
        data, want = msgpack.packb({"format": 2, "body": b""}), "other-version"
    elif damage == "garbage":
        data, want = os.urandom(200), "corrupt"
    elif damage == "cut":
        data, want = data[: len(data) // 2], "corrupt"
    elif damage in ("flipped-blob", "flipped-crc"):
        flipped = bytearray(data)
        flipped[len(data) - 10 if damage == "flipped-blob" else 25] ^= 0x01
        data, want = bytes(flipped), "corrupt"
    elif damage == "bad-index":  # a crc that matches, over an index that does not
        data, want = rejoin(ends=[e + 1 for e in header["ends"]]), "corrupt"
    else:
        position, want = position - 1, "corrupt"
    store.save_snapshot(snapshots.SNAPSHOT_KEY, position, data)
    lg = Ledger.open(store, snapshot_every=0)
    assert lg.snapshot_status == want and lg.folded == good.position
    assert _plain(lg) == _plain(good)
    report = snapshots.rebuild(store)
    assert report.snapshot == want and report.written
    assert snapshots.load(store)[1] == "loaded"
    store.close()


def test_a_snapshot_the_log_no_longer_matches_is_ignored(tmp_path: Path) -> None:
    store, good = _with_snapshot(tmp_path)
    position, data = _saved(store)
    raw = sqlite3.connect(str(tmp_path / "l.db"), isolation_level=None)
    with contextlib.closing(raw):
        # the log was cut short of the snapshot
        store.save_snapshot(snapshots.SNAPSHOT_KEY, position, data)
        raw.execute("CREATE TABLE keep AS SELECT * FROM events WHERE position > ?",
                    [position - 3])
        raw.execute("DELETE FROM events WHERE position > ?", [position - 3])
        lg = Ledger.open(store, snapshot_every=0)
        assert lg.snapshot_status == "stale" and lg.position == position - 3
        raw.execute("INSERT INTO events SELECT * FROM keep")
        # the event at the snapshot's position was rewritten (its hash changed)
        raw.execute("UPDATE events SET hash = ? WHERE position = ?", ["f" * 64, position])
        lg = Ledger.open(store, snapshot_every=0)
        assert lg.snapshot_status == "stale" and lg.folded == position
        assert "hash" in snapshots.load(store)[2]
    # a snapshot from another ledger, ahead of this log
    other = MemoryStore()
    domain_history(other, domains=4, checkpoints=9, seed=3)
    big = _full(other)
    big.save_snapshot(force=True)
    store.save_snapshot(snapshots.SNAPSHOT_KEY, *_saved(other))
    assert snapshots.load(store)[1] == "stale"
    assert Ledger.open(store, snapshot_every=0).snapshot_status == "stale"
    store.close()


def test_rebuild_reports_match_and_mismatch(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "l.db"))
    domain_history(store, domains=3, checkpoints=4)
    first = snapshots.rebuild(store)
    assert first.snapshot == "none" and first.written and first.differing == []
    assert first.position == first.events == store.last_position() and first.domains == 3
    again = snapshots.rebuild(store)
    assert again.snapshot == "matched" and again.differing == [] and "matched" in again.line()
    # a snapshot behind the head is compared at its own position
    domain_history(store, domains=1, checkpoints=2, seed=5)
    behind = snapshots.rebuild(store)
    assert behind.snapshot == "matched" and behind.detail == str(first.position)
    # a snapshot that disagrees with the events (a projection bug, or an edited snapshot)
    snap = snapshots.decode(_saved(store)[1])
    vm1 = snap.states[snap.by_name["vm1"]]
    del vm1.checkpoints["cp3"]
    snap.by_name["ghost"] = vm1.stream_id
    store.save_snapshot(snapshots.SNAPSHOT_KEY, snap.position,
                        snapshots.encode(snap.states, snap.by_name, snap.position, snap.hash))
    lg = Ledger.open(store, snapshot_every=0)
    assert lg.snapshot_status == "loaded" and "cp3" not in lg.state("vm1").checkpoints
    bad = snapshots.rebuild(store)
    assert bad.snapshot == "differs" and bad.differing == ["ghost", "vm1"]
    assert "DIFFERED in ghost, vm1" in bad.line()
    assert snapshots.rebuild(store).snapshot == "matched"
    assert "cp3" in Ledger.open(store, snapshot_every=0).state("vm1").checkpoints
    store.close()


def test_rebuild_on_an_empty_store_writes_nothing() -> None:
    store = MemoryStore()
    report = snapshots.rebuild(store)
    assert (report.snapshot, report.written, report.events) == ("none", False, 0)
    assert store.load_snapshot(snapshots.SNAPSHOT_KEY) is None


def test_msgpack_damaged_sidecar_reads_as_none(tmp_path: Path) -> None:
    store = MsgpackLogStore(str(tmp_path / "l.log"))
    domain_history(store, domains=1, checkpoints=2)
    _full(store).save_snapshot(force=True)
    side = Path(store.snapshot_path)
    data = side.read_bytes()
    for bad in (data[:-1], data[:10], b"", data[:20] + bytes([data[20] ^ 1]) + data[21:]):
        side.write_bytes(bad)
        assert store.load_snapshot(snapshots.SNAPSHOT_KEY) is None
        assert Ledger.open(store, snapshot_every=0).snapshot_status == "none"
    side.write_bytes(data)
    assert Ledger.open(store, snapshot_every=0).snapshot_status == "loaded"
    assert not list(tmp_path.glob("*.tmp"))
    store.close()


# --- every backend -----------------------------------------------------------------------


def _pg_factory() -> tuple[Callable[[], EventStore], str]:
    try:
        import psycopg

        psycopg.connect(PG_URL, connect_timeout=3).close()
    except Exception as e:
        if os.environ.get("CKPT_LEDGER_REQUIRE_REAL") == "1":
            pytest.fail(f"PostgreSQL not usable: {e}")
        pytest.skip(f"PostgreSQL not usable at {PG_URL}: {e}")
    from backends.postgres import PostgresStore

    schema = f"t_{uuid.uuid4().hex[:16]}"
    return (lambda: PostgresStore(f"{PG_URL}?schema={schema}")), schema


@pytest.fixture(params=["memory", "sqlite", "msgpack", pytest.param("postgres",
                marks=pytest.mark.postgres)])
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], EventStore]]:
    """A function that opens the same (initially empty) store again and again."""
    if request.param == "memory":
        mem = MemoryStore()
        mem.close = lambda: None  # type: ignore[method-assign]  # keep it across "reopens"
        yield lambda: mem
        return
    if request.param == "sqlite":
        yield lambda: SqliteStore(str(tmp_path / "l.db"))
        return
    if request.param == "msgpack":
        yield lambda: MsgpackLogStore(str(tmp_path / "l.log"))
        return
    factory, schema = _pg_factory()
    yield factory
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_snapshot_plus_newer_events_equals_a_rebuild(reopen: Callable[[], EventStore]) -> None:
    store = reopen()
    n = len(domain_history(store, domains=2, checkpoints=6, seed=1))
    store.close()
    with Ledger.open(reopen(), snapshot_every=5) as lg:
        assert lg.folded == n
    store = reopen()
    m = len(domain_history(store, domains=2, checkpoints=3, seed=2))
    store.close()
    with Ledger.open(reopen(), snapshot_every=1000) as lg:
        assert lg.snapshot_status == "loaded" and lg.folded == m
        fast = _plain(lg)
    store = reopen()
    try:
        full = _full(store)
        assert full.folded == n + m and _plain(full) == fast
        report = snapshots.rebuild(store)
        assert report.snapshot == "matched" and report.position == n + m
        assert snapshots.load(store)[0] is not None
        assert snapshots.load(store)[0].position == n + m  # type: ignore[union-attr]
    finally:
        store.close()


# --- CLI ---------------------------------------------------------------------------------


def test_cli_rebuild(tmp_path: Path) -> None:
    command()  # build the click command before Host.main patches typer's builder
    host = Host(tmp_path)
    store = SqliteStore(str(host.db))
    n = len(domain_history(store, domains=2, checkpoints=3))
    store.close()
    first = host.main("rebuild")
    assert first.code == 0 and first.stderr == ""
    assert first.stdout.startswith(f"rebuilt 2 domains from {n} events")
    assert "there was no snapshot; wrote a fresh snapshot" in first.stdout
    data = host.main("rebuild", "--json").json()
    assert data == {"position": n, "events": n, "domains": 2, "snapshot": "matched",
                    "detail": str(n), "differing": [], "written": True}
    assert GENESIS not in first.stdout
