"""The SQLite event store (``sqlite:///rel.db``, ``sqlite:////abs.db`` or a bare path).

Layout (schema version 2, kept in ``PRAGMA user_version``; ``PRAGMA application_id`` marks
the file as a ckpt-ledger store)::

    events(position INTEGER PRIMARY KEY, stream_id TEXT, stream_name TEXT,
           stream_version INTEGER, type TEXT, schema_version INTEGER, recorded_at REAL,
           payload BLOB, hash TEXT, UNIQUE(stream_id, stream_version))
                                                               + index on stream_id
    idempotency(key TEXT PRIMARY KEY, digest TEXT, first_position INTEGER,
                last_position INTEGER)
    snapshots(key TEXT PRIMARY KEY, position INTEGER, data BLOB)

``hash`` is the event's link in the hash chain (ledger/log/chain.py), computed inside the append
transaction from the previous position's hash. Migration 1 -> 2 adds the ``hash`` column and
fills it for every existing row, oldest first, and creates ``snapshots`` (one transaction).

The database runs in WAL mode with ``synchronous=FULL``. An append is one
``BEGIN IMMEDIATE`` transaction (check the expected version, insert, commit), and so is an
``append_many`` of several streams (every batch checked, then all inserted); positions are
assigned as ``max(position) + 1`` inside it and rows are never deleted, so they are gapless.

An existing file is inspected before anything is written to it (header bytes, then a
read-only connection): a directory, an unreadable or read-only file, a file that is not
SQLite, a truncated file, a SQLite database that is not a ledger, or a ledger written by a
newer schema version is refused with STORE_ERROR and left byte-for-byte untouched.

``lock(stream_id)`` takes an exclusive ``flock`` on the sidecar file ``<db path>.lock``: one
lock per store file (all streams share it), excluding other threads and processes alike.

Opened read-only (``open_url(url, readonly=True)``) the store is inspected the same way (the
file need not be writable), then read without writing a byte or creating a file
(backends/_sqlite_ro.py): no WAL switch, no migration, no ``-wal``/``-shm``/``.lock``. A file
that does not exist is refused as missing, an empty one (or an empty database) as holding no
ledger yet, one at an older schema version with a line saying a write command upgrades it
(a read does not migrate); every write through the handle is refused.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import sqlite_utils

from ledger.domain.errors import LedgerError
from ledger.log.chain import GENESIS
from ledger.log.intents import INTENT_PREFIX
from ledger.log.records import NewRecord, StoredRecord
from ledger.log.store import ANY, ExpectedVersion, ScanRow
from ledger.log.urls import path_of, scheme_of

from ._common import (
    Batch,
    chain_hashes,
    check_batch,
    check_batches,
    digest,
    file_lock,
    idempotency_mismatch,
    missing_store,
    plan,
    read_only,
)
from ._sqlite_inspect import APPLICATION_ID, BUSY_TIMEOUT_MS, check_identity, err, inspect
from ._sqlite_ro import ReadOnlyDatabase

_COLUMNS = (
    "position, stream_id, stream_name, stream_version, type, schema_version, recorded_at, "
    "payload, hash"
)

_SCAN = "position, stream_id, stream_version, schema_version, payload"  # a ScanRow
# rows per page of a scan: small enough that a page's payloads are still in the CPU's cache
# when the fold reads them (a 300k-event rebuild folds about 6% faster than with pages of 2,000)
SCAN_PAGE = 256
_INSERT = f"INSERT INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"


def _migrate_1(db: sqlite_utils.Database) -> None:
    db.execute(
        "CREATE TABLE events (position INTEGER PRIMARY KEY, stream_id TEXT NOT NULL, "
        "stream_name TEXT NOT NULL, stream_version INTEGER NOT NULL, type TEXT NOT NULL, "
        "schema_version INTEGER NOT NULL, recorded_at REAL NOT NULL, payload BLOB NOT NULL, "
        "UNIQUE(stream_id, stream_version))"
    )
    db.execute("CREATE INDEX events_stream_id ON events(stream_id)")
    db.execute(
        "CREATE TABLE idempotency (key TEXT PRIMARY KEY, digest TEXT NOT NULL, "
        "first_position INTEGER NOT NULL, last_position INTEGER NOT NULL)"
    )


def _migrate_2(db: sqlite_utils.Database) -> None:
    """Add the hash chain (filled in for every existing row) and the snapshots table."""
    db.execute("ALTER TABLE events ADD COLUMN hash TEXT NOT NULL DEFAULT ''")
    prev, after = GENESIS, 0
    while True:
        rows = [StoredRecord(*r) for r in db.execute(
            f"SELECT {_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT 1000",
            [after]).fetchall()]
        if not rows:
            break
        updates = list(chain_hashes(rows, prev))
        db.conn.executemany("UPDATE events SET hash = ? WHERE position = ?",
                            [(h, p) for p, h in updates])
        after, prev = updates[-1]
    db.execute("CREATE TABLE snapshots (key TEXT PRIMARY KEY, position INTEGER NOT NULL, "
               "data BLOB NOT NULL)")


# MIGRATIONS[i] takes a store from schema version i to i + 1, inside one transaction.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_migrate_1, _migrate_2]
SCHEMA_VERSION = len(MIGRATIONS)


class SqliteStore:
    """An :class:`ledger.log.store.EventStore` in one SQLite file; thread-safe, multi-process."""

    lock_timeout: float | None = None  # seconds lock() waits (None: ledger.log.locks' default)

    def __init__(self, path: str, url: str | None = None, readonly: bool = False) -> None:
        """Open (creating if absent, unless ``readonly``) the store at ``path``; STORE_ERROR
        if it is unusable."""
        self.path = path
        self.url = url or f"sqlite:///{path}"
        self.readonly = readonly
        self.lock_path = path + ".lock"
        self._mutex = threading.RLock()
        self._reader: ReadOnlyDatabase | None = None
        if readonly:
            self._open_readonly()
            return
        inspect(path, SCHEMA_VERSION)
        try:
            conn = sqlite3.connect(
                path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000,
                check_same_thread=False,
            )
        except sqlite3.Error as e:
            raise err(f"cannot open store {path}: {e}") from e
        self.db = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
        try:
            self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._migrate()
            if self.db.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
                raise err(f"cannot open store {path}: could not switch to WAL mode")
            self.db.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as e:
            conn.close()
            raise err(f"cannot open store {path}: {e}") from e
        except LedgerError:
            conn.close()
            raise
        self._identity = _identity(path)

    def _open_readonly(self) -> None:
        """Check that a ledger at this schema version is there; read it read-only."""
        if not os.path.lexists(self.path):
            raise missing_store(self.url)
        version = inspect(self.path, SCHEMA_VERSION, readonly=True)
        if not version:
            raise err(f"cannot read store {self.url}: it holds no ledger yet (an empty "
                      "database); a write command starts one there")
        if version < SCHEMA_VERSION:
            raise err(f"cannot read store {self.url}: it is at store schema version {version}, "
                      f"older than this ckpt-ledger's {SCHEMA_VERSION}; a write command "
                      "(e.g. `ckpt-ledger rebuild`) upgrades it, a read does not")
        self._reader = ReadOnlyDatabase(self.path, self.url)

    def _writable(self) -> None:
        if self.readonly:
            raise read_only(self.url)

    def gone(self) -> str | None:
        """Why the file this handle reads is no longer the store at its path (deleted, or
        replaced by another file), or None while it still is."""
        if self._reader is not None:
            return self._reader.gone()
        try:
            now = _identity(self.path)
        except FileNotFoundError:
            return f"{self.path} was deleted"
        except OSError as e:
            return f"{self.path} cannot be reached: {e.strerror}"
        return None if now == self._identity else f"{self.path} was replaced by another file"

    def _migrate(self) -> None:
        """Bring the schema to :data:`SCHEMA_VERSION` in one IMMEDIATE transaction."""
        with self._write():
            tables = set(self.db.table_names())
            app_id = self.db.execute("PRAGMA application_id").fetchone()[0]
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            # again, under the write lock: another process may have changed it meanwhile
            check_identity(self.path, tables, app_id, version, SCHEMA_VERSION)
            if version == SCHEMA_VERSION:
                return
            for step in MIGRATIONS[version:]:
                step(self.db)
            self.db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _write(self) -> AbstractContextManager[None]:
        return _Transaction(self.db.conn)

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._mutex:
            if self._reader is not None:
                try:
                    return self._reader.query(sql, params)
                except LedgerError as e:
                    cause = e.__cause__
                    if isinstance(cause, sqlite3.Error) and "decode" in str(cause):
                        raise self._read_error(cause, sql, params) from cause
                    raise
            try:
                return list(self.db.execute(sql, params).fetchall())
            except sqlite3.Error as e:
                raise self._read_error(e, sql, params) from e

    def _read_error(self, e: sqlite3.Error, sql: str, params: Sequence[Any]) -> LedgerError:
        """STORE_ERROR for a failed read; for text that is not UTF-8, naming the row (its
        first column, the position) and the column, found by reading the rows as bytes."""
        if "decode" not in str(e):
            return err(f"cannot read store {self.path}: {e}")
        with self._mutex:
            try:
                names, rows = self._rows_as_bytes(sql, params)
            except (sqlite3.Error, LedgerError):
                rows, names = [], []
        for row in rows:
            for name, value in zip(names, row, strict=True):
                if type(value) is _Text:
                    try:
                        value.decode("utf-8")
                    except UnicodeDecodeError:
                        return err(f"cannot read store {self.path}: event at position "
                                   f"{row[0]} is damaged: column {name} is not UTF-8 text")
        return err(f"cannot read store {self.path}: text that is not UTF-8")

    def _rows_as_bytes(self, sql: str, params: Sequence[Any]
                       ) -> tuple[list[str], list[tuple[Any, ...]]]:
        if self._reader is not None:
            return self._reader.query_as_bytes(sql, params, _Text)
        conn = self.db.conn
        conn.text_factory = _Text
        try:
            cur = conn.execute(sql, params)
            return [d[0] for d in cur.description], list(cur.fetchall())
        finally:
            conn.text_factory = str

    def append(
        self,
        records: Sequence[NewRecord],
        expected_version: ExpectedVersion = ANY,
        idempotency_key: str | None = None,
    ) -> list[StoredRecord]:
        """Append records of one stream in one ``BEGIN IMMEDIATE`` transaction."""
        self._writable()
        stream_id = check_batch(records)
        if stream_id is None:
            return []
        with self._mutex:
            try:
                with self._write():
                    return self._append(stream_id, records, expected_version, idempotency_key)
            except sqlite3.Error as e:
                raise err(f"cannot append to store {self.path}: {e}") from e

    def append_many(
        self, batches: Sequence[tuple[Sequence[NewRecord], ExpectedVersion]]
    ) -> list[list[StoredRecord]]:
        """Append several one-stream batches in one ``BEGIN IMMEDIATE`` transaction."""
        self._writable()
        checked = check_batches(batches)
        if all(b is None for b in checked):
            return [[] for _ in checked]
        with self._mutex:
            try:
                with self._write():
                    return self._insert(checked)
            except sqlite3.Error as e:
                raise err(f"cannot append to store {self.path}: {e}") from e

    def _append(
        self, stream_id: str, records: Sequence[NewRecord], expected: ExpectedVersion,
        key: str | None,
    ) -> list[StoredRecord]:
        ex = self.db.execute
        if key is not None:
            row = ex("SELECT digest, first_position, last_position FROM idempotency "
                     "WHERE key = ?", [key]).fetchone()
            if row is not None:
                if row[0] != digest(records):
                    raise idempotency_mismatch(key)
                rows = ex(f"SELECT {_COLUMNS} FROM events WHERE position BETWEEN ? AND ? "
                          "ORDER BY position", [row[1], row[2]]).fetchall()
                return [StoredRecord(*r) for r in rows]
        [new] = self._insert([(stream_id, records, expected)])
        if key is not None:
            ex("INSERT INTO idempotency (key, digest, first_position, last_position) "
               "VALUES (?, ?, ?, ?)", [key, digest(records), new[0].position, new[-1].position])
        return new

    def _insert(self, batches: Sequence[Batch | None]) -> list[list[StoredRecord]]:
        """Check and insert ``batches`` one after another (inside the caller's transaction,
        which a VersionConflict in any of them rolls back whole); their stored records."""
        ex = self.db.conn.execute
        streams = list({b[0] for b in batches if b is not None})
        current: dict[str, int] = {}
        if len(streams) == 1:  # one append: its stream's version and the head, one query
            row = ex("SELECT (SELECT max(stream_version) FROM events WHERE stream_id = ?), "
                     "position, hash FROM events ORDER BY position DESC LIMIT 1",
                     streams).fetchone()
            if row is not None and row[0] is not None:
                current[streams[0]] = row[0]
            head = row[1:] if row is not None else None
        else:
            for i in range(0, len(streams), 500):
                chunk = streams[i:i + 500]
                current.update(ex(
                    "SELECT stream_id, max(stream_version) FROM events WHERE stream_id IN "
                    f"({','.join('?' * len(chunk))}) GROUP BY stream_id", chunk).fetchall())
            head = ex("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1"
                      ).fetchone()
        last, prev = head if head is not None else (0, GENESIS)
        out = plan(batches, current, last + 1, prev)
        rows = [(r.position, r.stream_id, r.stream_name, r.stream_version, r.type,
                 r.schema_version, r.recorded_at, r.payload, r.hash) for new in out for r in new]
        if len(rows) == 1:
            ex(_INSERT, rows[0])
        else:
            self.db.conn.executemany(_INSERT, rows)
        return out

    def read_all(self, after: int = 0, limit: int | None = None) -> Iterator[StoredRecord]:
        """Records with position > ``after``, oldest first, fetched in pages of 500."""
        remaining = limit
        while remaining is None or remaining > 0:
            page = 500 if remaining is None else min(500, remaining)
            rows = self._query(f"SELECT {_COLUMNS} FROM events WHERE position > ? "
                               "ORDER BY position LIMIT ?", [after, page])
            for r in rows:
                yield StoredRecord(*r)
            if len(rows) < page:
                return
            after = rows[-1][0]
            if remaining is not None:
                remaining -= len(rows)

    def scan(self, after: int = 0) -> Iterator[list[ScanRow]]:
        """Every record after ``after`` as lean rows, in pages of :data:`SCAN_PAGE` (see
        EventStore.scan).

        Each page is one indexed ``SELECT ... LIMIT`` (on this store's connection, under
        its mutex for that query only, so a long fold never blocks this store's writes). A
        second connection reading the rest in one statement hit SQLITE_IOERR_SHORT_READ under
        concurrent writers from processes holding two stores on one file.
        """
        return self._pages(after)

    def _pages(self, after: int) -> Iterator[list[ScanRow]]:
        sql = f"SELECT {_SCAN} FROM events WHERE position > ? ORDER BY position LIMIT {SCAN_PAGE}"
        while True:
            rows = self._query(sql, [after])
            if rows:
                yield rows
            if len(rows) < SCAN_PAGE:
                return
            after = rows[-1][0]

    def read_stream(self, stream_id: str, after_version: int = 0) -> Iterator[StoredRecord]:
        """Records of one stream with version > ``after_version``, oldest first."""
        while True:
            rows = self._query(f"SELECT {_COLUMNS} FROM events WHERE stream_id = ? AND "
                               "stream_version > ? ORDER BY stream_version LIMIT 500",
                               [stream_id, after_version])
            for r in rows:
                yield StoredRecord(*r)
            if len(rows) < 500:
                return
            after_version = rows[-1][3]

    def stream_version(self, stream_id: str) -> int:
        """The stream's current version (0 when it has no events)."""
        return int(self._query("SELECT coalesce(max(stream_version), 0) FROM events "
                               "WHERE stream_id = ?", [stream_id])[0][0])

    def last_position(self) -> int:
        """The highest position (0 when empty)."""
        return int(self._query("SELECT coalesce(max(position), 0) FROM events")[0][0])

    def lock(self, stream_id: str) -> AbstractContextManager[None]:
        """An exclusive flock on ``<db path>.lock``: one lock for every stream of the file,
        waited for at most ``lock_timeout`` seconds (ledger/log/locks.py)."""
        self._writable()
        return file_lock(self.lock_path, self.lock_timeout)

    def lock_all(self, stream_ids: Sequence[str]) -> AbstractContextManager[None]:
        """The one file lock, which covers every stream."""
        self._writable()
        return file_lock(self.lock_path, self.lock_timeout)

    def save_snapshot(self, key: str, position: int, data: bytes) -> None:
        """Replace the ``snapshots`` row of ``key`` in one transaction (an intent's without
        waiting for the disk: ``synchronous = NORMAL`` for it, see ledger/log/intents.py)."""
        self._writable()
        relaxed = key.startswith(INTENT_PREFIX)
        with self._mutex:
            try:
                if relaxed:
                    self.db.execute("PRAGMA synchronous = NORMAL")
                try:
                    with self._write():
                        self.db.execute("INSERT OR REPLACE INTO snapshots (key, position, data) "
                                        "VALUES (?, ?, ?)", [key, int(position), bytes(data)])
                finally:
                    if relaxed:
                        self.db.execute("PRAGMA synchronous = FULL")
            except sqlite3.Error as e:
                raise err(f"cannot write a snapshot to store {self.path}: {e}") from e

    def load_snapshot(self, key: str) -> tuple[int, bytes] | None:
        """The ``(position, data)`` of ``key``'s row in ``snapshots``, or None."""
        rows = self._query("SELECT position, data FROM snapshots WHERE key = ?", [key])
        if not rows:
            return None
        return int(rows[0][0]), bytes(rows[0][1])

    def close(self) -> None:
        """Close the connection (the last one out checkpoints the WAL)."""
        with self._mutex:
            if self._reader is not None:
                self._reader.close()
            else:
                self.db.conn.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Text(bytes):
    """A TEXT value read as its bytes (``text_factory``), told apart from a BLOB."""


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on any exception."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
                return
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")


def _identity(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def open_url(url: str, readonly: bool = False) -> SqliteStore:
    """Open ``sqlite:///rel.db``, ``sqlite:////abs.db`` or a bare path (``readonly``: only
    to read it; see the module docstring)."""
    scheme = scheme_of(url)
    if scheme not in (None, "sqlite"):
        raise LedgerError("STORE_URL", f"'{url}' is not a sqlite:/// URL")
    if url.startswith("sqlite:///:memory:") or url == ":memory:":
        raise LedgerError("STORE_URL", "an in-memory SQLite store is not supported; "
                          "use memory://")
    path = path_of(url)
    return SqliteStore(path, url, readonly)
