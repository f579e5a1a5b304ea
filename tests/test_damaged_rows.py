"""A damaged row in a store gives one line naming its position, never a traceback.

Each column of one row (position 3) of a real SQLite store is overwritten with raw SQL
(invalid UTF-8 text, a blob, text or a real where an integer belongs, a payload that is not
msgpack ...), then every read command runs through ``cli.app.main``. Commands that read the
damaged field exit non-zero with exactly one ``error:`` line naming position 3; commands
that never read it (the fold ignores ``hash``) may succeed; none prints a traceback.
``verify-log`` reports ``hash chain broken at position 3: field X is malformed`` (or the
row's damage) with exit 1. PostgreSQL's typed columns only admit a payload that is not
msgpack, tested the same way.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from ledger import Ledger
from ledger.app.copying import copy_store
from ledger.app.integrity import verify_chain
from ledger.domain.errors import LedgerError
from ledger.log.chain import GENESIS, record_hash
from ledger.log.records import StoredRecord

try:
    from .helpers import Host, assert_one_error_line
    from .proc_worker import open_store
    from .test_copy_follow import _fill
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    from helpers import Host, assert_one_error_line  # type: ignore[no-redef]
    from proc_worker import open_store  # type: ignore[no-redef]
    from test_copy_follow import _fill  # type: ignore[no-redef]

BAD_UTF8 = "CAST(x'41ff42c0' AS TEXT)"
BLOB = "x'00ff10'"
# column -> SQL values that damage it (NOT NULL columns refuse NULL: it cannot happen)
DAMAGE: dict[str, list[str]] = {
    "stream_id": [BAD_UTF8, BLOB],
    "stream_name": [BAD_UTF8, BLOB],
    "stream_version": ["'abc'", BLOB, "1.5", "9223372036854775808"],
    "type": [BAD_UTF8, BLOB, "7"],
    "schema_version": ["'abc'", BLOB, "2.5", "-9223372036854775808"],
    "recorded_at": ["'abc'", BLOB, BAD_UTF8, "1e300"],
    "payload": ["'abc'", BAD_UTF8, "5", "2.5", "x'c1'", "x''", "x'93010203'", "x'81a16101'"],
    "hash": [BAD_UTF8, BLOB, "5", "'xyz'"],
}
CASES = [(col, value) for col, values in DAMAGE.items() for value in values]
FOLD = {"stream_id", "stream_version", "schema_version", "payload"}  # what a fold reads
SHOWN = FOLD | {"stream_name", "type", "recorded_at"}  # what log and history read too
EVERY = SHOWN | {"hash"}
READS = {  # command -> the fields of row 3 (vm2's enrolment) it reads
    "list": (["list", "vm2"], FOLD),
    "show": (["show", "vm2", "b0"], FOLD),
    "bitmaps": (["bitmaps", "vm2"], FOLD),
    "rebuild": (["rebuild"], FOLD),
    "log": (["log"], SHOWN),
    "log --domain": (["log", "--domain", "vm2"], SHOWN),
    "history": (["history", "vm2", "b0"], SHOWN),
    "export": (["export", "{out}/e.jsonl"], EVERY),
    "copy": (["copy", "--from", "{store}", "--to", "sqlite:///{out}/c.db"], EVERY),
    "verify-log": (["verify-log"], EVERY),
}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("damaged")
    _fill(f"sqlite:///{folder}/ledger.db", folder / "host.json")
    return folder / "ledger.db"


def _damage(template: Path, folder: Path, column: str, value: str) -> Host:
    host = Host(folder)
    shutil.copy(template, host.db)
    with sqlite3.connect(host.db) as conn:
        conn.execute(f"UPDATE events SET {column} = {value} WHERE position = 3")
    conn.close()
    return host


@pytest.mark.parametrize(("column", "value"), CASES, ids=[f"{c}={v}" for c, v in CASES])
def test_every_read_names_the_damaged_position(
        template: Path, tmp_path: Path, column: str, value: str) -> None:
    host = _damage(template, tmp_path, column, value)
    out = tmp_path / "out"
    out.mkdir()
    for name, (argv, reads) in READS.items():
        args = [a.format(out=out, store=host.store) for a in argv]
        run = host.main(*args)
        assert "Traceback" not in run.everything, (name, run.everything)
        if column not in reads and run.code == 0:
            continue  # a command that never reads the damaged field may succeed
        line = assert_one_error_line(run)
        assert "position 3" in line, (name, line)
        if name == "verify-log" and "damaged" not in line:
            assert "hash chain broken at position 3" in line, line
    assert not (out / "e.jsonl").exists() and not (out / "c.db").exists()


def _rec(**over: object) -> StoredRecord:
    fields: dict[str, object] = dict(position=1, stream_id="s", stream_name="vm",
                                     stream_version=1, type="T", schema_version=2,
                                     recorded_at=1.0, payload=b"p", hash=GENESIS)
    fields.update(over)
    return StoredRecord(**fields)  # type: ignore[arg-type]


MALFORMED = {
    "position": ["1", 1.0, None, 2**63, True],
    "stream_id": [b"s", 1, None],
    "stream_name": [b"vm", 1, None],
    "stream_version": ["1", 1.5, None, 2**63, -(2**63) - 1],
    "type": [b"T", None, 3],
    "schema_version": ["2", 2.0, None, 2**64, 10**5000],
    "recorded_at": ["1.0", b"1", None, 10**400],
    "payload": ["p", 5, None, 1.5],
}


@pytest.mark.parametrize("field", sorted(MALFORMED))
def test_verify_chain_names_a_malformed_field(field: str) -> None:
    good = _rec(hash=record_hash(_rec(), GENESIS))
    for value in MALFORMED[field]:
        bad = _rec(position=2, **{field: value}) if field != "position" else _rec(
            **{field: value})
        records = [good, bad] if field != "position" else [bad]
        report = verify_chain(records)
        assert not report.ok
        where = 2 if field != "position" else 1
        assert report.line() == (f"hash chain broken at position {where}: field {field} "
                                 "is malformed"), (value, report.line())


@pytest.mark.postgres
@pytest.mark.parametrize("payload", ["'\\xc1'::bytea", "''::bytea", "'\\x93010203'::bytea",
                                     "'\\x81a16101'::bytea"])
def test_postgres_payload_that_is_not_an_event(tmp_path: Path, pg_url: str,
                                                payload: str) -> None:
    import psycopg

    source = f"sqlite:///{tmp_path}/src.db"
    _fill(source, tmp_path / "host.json")
    with open_store(source) as src, open_store(pg_url) as pg:  # type: ignore[attr-defined]
        copy_store(src, pg)
    schema = pg_url.rpartition("schema=")[2]
    with psycopg.connect(pg_url.partition("?")[0], autocommit=True) as c:
        c.execute(f"UPDATE {schema}.events SET payload = {payload} WHERE position = 3")
    host = Host(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    for name, (argv, _) in READS.items():
        args = [a.format(out=out, store=pg_url) for a in argv]
        run = host.main("--store", pg_url, *args)
        line = assert_one_error_line(run)
        assert "position 3" in line, (name, line)


def test_library_reads_raise_store_error(template: Path, tmp_path: Path) -> None:
    for column, value in (("payload", "x'c1'"), ("stream_id", BAD_UTF8),
                          ("recorded_at", "'abc'")):
        (tmp_path / column).mkdir()
        host = _damage(template, tmp_path / column, column, value)
        with pytest.raises(LedgerError) as err, Ledger.open(host.store) as lg:
            lg.log()
        assert err.value.code == "STORE_ERROR" and "position 3" in str(err.value)
