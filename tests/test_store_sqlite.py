"""The sqlite:/// store: the shared contract, then hostile files it must refuse untouched."""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteStore, open_url
from ledger.errors import LedgerError
from ledger.plugins import open_store
from ledger.ports import EventStore

try:
    from .store_contract import StoreContract, StoreFactory, process_worker, recs
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    from store_contract import (  # type: ignore[no-redef]
        StoreContract,
        StoreFactory,
        process_worker,
        recs,
    )


class SqliteFactory(StoreFactory):
    """Fresh SQLite stores in a temporary directory."""

    module = "backends.sqlite"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0

    def __call__(self) -> EventStore:
        self.count += 1
        return open_url(f"sqlite:///{self.directory}/store{self.count}.db")

    @contextlib.contextmanager
    def _failing(self, store: SqliteStore) -> Iterator[None]:
        target = store.last_position() + 2  # the second record of the next append
        store.db.execute(
            f"CREATE TEMP TRIGGER boom BEFORE INSERT ON main.events WHEN NEW.position = "
            f"{target} BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
        try:
            yield
        finally:
            store.db.execute("DROP TRIGGER temp.boom")

    def inject_failure(self, store: EventStore) -> contextlib.AbstractContextManager[None]:
        assert isinstance(store, SqliteStore)
        return self._failing(store)


@pytest.fixture
def store_factory(tmp_path: Path) -> SqliteFactory:
    """The SQLite backend's factory."""
    return SqliteFactory(tmp_path)


class TestSqliteStore(StoreContract):
    """The contract, run against SqliteStore."""


# --- layout, URLs ------------------------------------------------------------------------


def test_layout_and_pragmas(tmp_path: Path) -> None:
    store = open_url(str(tmp_path / "l.db"))
    db = store.db
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == len(MIGRATIONS)
    assert set(db.table_names()) == {"events", "idempotency", "snapshots"}
    assert [c.name for c in db["events"].columns] == [
        "position", "stream_id", "stream_name", "stream_version", "type", "schema_version",
        "recorded_at", "payload", "hash"]
    assert [c.name for c in db["snapshots"].columns] == ["key", "position", "data"]
    assert db["events"].pks == ["position"]
    assert [c.name for c in db["idempotency"].columns] == [
        "key", "digest", "first_position", "last_position"]
    assert any(i.columns == ["stream_id"] for i in db["events"].indexes)
    store.close()


def test_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for url, path in [("sqlite:///rel.db", "rel.db"), (f"sqlite:///{tmp_path}/abs.db",
                      f"{tmp_path}/abs.db"), ("bare.db", "bare.db")]:
        store = open_store(url)
        assert isinstance(store, SqliteStore) and store.path == path
        store.append(recs("a", 1))
        store.close()
        assert (tmp_path / os.path.basename(path)).exists()
    for bad in ("sqlite://host/x.db", "sqlite://", "msgpack:///x"):
        with pytest.raises(LedgerError) as ei:
            open_url(bad)
        assert ei.value.code == "STORE_URL"


def test_lock_uses_a_sidecar_file(tmp_path: Path) -> None:
    store = open_url(str(tmp_path / "x.db"))
    with store.lock("a"):
        assert (tmp_path / "x.db.lock").exists()
    store.close()


def test_positions_stay_gapless_after_a_rolled_back_append(tmp_path: Path) -> None:
    store = open_url(str(tmp_path / "x.db"))
    store.append(recs("a", 2))
    with pytest.raises(LedgerError):
        store.append(recs("a", 2, "x"), expected_version=0)
    store.append(recs("b", 1))
    assert [r.position for r in store.read_all()] == [1, 2, 3]
    store.close()


# --- hostile inputs ----------------------------------------------------------------------


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _refused(path: Path, *words: str) -> LedgerError:
    """Open ``path``, expect a one-line STORE_ERROR, and check nothing was changed."""
    before = _sha(path) if path.is_file() else None
    listing = sorted(os.listdir(path.parent))
    with pytest.raises(LedgerError) as ei:
        open_url(str(path))
    err = ei.value
    assert err.code == "STORE_ERROR", err
    assert "\n" not in str(err) and str(path) in str(err)
    for w in words:
        assert w in str(err), str(err)
    if before is not None:
        assert _sha(path) == before
    assert sorted(os.listdir(path.parent)) == listing
    return err


def _ledger(path: Path) -> Path:
    store = open_url(str(path))
    for i in range(20):
        store.append(recs(f"s{i}", 3, "x" * 500))
    store.close()
    return path


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(LedgerError) as ei:
        open_url(str(tmp_path / "nope" / "x.db"))
    assert ei.value.code == "STORE_ERROR" and "does not exist" in str(ei.value)
    assert not (tmp_path / "nope").exists()


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "d.db").mkdir()
    _refused(tmp_path / "d.db", "directory")


