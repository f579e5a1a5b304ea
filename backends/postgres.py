"""The PostgreSQL event store: ``postgresql://user@host:5432/db?schema=name`` (psycopg 3).

``schema`` is this store's own URL parameter (removed before connecting; default
``public``): every table lives in that schema, so one database can hold several ledgers
(the tests use one schema each and drop it afterwards). Other query parameters go to libpq.

Tables (schema version 2): ``events(position BIGINT PRIMARY KEY, stream_id, stream_name,
stream_version, type, schema_version, recorded_at DOUBLE PRECISION, payload BYTEA, hash TEXT,
UNIQUE(stream_id, stream_version))``, ``idempotency(key PRIMARY KEY, digest,
first_position, last_position)``, ``snapshots(key PRIMARY KEY, position, data BYTEA)`` and
``ckpt_ledger_meta(version)``. ``hash`` is the event's link in the hash chain
(ledger/log/chain.py), computed under the append's table lock; migration 1 -> 2 adds the column,
fills it for every existing row (oldest first) and creates ``snapshots``, in one transaction.

Positions are not a sequence: an append takes ``LOCK TABLE events IN EXCLUSIVE MODE``
(readers' ACCESS SHARE is not blocked) and writes ``max(position) + 1`` onwards, so
commit order equals position order and a reader tailing positions never skips an event
that commits later (docs/event-store.md §1.3). ``append_many`` is the same, one transaction
for all its batches. Each append ``NOTIFY``s (once) the channel
``ckpt_ledger_<schema>``, which :meth:`PostgresStore.follow` ``LISTEN``s to.
``lock(stream_id)`` is ``pg_advisory_lock(hashtext(schema), hashtext(stream_id))`` on a
connection of its own, so it excludes other threads and processes alike.

Opened read-only (``open_url(url, readonly=True)``) the session runs with
``default_transaction_read_only`` on and nothing is created or migrated: a schema holding no
ledger is refused as not existing, one at an older schema version with a line saying that a
write command upgrades it, and every write through the handle is refused.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC
from typing import Any
from urllib.parse import unquote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ledger.domain.errors import LedgerError
from ledger.log import locks
from ledger.log.chain import GENESIS
from ledger.log.intents import INTENT_PREFIX
from ledger.log.records import NewRecord, StoredRecord
from ledger.log.store import ANY, ExpectedVersion, ScanRow

from ._common import (
    Batch,
    chain_hashes,
    check_batch,
    check_batches,
    digest,
    idempotency_mismatch,
    missing_store,
    one_line,
    plan,
    read_only,
)

_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,49}$")
_COLUMNS = ("position, stream_id, stream_name, stream_version, type, schema_version, "
            "recorded_at, payload, hash")
_BACKFILL = "backfill hashes"  # a migration step run in Python: PostgresStore._backfill
MIGRATIONS: list[list[str]] = [[
    "CREATE TABLE {s}.events (position BIGINT PRIMARY KEY, stream_id TEXT NOT NULL, "
    "stream_name TEXT NOT NULL, stream_version INTEGER NOT NULL, type TEXT NOT NULL, "
    "schema_version INTEGER NOT NULL, recorded_at DOUBLE PRECISION NOT NULL, "
    "payload BYTEA NOT NULL, UNIQUE (stream_id, stream_version))",
    "CREATE TABLE {s}.idempotency (key TEXT PRIMARY KEY, digest TEXT NOT NULL, "
    "first_position BIGINT NOT NULL, last_position BIGINT NOT NULL)",
    "CREATE TABLE {s}.ckpt_ledger_meta (version INTEGER NOT NULL)",
    "INSERT INTO {s}.ckpt_ledger_meta VALUES (0)",
], [
    "ALTER TABLE {s}.events ADD COLUMN hash TEXT NOT NULL DEFAULT ''",
    _BACKFILL,
    "CREATE TABLE {s}.snapshots (key TEXT PRIMARY KEY, position BIGINT NOT NULL, "
    "data BYTEA NOT NULL)",
]]
SCHEMA_VERSION = len(MIGRATIONS)


_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


def parse_url(url: str) -> tuple[str, str, str]:
    """``(libpq conninfo, schema, url for messages)``; the last carries no password.

    The URL goes to libpq as written (any form it takes: several hosts, IPv6, a socket
    folder as ``?host=`` or percent-encoded, its parameters) minus this store's own
    ``schema`` parameter; ``connect_timeout=10`` is added when absent. STORE_URL (without
    the password) when libpq would refuse it.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise LedgerError("STORE_URL", f"'{_no_password(url)}' is not a postgresql:// URL")
    where, _, query = rest.partition("?")
    kept: list[str] = []
    schema = "public"
    for item in query.split("&") if query else []:
        key, _, value = item.partition("=")
        if unquote(key) == "schema":
            schema = unquote(value)
        elif item:
            kept.append(item)
    if not _SCHEMA_NAME.match(schema):
        raise LedgerError("STORE_URL", f"schema name '{schema}' is not a plain identifier "
                          "(letters, digits, _; at most 50)")
    shown = "postgresql://" + _no_password(where) + "?" + "&".join(
        [i for i in kept if unquote(i.partition("=")[0]) != "password"] + [f"schema={schema}"])
    if not any(unquote(i.partition("=")[0]) == "connect_timeout" for i in kept):
        kept.append("connect_timeout=10")
    conninfo = f"postgresql://{where}?{'&'.join(kept)}"
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error as e:
        raise LedgerError("STORE_URL", f"'{shown}' is not a PostgreSQL URL libpq accepts: "
                          f"{_hide(one_line(e), url, None)}") from None
    return make_conninfo("", **params), schema, shown


