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
import sqlite_utils

from backends._sqlite_inspect import APPLICATION_ID
from backends.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteStore, open_url
from ledger.app.plugins import open_store
from ledger.domain.errors import LedgerError
from ledger.log.store import EventStore

try:
    from .store_contract import (
        StoreContract,
        StoreFactory,
        files_footprint,
        process_worker,
        recs,
    )
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    from store_contract import (  # type: ignore[no-redef]
        StoreContract,
        StoreFactory,
        files_footprint,
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

    def missing(self) -> str:
        self.count += 1
        return f"sqlite:///{self.directory}/missing{self.count}.db"

    def footprint(self, url: str) -> dict[str, str]:
        return files_footprint(str(self.directory))

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


def _writes_refused_reads_served(path: Path) -> None:
    _refused(path, "cannot write")
    store = open_url(str(path), readonly=True)  # a read needs no write access
    assert store.last_position() == 60
    store.close()
    assert sorted(os.listdir(path.parent)) == [path.name]


def test_read_only_file(tmp_path: Path) -> None:
    path = _ledger(tmp_path / "x.db")
    if os.geteuid() == 0:  # root ignores modes; an immutable file refuses root too
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
            pytest.skip("running as root and chattr +i is unavailable")
        try:
            _writes_refused_reads_served(path)
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o444)
        _writes_refused_reads_served(path)


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


# --- read-only handles ----------------------------------------------------------------------


def _readonly_refused(path: Path, *words: str) -> None:
    before = _sha(path)
    listing = sorted(os.listdir(path.parent))
    with pytest.raises(LedgerError) as ei:
        open_url(str(path), readonly=True)
    assert ei.value.code == "STORE_ERROR" and "\n" not in str(ei.value), str(ei.value)
    for w in words:
        assert w in str(ei.value), str(ei.value)
    assert _sha(path) == before and sorted(os.listdir(path.parent)) == listing


def test_readonly_open_of_an_older_schema_says_a_write_command_upgrades_it(
    tmp_path: Path,
) -> None:
    """A schema-1 store (before the hash chain) is not migrated by a read: one line says a
    write command upgrades it, and the file is left as it was; a read-write open migrates."""
    path = tmp_path / "old.db"
    db = sqlite_utils.Database(str(path))
    MIGRATIONS[0](db)
    db.conn.execute("INSERT INTO events VALUES (1, 's', 'vm', 1, 'T', 1, 1.5, x'00')")
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute("PRAGMA user_version = 1")
    db.conn.commit()
    db.conn.close()
    _readonly_refused(path, "schema version 1", "write command")
    open_url(str(path)).close()
    store = open_url(str(path), readonly=True)
    assert store.last_position() == 1
    store.close()


@pytest.mark.parametrize("kind", ["empty-file", "empty-database"])
def test_readonly_open_of_a_store_never_written_is_refused(tmp_path: Path, kind: str) -> None:
    """An empty file (or an empty SQLite database) becomes a store on its first write; a
    read-only open does not make it one: one line says no ledger was written there yet."""
    path = tmp_path / "empty.db"
    path.write_bytes(b"")
    if kind == "empty-database":
        with contextlib.closing(sqlite3.connect(path)) as c:
            c.execute("PRAGMA user_version = 0")
            c.execute("VACUUM")
    _readonly_refused(path, "no ledger", "write command")


def test_readonly_handle_beside_a_writer_creates_nothing(tmp_path: Path) -> None:
    """While a writer has the store open (its -wal and -shm exist), a read-only handle reads
    through them, sees each new append, and adds no file; closed before the writer, it
    leaves the writer to checkpoint and remove them as usual."""
    path = _ledger(tmp_path / "x.db")
    writer = open_url(str(path))
    writer.append(recs("w", 1))
    listing = sorted(os.listdir(tmp_path))
    assert f"{path.name}-wal" in listing
    reader = open_url(str(path), readonly=True)
    assert reader.last_position() == 61
    writer.append(recs("w", 2), expected_version=1)
    assert reader.last_position() == 63 and reader.stream_version("w") == 3
    assert sum(len(p) for p in reader.scan()) == 63
    assert sorted(os.listdir(tmp_path)) == listing
    reader.close()
    writer.close()
    assert sorted(os.listdir(tmp_path)) == [path.name]


def come_and_go(path: str, n: int) -> None:
    """Run in a child process: ``n`` times open the store, append two records, close it."""
    for i in range(n):
        w = open_url(path)
        w.append(recs("w", 2, f"{i}-" + "y" * 2000), expected_version=2 * i)
        w.close()


@pytest.mark.parametrize("writer_came", [True, False])
def test_a_read_only_open_reads_the_file_again_when_a_writer_changed_it_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer_came: bool
) -> None:
    """Opening read-only reads the file's identity on an immutable connection, which ignores
    writers: a read that fails while a writer checkpoints into the file (it changes under
    it) is run again; a failure on a file that did not change is the file's own."""
    path = _ledger(tmp_path / "x.db")
    real = sqlite3.connect
    uris: list[str] = []

    def torn_first(database: str, *args: object, **kwargs: object) -> sqlite3.Connection:
        uris.append(database)
        if len(uris) == 1 or not writer_came:
            if writer_came:
                os.utime(path, ns=(1, 1))  # what a writer's checkpoint does to the file
            raise sqlite3.DatabaseError("database disk image is malformed")
        return real(database, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sqlite3, "connect", torn_first)
    if writer_came:
        open_url(str(path), readonly=True).close()
        assert "immutable=1" in uris[0] and len(uris) >= 2
    else:
        with pytest.raises(LedgerError, match="database disk image is malformed"):
            open_url(str(path), readonly=True)
        assert len(uris) == 1


def test_readonly_reads_stay_whole_while_writers_come_and_go(tmp_path: Path) -> None:
    """Read-only handles keep reading while a writer process opens the store, appends and
    closes it, again and again (each close checkpoints the WAL into the file and removes
    it): each read is a gapless prefix of the log, never an error or a torn mix of old and
    new pages, whether it ran on the file alone or through the WAL; a handle kept open
    sees every append."""
    path = _ledger(tmp_path / "x.db")
    kept = open_url(str(path), readonly=True)
    writer = multiprocessing.get_context("spawn").Process(target=come_and_go,
                                                           args=(str(path), 100))
    writer.start()
    seen = reads = 0
    try:
        while writer.is_alive() or reads == 0:
            reader = open_url(str(path), readonly=True)  # as each read command does
            try:
                got = [r.position for r in reader.read_all()]
            finally:
                reader.close()
            assert got == list(range(1, len(got) + 1)) and len(got) >= seen
            seen, reads = len(got), reads + 1
    finally:
        writer.join()
    assert writer.exitcode == 0
    assert kept.last_position() == 260 and kept.stream_version("w") == 200
    kept.close()
