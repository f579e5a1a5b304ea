"""Projection snapshots: opening folds only newer events; a snapshot that cannot be trusted
is ignored; ``rebuild`` compares and rewrites; results equal a full rebuild everywhere."""

from __future__ import annotations

import contextlib
import itertools
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
from ledger import Ledger
from ledger.app import read_model
from ledger.app.rebuild import rebuild
from ledger.log import snapshot_codec as snapshots
from ledger.log.chain import GENESIS
from ledger.log.store import EventStore

try:
    from .helpers import Host, assert_one_error_line, command
    from .store_contract import domain_history
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    from helpers import Host, assert_one_error_line, command  # type: ignore[no-redef]
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
    (ledger/log/fold.py)."""
    calls: list[int] = []
    real_rows = read_model.fold_rows

    def counting_rows(states: Any, by_name: Any, pages: Any, done: Any) -> None:
        def counted() -> Iterator[Any]:
            for page in pages:
                calls.extend(1 for _ in page)
                yield page
        real_rows(states, by_name, counted(), done)

    monkeypatch.setattr(read_model, "fold_rows", counting_rows)
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
    report = rebuild(store)
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
    first = rebuild(store)
    assert first.snapshot == "none" and first.written and first.differing == []
    assert first.position == first.events == store.last_position() and first.domains == 3
    again = rebuild(store)
    assert again.snapshot == "matched" and again.differing == [] and "matched" in again.line()
    # a snapshot behind the head is compared at its own position
    domain_history(store, domains=1, checkpoints=2, seed=5)
    behind = rebuild(store)
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
    bad = rebuild(store)
    assert bad.snapshot == "differs" and bad.differing == ["ghost", "vm1"]
    assert "DIFFERED in ghost, vm1" in bad.line()
    assert rebuild(store).snapshot == "matched"
    assert "cp3" in Ledger.open(store, snapshot_every=0).state("vm1").checkpoints
    store.close()


def test_rebuild_on_an_empty_store_writes_nothing() -> None:
    store = MemoryStore()
    report = rebuild(store)
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
        report = rebuild(store)
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
    assert data == {"schema": "ckpt-ledger/rebuild/1", "position": n, "events": n,
                    "domains": 2, "snapshot": "matched",
                    "detail": str(n), "differing": [], "written": True}
    assert GENESIS not in first.stdout


# --- a forged snapshot (its crc recomputed) -----------------------------------------------


def _blob_dict(blob: Any) -> dict[str, Any]:
    import zlib

    data: dict[str, Any] = msgpack.unpackb(zlib.decompress(blob), raw=False)
    return data


def _forged_blob(blob: Any, field: str) -> bytes:
    """The blob of one domain with ``field`` of its state changed."""
    import zlib

    d = _blob_dict(blob)
    if field == "checkpoints":
        d[field] = d[field][:-1]
    elif field == "bitmaps":
        row = d[field]["vda"][-1]
        row[2] = not row[2]
    elif field == "disks":
        d[field] = d[field][:1]
    elif field in ("version", "position", "projection_version"):
        d[field] += 1
    elif field == "drift":
        d[field] = {"bitmap-missing/cp1/vda/cp1": "forged"}
    elif field == "current":
        d[field] = "cp1"
    elif field == "policy":
        d[field] = "chained"
    else:  # stream_id, name, uuid
        d[field] = "forged-" + str(d[field])
    return zlib.compress(msgpack.packb(d, use_bin_type=True), 1)


BLOB_FIELDS = ["stream_id", "name", "uuid", "policy", "disks", "checkpoints", "current",
               "bitmaps", "drift", "version", "position", "projection_version"]
# header forgery -> what it is: differs (verify-log fails) or why it is ignored on open
HEADER_FORGERIES = {
    "projection_version": "other-version", "position": "corrupt", "hash": "stale",
    "position-and-hash-moved": "differs", "ids-swapped": "differs", "ids-extra": "corrupt",
    "ends-shifted": "differs", "by_name-swapped": "differs", "by_name-added": "differs",
    "by_name-dropped": "differs", "by_name-unknown-stream": "corrupt",
    # the row's position and the header's moved together, to where the log holds no event
    "moved-to:0": "stale", "moved-to:-1": "stale", f"moved-to:{2**63 - 1}": "stale",
}


def _forge(store: EventStore, data: bytes, what: str) -> tuple[int, str, str | None]:
    """Save a forgery of snapshot ``data`` (its crc recomputed); (its position, the verdict,
    the first domain that differs)."""
    header, blobs = snapshots.split(data)
    header = dict(header)
    position = header["position"]
    ids, ends, names = list(header["ids"]), list(header["ends"]), dict(header["by_name"])
    parts = [bytes(blobs[a:b]) for a, b in zip([0, *ends[:-1]], ends, strict=True)]
    want, first = HEADER_FORGERIES.get(what, "differs"), None
    if what.startswith("blob:"):
        parts[1] = _forged_blob(parts[1], what[5:])
        first = "vm1"
    elif what == "projection_version":
        header[what] += 1
    elif what == "position":
        header[what] -= 1
    elif what == "hash":
        header[what] = "0" * 64
    elif what == "position-and-hash-moved":  # claims the state one event earlier
        position -= 1
        header.update(position=position, hash=snapshots.hash_at(store, position))
        first = "vm1"  # the domain of the last event
    elif what.startswith("moved-to:"):
        position = int(what[9:])
        header["position"] = position
    elif what == "ids-swapped":
        ids.reverse()
        first = "vm0"
    elif what == "ids-extra":
        ids.append("extra")
    elif what == "ends-shifted":
        ends[0] -= 1
        first = "vm0"
    elif what == "by_name-swapped":
        names = {"vm0": names["vm1"], "vm1": names["vm0"]}
        first = "vm0"
    elif what == "by_name-added":
        names["a-ghost"] = names["vm1"]
        first = "a-ghost"
    elif what == "by_name-dropped":
        del names["vm0"]
        first = "vm0"
    elif what == "by_name-unknown-stream":
        names["vm0"] = "no-such-stream"
    if not what.startswith("ends"):
        ends = list(itertools.accumulate(len(p) for p in parts))
    header.update(ids=ids, ends=ends, by_name=names)
    forged = snapshots.join(msgpack.packb(header, use_bin_type=True), b"".join(parts))
    store.save_snapshot(snapshots.SNAPSHOT_KEY, position, forged)
    return position, want, first


FORGERIES = [*HEADER_FORGERIES, *(f"blob:{f}" for f in BLOB_FIELDS)]


def test_verify_log_fails_on_a_snapshot_the_events_do_not_support(
    reopen: Callable[[], EventStore], tmp_path: Path
) -> None:
    """Each field of the header and of a domain's blob forged (crc recomputed): a snapshot
    that loads but is not what the events say fails verify-log (one line naming its position
    and the first domain that differs), writing nothing; after `rebuild` it passes. One that
    does not load is only reported (it is ignored on open)."""
    from ledger.app.integrity import verify_store

    store = reopen()
    domain_history(store, domains=2, checkpoints=5)
    good = _full(store)
    assert good.save_snapshot(force=True)
    truth = _plain(good)
    genuine = _saved(store)[1]
    report = verify_store(store)
    assert report.ok and report.snapshot is not None and report.snapshot.status == "matched"
    assert report.line().endswith(f"the snapshot at position {good.position} matches the "
                                  "events")
    url = store.url
    store.close()
    cli = None if url.startswith("memory") else Host(tmp_path)  # a memory store: no CLI
    command()  # build the click command before Host.main patches typer's builder
    for what in FORGERIES:
        store = reopen()
        position, want, first = _forge(store, genuine, what)
        saved = _saved(store)
        report = verify_store(store)
        assert report.first_bad is None and report.snapshot is not None, what
        assert report.snapshot.status == want, (what, report.snapshot)
        if want == "differs":
            assert not report.ok and report.snapshot.differing[0] == first, what
            line = report.line()
            assert (f"snapshot at position {position}" in line and f"domain {first}" in line
                    and "ckpt-ledger rebuild" in line), (what, line)
        else:
            assert report.ok and f"({want}:" in report.line(), (what, report.line())
            assert snapshots.load(store)[1] == want, what  # so open ignores it
        store.close()
        if cli is not None:
            run = cli.main("--store", url, "verify-log")
            data = cli.main("--store", url, "verify-log", "--json")
            assert data.json()["snapshot"]["status"] == want, what
            if want == "differs":
                line = assert_one_error_line(run)
                assert f"position {position}" in line and f"domain {first}" in line, line
                assert data.code == 1 and not data.json()["ok"], what
                assert data.json()["snapshot"]["differing"][0] == first, what
            else:
                assert run.code == 0 and run.stderr == "", (what, run)
        store = reopen()
        try:
            assert _saved(store) == saved, what  # verify-log wrote nothing
            rebuilt = rebuild(store)
            assert rebuilt.snapshot == want and rebuilt.written, (what, rebuilt)
            again = verify_store(store)
            assert again.ok and again.snapshot and again.snapshot.status == "matched", what
            reopened = Ledger.open(store, snapshot_every=0)  # closed with the store
            assert reopened.snapshot_status == "loaded" and _plain(reopened) == truth, what
        finally:
            store.close()
        if cli is not None:
            assert cli.main("--store", url, "verify-log").code == 0, what


def test_verify_log_on_a_broken_chain_names_the_break_not_the_snapshot(tmp_path: Path) -> None:
    from ledger.app.integrity import verify_store

    store, good = _with_snapshot(tmp_path)
    _forge(store, _saved(store)[1], "blob:checkpoints")
    raw = sqlite3.connect(str(tmp_path / "l.db"), isolation_level=None)
    with contextlib.closing(raw):
        raw.execute("UPDATE events SET payload = x'00' WHERE position = 3")
    report = verify_store(store)
    assert not report.ok and report.first_bad == 3 and "hash chain broken" in report.line()
    assert report.snapshot is not None and report.snapshot.status == "unchecked"
    store.close()


def test_a_by_name_to_an_unknown_stream_is_never_loaded(tmp_path: Path) -> None:
    store, good = _with_snapshot(tmp_path)
    _forge(store, _saved(store)[1], "by_name-unknown-stream")
    lg = Ledger.open(store, snapshot_every=0)
    assert lg.snapshot_status == "corrupt"
    assert [v.name for v in lg.list("vm0")] == [v.name for v in good.list("vm0")]
    store.close()


def test_verify_answers_from_the_events_not_from_a_forged_snapshot(
    reopen: Callable[[], EventStore], tmp_path: Path
) -> None:
    """`verify` compares the host with the domain's state folded from its own events; a
    projection (from the snapshot) that differs is reported, never recorded as drift."""
    from adapters.mock import MockHypervisor

    mock = MockHypervisor(str(tmp_path / "host.json"))
    mock.define("vm", ["vda"])
    hv = f"mock:///{tmp_path / 'host.json'}"
    with Ledger.open(reopen(), hv, snapshot_every=1) as lg:
        for cp in ("c1", "c2", "c3"):
            lg.create("vm", cp)
        assert [r.ok for r in lg.verify()] == [True]
    store = reopen()
    position, data = _saved(store)
    snap = snapshots.decode(data)
    state = snap.states[snap.by_name["vm"]]
    del state.checkpoints["c3"]
    state.checkpoints["c2"].children.clear()
    state.current = "c2"
    store.save_snapshot(snapshots.SNAPSHOT_KEY, position,
                        snapshots.encode(snap.states, snap.by_name, position, snap.hash))
    store.close()
    with Ledger.open(reopen(), hv, snapshot_every=0) as lg:
        assert lg.snapshot_status == "loaded" and "c3" not in lg.state("vm").checkpoints
        count = lg.event_count()
        (report,) = lg.verify(record=True)
        assert [f.kind for f in report.findings] == ["snapshot-mismatch"], report.findings
        assert "a rebuild replaces the snapshot" in report.findings[0].detail and not report.ok
        assert lg.event_count() == count and report.recorded == 0  # not drift: not recorded
    with Ledger.open(reopen(), hv, snapshot_every=0) as lg:
        rebuild(lg.store)
    with Ledger.open(reopen(), hv, snapshot_every=0) as lg:
        assert [r.ok for r in lg.verify()] == [True]
