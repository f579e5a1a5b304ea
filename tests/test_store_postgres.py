"""The postgresql:// store against a real server: the shared contract, follow(), refusals.

The server is ``$CKPT_LEDGER_PG_URL`` (default postgresql://postgres@127.0.0.1:5432/test).
Every store a test opens lives in a fresh schema (``?schema=t_<random>``), dropped after
the test. Unreachable server: the tests skip, or fail when CKPT_LEDGER_REQUIRE_REAL=1.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from ledger.domain.errors import LedgerError
from ledger.log.store import EventStore

try:
    from .store_contract import StoreContract, StoreFactory, recs
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    from store_contract import StoreContract, StoreFactory, recs  # type: ignore[no-redef]

pytestmark = pytest.mark.postgres
BASE_URL = os.environ.get("CKPT_LEDGER_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="module")
def admin() -> Iterator[Any]:
    """An autocommit connection to the test server (skips or fails when it is down)."""
    try:
        import psycopg

        conn = psycopg.connect(BASE_URL, autocommit=True, connect_timeout=3)
    except Exception as e:  # ImportError or a connection failure
        reason = f"PostgreSQL not usable at {BASE_URL}: {' '.join(str(e).split())}"
        if os.environ.get("CKPT_LEDGER_REQUIRE_REAL") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    yield conn
    conn.close()


class PostgresFactory(StoreFactory):
    """Stores in fresh schemas, dropped by :meth:`cleanup`."""

    module = "backends.postgres"

    def __init__(self, admin: Any) -> None:
        self.admin = admin
        self.schemas: list[str] = []

    def url(self) -> str:
        """A URL naming a schema nobody has used."""
        schema = f"t_{uuid.uuid4().hex[:16]}"
        self.schemas.append(schema)
        sep = "&" if "?" in BASE_URL else "?"
        return f"{BASE_URL}{sep}schema={schema}"

    def __call__(self) -> EventStore:
        from backends.postgres import open_url

        return open_url(self.url())

    @contextlib.contextmanager
    def _failing(self, store: Any) -> Iterator[None]:
        target = store.last_position() + 2
        s = store.schema
        self.admin.execute(
            f"CREATE FUNCTION {s}.boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.position = {target} THEN RAISE EXCEPTION 'injected failure'; END IF; "
            f"RETURN NEW; END $$")
        self.admin.execute(f"CREATE TRIGGER boom BEFORE INSERT ON {s}.events "
                           f"FOR EACH ROW EXECUTE FUNCTION {s}.boom()")
        try:
            yield
        finally:
            self.admin.execute(f"DROP TRIGGER boom ON {s}.events")

    def inject_failure(self, store: EventStore) -> contextlib.AbstractContextManager[None]:
        return self._failing(store)

    def missing(self) -> str:
        return self.url()

    def footprint(self, url: str) -> object:
        """The schema's tables, and the rows of each (as text), or None for no schema."""
        schema = url.rsplit("schema=", 1)[1]
        tables = [r[0] for r in self.admin.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
            "ORDER BY table_name", [schema])]
        exists = self.admin.execute("SELECT count(*) FROM information_schema.schemata "
                                    "WHERE schema_name = %s", [schema]).fetchone()[0]
        return exists, {t: self.admin.execute(
            f"SELECT array_agg(t::text ORDER BY t::text) FROM {schema}.{t} t").fetchone()[0]
            for t in tables}

    def cleanup(self) -> None:
        """Drop every schema this factory handed out."""
        for s in self.schemas:
            self.admin.execute(f"DROP SCHEMA IF EXISTS {s} CASCADE")


@pytest.fixture
def store_factory(admin: Any) -> Iterator[PostgresFactory]:
    """The PostgreSQL backend's factory; its schemas are dropped afterwards."""
    factory = PostgresFactory(admin)
    yield factory
    factory.cleanup()


class TestPostgresStore(StoreContract):
    """The contract, run against PostgresStore."""