def test_garbage_and_text_files(tmp_path: Path) -> None:
    (tmp_path / "g.db").write_bytes(os.urandom(8192))
    _refused(tmp_path / "g.db", "file is not a database")
    (tmp_path / "t.db").write_text("hello, I am a text file\n" * 10)
    _refused(tmp_path / "t.db", "file is not a database")
    (tmp_path / "h.db").write_bytes(b"SQLite format 3\x00" + b"\xff" * 20)
    _refused(tmp_path / "h.db", "not a database")


@pytest.mark.parametrize("cut", ["header", "half-page", "whole-pages"])
def test_truncated_store(tmp_path: Path, cut: str) -> None:
    path = _ledger(tmp_path / "x.db")
    data = path.read_bytes()
    page = int.from_bytes(data[16:18], "big")
    size = {"header": 50, "half-page": 2 * page + page // 2, "whole-pages": 3 * page}[cut]
    path.write_bytes(data[:size])
    _refused(path)


def test_sqlite_db_that_is_not_a_ledger(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(path)) as c:
        c.execute("CREATE TABLE things (x)")
        c.execute("INSERT INTO things VALUES (1)")
        c.commit()
    _refused(path, "not a ckpt-ledger store")
    path2 = tmp_path / "events.db"  # an events table alone does not make a ledger
    with contextlib.closing(sqlite3.connect(path2)) as c:
        c.execute("CREATE TABLE events (position INTEGER PRIMARY KEY)")
        c.commit()
    _refused(path2, "not a ckpt-ledger store")


def test_newer_schema_version(tmp_path: Path) -> None:
    path = _ledger(tmp_path / "x.db")
    with contextlib.closing(sqlite3.connect(path)) as c:
        c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        c.commit()
    _refused(path, "newer", f"schema version {SCHEMA_VERSION + 1}")


def test_read_only_file(tmp_path: Path) -> None:
    path = _ledger(tmp_path / "x.db")
    if os.geteuid() == 0:  # root ignores modes; an immutable file refuses root too
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
            pytest.skip("running as root and chattr +i is unavailable")
        try:
            _refused(path, "cannot write")
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o444)
        _refused(path, "cannot write")


def test_unreadable_file(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can read any file")
    path = _ledger(tmp_path / "x.db")
    path.chmod(0)
    try:
        with pytest.raises(LedgerError) as ei:
            open_url(str(path))
        assert ei.value.code == "STORE_ERROR" and "\n" not in str(ei.value)
    finally:
        path.chmod(0o644)


def test_empty_file_becomes_a_store(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.write_bytes(b"")
    store = open_url(str(path))
    store.append(recs("a", 1))
    store.close()
    assert open_url(str(path)).last_position() == 1


def test_processes_racing_to_create_the_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/new.db"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.starmap(process_worker, [("backends.sqlite", url, w, 3) for w in range(4)])
    store = open_url(url)
    assert [r.position for r in store.read_all()] == list(range(1, 25))
    assert store.stream_version("shared") == 12
    store.close()