def _no_password(where: str) -> str:
    """``user:password@host...`` without ``:password``."""
    netloc, slash, tail = where.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if at:
        netloc = userinfo.partition(":")[0] + "@" + hosts
    return netloc + slash + tail


def _password(conninfo: str) -> str | None:
    """The password in ``conninfo`` (libpq's key=value form), if any."""
    try:
        return str(conninfo_to_dict(conninfo).get("password") or "") or None
    except psycopg.Error:
        return None


def _hide(text: str, url: str, password: str | None) -> str:
    """``text`` with every form of the password (``password``, the URL's) masked."""
    secrets = {password} if password else set()
    userinfo = url.partition("://")[2].partition("/")[0].rpartition("@")[0]
    if ":" in userinfo:
        raw = userinfo.partition(":")[2]
        secrets |= {raw, unquote(raw)}
    query = url.partition("?")[2]
    for item in query.split("&"):
        key, _, value = item.partition("=")
        if unquote(key) == "password" and value:
            secrets |= {value, unquote(value)}
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


class PostgresStore:
    """An :class:`ledger.log.store.EventStore` in PostgreSQL; thread-safe, multi-process."""

    lock_timeout: float | None = None  # seconds lock() waits (None: ledger.log.locks' default)

    def __init__(self, url: str, readonly: bool = False) -> None:
        """Connect, create or migrate the schema's tables (read-only: check that they are
        there, at this version); STORE_ERROR when that fails."""
        self.readonly = readonly
        self._conninfo, self.schema, self.display = parse_url(url)
        self.url = self.display  # what messages show: never the password
        self._given = url
        self._password = _password(self._conninfo)
        self.channel = f"ckpt_ledger_{self.schema}".lower()
        self._s = sql.Identifier(self.schema)
        self._mutex = threading.RLock()
        self.created: str | None = None  # what opening created: "schema", "tables" or None
        self._conn = self._connect()
        try:
            if readonly:
                self._check_readable()
            else:
                self._migrate()
        except BaseException:
            self._conn.close()
            raise

    def _err(self, what: str, e: BaseException) -> LedgerError:
        detail = _hide(one_line(e), self._given, self._password)
        return LedgerError("STORE_ERROR", f"{what} {self.display}: {detail}")

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self._conninfo, autocommit=True)
        except psycopg.Error as e:
            raise self._err("cannot connect to PostgreSQL store", e) from e

    def _sql(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(s=self._s)

    def _migrate(self) -> None:
        c = self._conn
        try:
            with c.transaction():
                c.execute("SELECT pg_advisory_xact_lock(hashtext('ckpt_ledger'), hashtext(%s))",
                          [self.schema])
                tables = {r[0] for r in c.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                    [self.schema])}
                version = 0
                if "ckpt_ledger_meta" in tables:
                    row = c.execute(self._sql("SELECT max(version) FROM {s}.ckpt_ledger_meta"))
                    version = (row.fetchone() or [0])[0] or 0
                elif {"events", "idempotency"} & tables:
                    raise LedgerError("STORE_ERROR", f"cannot open store {self.display}: the "
                                      "schema has tables but is not a ckpt-ledger store")
                if version > SCHEMA_VERSION:
                    raise LedgerError(
                        "STORE_ERROR", f"cannot open store {self.display}: written by a newer "
                        f"ckpt-ledger (store schema version {version}; this version "
                        f"understands up to {SCHEMA_VERSION})")
                if version == SCHEMA_VERSION:
                    return
                if not tables:
                    self.created = "schema" if c.execute(
                        "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s",
                        [self.schema]).fetchone() is None else "tables"
                c.execute(self._sql("CREATE SCHEMA IF NOT EXISTS {s}"))
                for step in MIGRATIONS[version:]:
                    for statement in step:
                        if statement == _BACKFILL:
                            self._backfill()
                        else:
                            c.execute(self._sql(statement))
                c.execute(self._sql("UPDATE {s}.ckpt_ledger_meta SET version = %s"),
                          [SCHEMA_VERSION])
        except psycopg.Error as e:
            raise self._err("cannot open store", e) from e

    def _check_readable(self) -> None:
        """Make the session read-only; refuse a schema without a ledger at this version."""
        c = self._conn
        try:
            c.execute("SET default_transaction_read_only = on")
            tables = {r[0] for r in c.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                [self.schema])}
            if "ckpt_ledger_meta" not in tables:
                if {"events", "idempotency"} & tables:
                    raise LedgerError("STORE_ERROR", f"cannot open store {self.display}: the "
                                      "schema has tables but is not a ckpt-ledger store")
                raise missing_store(self.display)
            row = c.execute(self._sql("SELECT max(version) FROM {s}.ckpt_ledger_meta"))
            version = (row.fetchone() or [0])[0] or 0
        except psycopg.Error as e:
            raise self._err("cannot open store", e) from e
        if version > SCHEMA_VERSION:
            raise LedgerError(
                "STORE_ERROR", f"cannot open store {self.display}: written by a newer "
                f"ckpt-ledger (store schema version {version}; this version understands up "
                f"to {SCHEMA_VERSION})")
        if version < SCHEMA_VERSION:
            raise LedgerError(
                "STORE_ERROR", f"cannot read store {self.display}: it is at store schema "
                f"version {version}, older than this ckpt-ledger's {SCHEMA_VERSION}; a write "
                "command (e.g. `ckpt-ledger rebuild`) upgrades it, a read does not")

    def _writable(self) -> None:
        if self.readonly:
            raise read_only(self.display)

    def _backfill(self) -> None:
        """Fill ``hash`` for rows stored before events carried one (in the migration's
        transaction, oldest first)."""
        c, prev, after = self._conn, GENESIS, 0
        while True:
            rows = [StoredRecord(*r) for r in c.execute(self._sql(
                f"SELECT {_COLUMNS} FROM {{s}}.events WHERE position > %s ORDER BY position "
                "LIMIT 1000"), [after]).fetchall()]
            if not rows:
                return
            updates = list(chain_hashes(rows, prev))
            with c.cursor() as cur:
                cur.executemany(self._sql("UPDATE {s}.events SET hash = %s WHERE position = %s"),
                                [(h, p) for p, h in updates])
            after, prev = updates[-1]

    def _query(self, text: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._mutex:
            try:
                return self._conn.execute(self._sql(text), params).fetchall()
            except psycopg.Error as e:
                raise self._err("cannot read store", e) from e

    def append(
        self,
        records: Sequence[NewRecord],
        expected_version: ExpectedVersion = ANY,
        idempotency_key: str | None = None,
    ) -> list[StoredRecord]:
        """Append records of one stream in one transaction holding the table's EXCLUSIVE lock."""
        self._writable()
        stream_id = check_batch(records)
        if stream_id is None:
            return []
        with self._mutex:
            try:
                with self._conn.transaction():
                    return self._append(stream_id, records, expected_version, idempotency_key)
            except psycopg.Error as e:
                raise self._err("cannot append to store", e) from e

    def append_many(
        self, batches: Sequence[tuple[Sequence[NewRecord], ExpectedVersion]]
    ) -> list[list[StoredRecord]]:
        """Append several one-stream batches in one transaction holding the table's
        EXCLUSIVE lock (one ``NOTIFY``)."""
        self._writable()
        checked = check_batches(batches)
        if all(b is None for b in checked):
            return [[] for _ in checked]
        with self._mutex:
            try:
                with self._conn.transaction():
                    self._lock_events()
                    out = self._insert(checked)
                    self._notify(max(new[-1].position for new in out if new))
                    return out
            except psycopg.Error as e:
                raise self._err("cannot append to store", e) from e

    def _lock_events(self) -> None:
        """Take the events table's EXCLUSIVE lock for the rest of the transaction."""
        self._conn.execute("SET LOCAL lock_timeout = '60s'")
        self._conn.execute(self._sql("LOCK TABLE {s}.events IN EXCLUSIVE MODE"))

    def _notify(self, position: int) -> None:
        """Wake :meth:`follow`ers (delivered when the transaction commits)."""
        self._conn.execute("SELECT pg_notify(%s, %s)", [self.channel, str(position)])

    def _append(
        self, stream_id: str, records: Sequence[NewRecord], expected: ExpectedVersion,
        key: str | None,
    ) -> list[StoredRecord]:
        c = self._conn
        self._lock_events()
        if key is not None:
            row = c.execute(self._sql("SELECT digest, first_position, last_position "
                                      "FROM {s}.idempotency WHERE key = %s"), [key]).fetchone()
            if row is not None:
                if row[0] != digest(records):
                    raise idempotency_mismatch(key)
                rows = c.execute(self._sql(f"SELECT {_COLUMNS} FROM {{s}}.events WHERE position "
                                           "BETWEEN %s AND %s ORDER BY position"), row[1:])
                return [StoredRecord(*r) for r in rows]
        [new] = self._insert([(stream_id, records, expected)])
        if key is not None:
            c.execute(self._sql("INSERT INTO {s}.idempotency VALUES (%s, %s, %s, %s)"),
                      [key, digest(records), new[0].position, new[-1].position])
        self._notify(new[-1].position)
        return new

    def _insert(self, batches: Sequence[Batch | None]) -> list[list[StoredRecord]]:
        """Check and insert ``batches`` one after another, under the table lock the caller's
        transaction holds (a VersionConflict in any of them rolls it back whole)."""
        c = self._conn
        streams = sorted({b[0] for b in batches if b is not None})
        current = {sid: version for sid, version in c.execute(self._sql(
            "SELECT stream_id, max(stream_version) FROM {s}.events WHERE stream_id = ANY(%s) "
            "GROUP BY stream_id"), [streams])}
        row = c.execute(self._sql("SELECT position, hash FROM {s}.events "
                                  "ORDER BY position DESC LIMIT 1")).fetchone()
        last, prev = (row[0], row[1]) if row else (0, GENESIS)
        out = plan(batches, current, last + 1, prev)
        with c.cursor() as cur:
            cur.executemany(
                self._sql(f"INSERT INTO {{s}}.events ({_COLUMNS}) "
                          "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"),
                [(r.position, r.stream_id, r.stream_name, r.stream_version, r.type,
                  r.schema_version, r.recorded_at, r.payload, r.hash)
                 for new in out for r in new])
        return out

    def read_all(self, after: int = 0, limit: int | None = None) -> Iterator[StoredRecord]:
        """Records with position > ``after``, oldest first, fetched in pages of 500."""
        left = limit
        while left is None or left > 0:
            page = 500 if left is None else min(500, left)
            rows = self._query(f"SELECT {_COLUMNS} FROM {{s}}.events WHERE position > %s "
                               "ORDER BY position LIMIT %s", [after, page])
            yield from (StoredRecord(*r) for r in rows)
            if len(rows) < page:
                return
            after = rows[-1][0]
            left = None if left is None else left - len(rows)

    def scan(self, after: int = 0) -> Iterator[list[ScanRow]]:
        """Every record after ``after`` as lean rows, in pages of 2000 (see EventStore.scan)."""
        while True:
            rows = self._query("SELECT position, stream_id, stream_version, schema_version, "
                               "payload FROM {s}.events WHERE position > %s "
                               "ORDER BY position LIMIT 2000", [after])
            if rows:
                yield [(r[0], r[1], r[2], r[3], bytes(r[4])) for r in rows]
            if len(rows) < 2000:
                return
            after = rows[-1][0]

    def read_stream(self, stream_id: str, after_version: int = 0) -> Iterator[StoredRecord]:
        """Records of one stream with version > ``after_version``, oldest first."""
        while True:
            rows = self._query(f"SELECT {_COLUMNS} FROM {{s}}.events WHERE stream_id = %s AND "
                               "stream_version > %s ORDER BY stream_version LIMIT 500",
                               [stream_id, after_version])
            yield from (StoredRecord(*r) for r in rows)
            if len(rows) < 500:
                return
            after_version = rows[-1][3]

    def stream_version(self, stream_id: str) -> int:
        """The stream's current version (0 when it has no events)."""
        return int(self._query("SELECT coalesce(max(stream_version), 0) FROM {s}.events "
                               "WHERE stream_id = %s", [stream_id])[0][0])

    def last_position(self) -> int:
        """The highest position (0 when empty)."""
        return int(self._query("SELECT coalesce(max(position), 0) FROM {s}.events", [])[0][0])

    def lock(self, stream_id: str) -> AbstractContextManager[None]:
        """``pg_advisory_lock(hashtext(schema), hashtext(stream_id))`` on its own connection,
        waited for at most ``lock_timeout`` seconds (ledger/log/locks.py). The connection's
        ``application_name`` (unless the URL sets one) says which process holds it."""
        return self.lock_all([stream_id])

    @contextmanager
    def lock_all(self, stream_ids: Sequence[str]) -> Iterator[None]:
        """Each stream's advisory lock, in sorted order, on one connection of its own."""
        self._writable()
        limit = locks.timeout_from_env() if self.lock_timeout is None else self.lock_timeout
        conn = self._connect()
        try:
            try:
                if "application_name" not in self._conninfo:
                    name = f"ckpt-ledger pid {os.getpid()}: {locks.command_line()}"
                    conn.execute("SELECT set_config('application_name', %s, false)",
                                 [name[:63]])
                for stream_id in sorted(set(stream_ids)):
                    key = [self.schema, stream_id]
                    locks.wait(
                        lambda k=key: bool(conn.execute(  # type: ignore[misc]
                            "SELECT pg_try_advisory_lock(hashtext(%s), hashtext(%s))",
                            k).fetchone()[0]),  # type: ignore[index]
                        limit, f"the ledger lock of stream {stream_id} in {self.display}",
                        lambda k=key: self._lock_holder(conn, k))  # type: ignore[misc]
            except psycopg.Error as e:
                raise self._err("cannot lock a stream of store", e) from e
            yield
        finally:
            conn.close()  # ending the session releases the advisory lock

    def _lock_holder(self, conn: psycopg.Connection[Any], key: list[str]) -> str | None:
        """Who holds the advisory lock ``key``: from pg_locks and pg_stat_activity."""
        row = conn.execute(
            "SELECT a.pid, a.application_name, a.client_addr, a.backend_start "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND l.classid = hashtext(%s)::oid AND l.objid = hashtext(%s)::oid", key).fetchone()
        if row is None:
            return None
        pid, app, addr, since = row
        where = f"from {addr}" if addr else "over a local socket"
        when = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if since else "?"
        return f"PostgreSQL backend {pid} ({app or 'no application_name'}, {where}) since {when}"

    def save_snapshot(self, key: str, position: int, data: bytes) -> None:
        """Upsert ``key``'s row in ``snapshots`` (one statement, so atomic; an intent's with
        ``synchronous_commit`` off, see ledger/log/intents.py)."""
        self._writable()
        with self._mutex:
            try:
                with self._conn.transaction():
                    if key.startswith(INTENT_PREFIX):
                        self._conn.execute("SET LOCAL synchronous_commit TO OFF")
                    self._conn.execute(self._sql(
                        "INSERT INTO {s}.snapshots (key, position, data) VALUES (%s, %s, %s) "
                        "ON CONFLICT (key) DO UPDATE SET position = EXCLUDED.position, "
                        "data = EXCLUDED.data"), [key, int(position), bytes(data)])
            except psycopg.Error as e:
                raise self._err("cannot write a snapshot to store", e) from e

    def load_snapshot(self, key: str) -> tuple[int, bytes] | None:
        """The ``(position, data)`` of ``key``'s row in ``snapshots``, or None."""
        rows = self._query("SELECT position, data FROM {s}.snapshots WHERE key = %s", [key])
        if not rows:
            return None
        return int(rows[0][0]), bytes(rows[0][1])

    def follow(self, after: int = 0, timeout: float | None = None) -> Iterator[StoredRecord]:
        """Records after ``after`` as they commit, woken by ``LISTEN``.

        Ends once ``timeout`` seconds pass with nothing new (``None``: never ends).
        """
        conn = self._connect()
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            last, idle_since = after, time.monotonic()
            while True:
                for r in self.read_all(after=last):
                    last, idle_since = r.position, time.monotonic()
                    yield r
                wait = 5.0
                if timeout is not None:
                    wait = min(wait, timeout - (time.monotonic() - idle_since))
                    if wait <= 0:
                        return
                for _ in conn.notifies(timeout=wait, stop_after=1):
                    pass
        except psycopg.Error as e:
            raise self._err("cannot follow store", e) from e
        finally:
            conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction around everything this store does in the block (appends inside
        it become savepoints): committed when the block ends, rolled back if it raises."""
        with self._mutex:
            try:
                with self._conn.transaction():
                    yield
            except psycopg.Error as e:
                raise self._err("cannot commit to store", e) from e

    def discard(self) -> None:
        """Remove what opening this store created (its schema, or its tables), if it still
        holds no events; nothing otherwise."""
        if self.created is None:
            return
        with self._mutex:
            try:
                with self._conn.transaction():
                    self._lock_events()
                    if self.last_position():
                        return
                    if self.created == "schema":
                        self._conn.execute(self._sql("DROP SCHEMA {s} CASCADE"))
                    else:
                        self._conn.execute(self._sql(
                            "DROP TABLE {s}.events, {s}.idempotency, {s}.snapshots, "
                            "{s}.ckpt_ledger_meta"))
                    self.created = None
            except psycopg.Error as e:
                raise self._err("cannot remove store", e) from e

    def close(self) -> None:
        """Close the connection."""
        with self._mutex:
            self._conn.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_url(url: str, readonly: bool = False) -> PostgresStore:
    """Open ``postgresql://user@host:port/db?schema=name`` (``postgres://`` also accepted)."""
    return PostgresStore(url, readonly)