def test_follow_yields_records_as_they_commit(store_factory: PostgresFactory) -> None:
    store = store_factory()
    writer = store_factory.another(store)
    store.append(recs("a", 2))

    def later() -> None:
        time.sleep(0.3)
        writer.append(recs("b", 1))
        time.sleep(0.2)
        writer.append(recs("c", 2))

    t = threading.Thread(target=later)
    started = time.monotonic()
    t.start()
    got = [r.position for r in store.follow(after=1, timeout=1.0)]
    t.join()
    assert got == [2, 3, 4, 5]
    assert 1.4 < time.monotonic() - started < 5  # woke on NOTIFY, then idled out
    store.close()
    writer.close()


def test_positions_never_interleave(store_factory: PostgresFactory) -> None:
    """A tailing reader never sees position n+1 committed before n (§1.3)."""
    store = store_factory()
    writers = [store_factory.another(store) for _ in range(3)]
    stop = threading.Event()
    seen_gaps: list[tuple[int, int]] = []

    def tail() -> None:
        last = 0
        while not stop.is_set():
            for r in store.read_all(after=last):
                if r.position != last + 1:
                    seen_gaps.append((last, r.position))
                last = r.position

    def write(w: Any, i: int) -> None:
        for j in range(30):
            w.append(recs(f"w{i}", 1, tag=str(j)))

    reader = threading.Thread(target=tail)
    reader.start()
    ts = [threading.Thread(target=write, args=(w, i)) for i, w in enumerate(writers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    stop.set()
    reader.join()
    assert seen_gaps == []
    assert store.last_position() == 90
    for h in [store, *writers]:
        h.close()


def _one_line_store_error(url: str, *words: str) -> LedgerError:
    from backends.postgres import open_url

    with pytest.raises(LedgerError) as ei:
        open_url(url)
    err = ei.value
    assert err.code == "STORE_ERROR" and "\n" not in str(err), str(err)
    for w in words:
        assert w in str(err), str(err)
    return err


def test_connection_refused(admin: Any) -> None:
    _one_line_store_error("postgresql://postgres@127.0.0.1:1/test", "cannot connect")


def test_bad_login_hides_the_password(admin: Any) -> None:
    err = _one_line_store_error("postgresql://nosuchrole:s3cretpw@127.0.0.1:5432/test")
    assert "s3cretpw" not in str(err) and "nosuchrole" in str(err)


def test_unknown_database(admin: Any) -> None:
    _one_line_store_error("postgresql://postgres@127.0.0.1:5432/no_such_db_ckpt", "no_such_db")


def test_bad_schema_name_is_a_url_error() -> None:
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    from backends.postgres import open_url

    for bad in (f"{BASE_URL}?schema=x;drop", f"{BASE_URL}?schema=1abc", "mysql://x/y"):
        with pytest.raises(LedgerError) as ei:
            open_url(bad)
        assert ei.value.code == "STORE_URL"


def test_schema_that_is_not_a_ledger(store_factory: PostgresFactory, admin: Any) -> None:
    url = store_factory.url()
    s = store_factory.schemas[-1]
    admin.execute(f"CREATE SCHEMA {s}")
    admin.execute(f"CREATE TABLE {s}.events (x int)")
    admin.execute(f"INSERT INTO {s}.events VALUES (42)")
    _one_line_store_error(url, "not a ckpt-ledger store")
    tables = admin.execute("SELECT table_name FROM information_schema.tables "
                           "WHERE table_schema = %s", [s]).fetchall()
    assert tables == [("events",)]
    assert admin.execute(f"SELECT x FROM {s}.events").fetchall() == [(42,)]


def test_newer_schema_version(store_factory: PostgresFactory, admin: Any) -> None:
    from backends.postgres import SCHEMA_VERSION

    store = store_factory()
    store.append(recs("a", 1))
    store.close()
    s = store_factory.schemas[-1]
    admin.execute(f"UPDATE {s}.ckpt_ledger_meta SET version = {SCHEMA_VERSION + 1}")
    _one_line_store_error(store.url, "newer")
    assert admin.execute(f"SELECT count(*) FROM {s}.events").fetchone() == (1,)


def test_open_store_routes_postgres_urls(store_factory: PostgresFactory) -> None:
    from backends.postgres import PostgresStore
    from ledger.app.plugins import open_store

    store = open_store(store_factory.url().replace("postgresql://", "postgres://", 1))
    assert isinstance(store, PostgresStore)
    store.close()
