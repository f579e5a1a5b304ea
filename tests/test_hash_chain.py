"""The tamper-evident hash chain: tampering with the stored bytes of every backend is found,
with the first bad position; anchors catch truncation and rewritten history; the CLI."""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import struct
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack
import pytest
import sqlite_utils

from backends import _frames
from backends._sqlite_inspect import APPLICATION_ID
from backends.memory import MemoryStore
from backends.msgpack_log import MsgpackLogStore
from backends.sqlite import MIGRATIONS, SqliteStore
from ledger.app.integrity import head, parse_anchor, verify_chain, verify_store
from ledger.domain.errors import LedgerError
from ledger.log.chain import GENESIS, canonical_bytes, event_hash, record_hash
from ledger.log.store import EventStore

try:
    from .helpers import Host, command
    from .store_contract import rec, recs
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    from helpers import Host, command  # type: ignore[no-redef]
    from store_contract import rec, recs  # type: ignore[no-redef]

PG_URL = os.environ.get("CKPT_LEDGER_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
PAYLOAD = bytes(range(40, 88))  # the payload of position 3: 48 distinct bytes


def _fill(store: EventStore) -> list[Any]:
    """Six events in three streams; position 3 carries :data:`PAYLOAD`; 5-6 are a batch."""
    out = store.append([rec("a", b"one")])
    out += store.append([rec("b", b"two", name="vm-b")])
    out += store.append([rec("a", PAYLOAD, "Big")])
    out += store.append([rec("c", b"four")])
    out += store.append(recs("b", 2, "x"))
    return out


def _bad_at(store: EventStore, position: int, *words: str) -> str:
    report = verify_store(store)
    assert not report.ok and report.first_bad == position, report
    assert report.reason and "\n" not in report.reason
    for w in words:
        assert w in report.reason, report.reason
    return report.reason


# --- the hash itself ---------------------------------------------------------------------


def test_canonical_encoding_is_stable() -> None:
    args = (7, "s", "vm", 2, "T", 1, 1700000000.25, b"\x00p", GENESIS)
    raw = canonical_bytes(*args)
    assert raw.startswith(b"ckpt-ledger/chain/1\x00")
    assert struct.pack(">d", 1700000000.25) in raw
    # pinned: changing the encoding would silently invalidate every stored chain
    assert event_hash(*args) == "e93c4f3550111a67689d6e6d0d75b8e499d891e1c56c6a2c989f1058178a1f46"
    # every field is covered, and fields cannot be shifted into one another
    variants = [
        (8, "s", "vm", 2, "T", 1, 1700000000.25, b"\x00p", GENESIS),
        (7, "sv", "m", 2, "T", 1, 1700000000.25, b"\x00p", GENESIS),
        (7, "s", "vm", 3, "T", 1, 1700000000.25, b"\x00p", GENESIS),
        (7, "s", "vm", 2, "U", 1, 1700000000.25, b"\x00p", GENESIS),
        (7, "s", "vm", 2, "T", 2, 1700000000.25, b"\x00p", GENESIS),
        (7, "s", "vm", 2, "T", 1, math.nextafter(1700000000.25, 2e9), b"\x00p", GENESIS),
        (7, "s", "vm", 2, "T", 1, 1700000000.25, b"\x00q", GENESIS),
        (7, "s", "vm", 2, "T", 1, 1700000000.25, b"\x00p", "1" + GENESIS[1:]),
    ]
    hashes = {event_hash(*v) for v in variants} | {event_hash(*args)}
    assert len(hashes) == len(variants) + 1
    with pytest.raises(ValueError):
        event_hash(*args[:-1], "nothex")


def test_hash_is_the_same_in_every_backend(tmp_path: Path) -> None:
    stores: list[EventStore] = [MemoryStore(), SqliteStore(str(tmp_path / "a.db")),
                                MsgpackLogStore(str(tmp_path / "a.log"))]
    heads = []
    for s in stores:
        _fill(s)
        heads.append(head(s))
        s.close()
    assert len(set(heads)) == 1 and heads[0][0] == 6


# --- SQLite ------------------------------------------------------------------------------


@pytest.fixture
def sq(tmp_path: Path) -> Iterator[tuple[SqliteStore, sqlite3.Connection]]:
    """A filled SQLite store and a raw connection to tamper with it."""
    store = SqliteStore(str(tmp_path / "t.db"))
    _fill(store)
    raw = sqlite3.connect(str(tmp_path / "t.db"), isolation_level=None)
    yield store, raw
    raw.close()
    store.close()


def _row(raw: sqlite3.Connection, pos: int) -> dict[str, Any]:
    cur = raw.execute("SELECT * FROM events WHERE position = ?", [pos])
    return dict(zip([c[0] for c in cur.description], cur.fetchone(), strict=True))


def _set(raw: sqlite3.Connection, pos: int, column: str, value: object) -> None:
    raw.execute(f"UPDATE events SET {column} = ? WHERE position = ?", [value, pos])


def test_sqlite_every_payload_byte_change_is_found(
        sq: tuple[SqliteStore, sqlite3.Connection]) -> None:
    store, raw = sq
    assert verify_store(store).ok
    for i in range(len(PAYLOAD)):
        for flip in (0x01, 0x80):
            bad = bytearray(PAYLOAD)
            bad[i] ^= flip
            _set(raw, 3, "payload", bytes(bad))
            _bad_at(store, 3, "fields or payload were changed")
    for other in (PAYLOAD + b"\x00", PAYLOAD[:-1], b""):
        _set(raw, 3, "payload", other)
        _bad_at(store, 3)
    _set(raw, 3, "payload", PAYLOAD)
    assert verify_store(store).ok


def _text_changes(value: str) -> Iterator[str]:
    for i, ch in enumerate(value):
        yield value[:i] + chr(ord(ch) ^ 0x01) + value[i + 1 :]
    yield value + "x"
    yield value[:-1]


def test_sqlite_every_column_change_is_found(sq: tuple[SqliteStore, sqlite3.Connection]) -> None:
    store, raw = sq
    orig = _row(raw, 3)
    changes: list[tuple[str, object, str]] = []
    for col in ("stream_id", "stream_name", "type"):
        changes += [(col, v, "fields or payload") for v in _text_changes(orig[col])]
    changes += [("stream_version", orig["stream_version"] + 7, "fields or payload"),
                ("schema_version", 2, "fields or payload"),
                ("recorded_at", math.nextafter(orig["recorded_at"], math.inf), "fields"),
                ("recorded_at", orig["recorded_at"] + 1, "fields")]
    for i, ch in enumerate(orig["hash"]):
        other = "0" if ch != "0" else "1"
        changes.append(("hash", orig["hash"][:i] + other + orig["hash"][i + 1 :],
                        "stored hash was changed"))
    changes += [("hash", "", "missing or malformed"), ("hash", orig["hash"].upper(), "malformed")]
    for col, value, why in changes:
        _set(raw, 3, col, value)
        _bad_at(store, 3, why)
        _set(raw, 3, col, orig[col])
    assert verify_store(store).ok
    _set(raw, 3, "position", 99)  # moved away: a gap at 3, then 99 out of place
    _bad_at(store, 3, "position 3 missing")


def test_sqlite_deleted_events(sq: tuple[SqliteStore, sqlite3.Connection]) -> None:
    store, raw = sq
    raw.execute("DELETE FROM events WHERE position = 3")
    _bad_at(store, 3, "position 3 missing", "deleted")
    raw.execute("UPDATE events SET position = position - 1 WHERE position > 3")  # renumbered
    _bad_at(store, 3, "deleted, inserted or moved")


def test_sqlite_inserted_event(sq: tuple[SqliteStore, sqlite3.Connection]) -> None:
    store, raw = sq
    before = list(store.read_all())
    for p in range(6, 2, -1):
        raw.execute("UPDATE events SET position = position + 1 WHERE position = ?", [p])
    forged = replace(before[2], position=3, stream_id="z", stream_version=1, payload=b"evil")
    forged = replace(forged, hash=record_hash(forged, before[1].hash))  # a valid-looking link
    raw.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [forged.position, forged.stream_id, forged.stream_name, forged.stream_version,
                 forged.type, forged.schema_version, forged.recorded_at, forged.payload,
                 forged.hash])
    _bad_at(store, 4, "deleted, inserted or moved")


def test_sqlite_reordered_events(sq: tuple[SqliteStore, sqlite3.Connection]) -> None:
    store, raw = sq
    three, four = _row(raw, 3), _row(raw, 4)
    raw.execute("UPDATE events SET position = -4 WHERE position = 4")
    raw.execute("UPDATE events SET position = 4 WHERE position = 3")
    raw.execute("UPDATE events SET position = 3 WHERE position = -4")
    assert _row(raw, 3)["payload"] == four["payload"] and _row(raw, 4)["hash"] == three["hash"]
    _bad_at(store, 3)


def test_sqlite_truncation_needs_an_anchor(sq: tuple[SqliteStore, sqlite3.Connection]) -> None:
    store, raw = sq
    pinned = head(store)
    assert verify_store(store, pinned).ok
    raw.execute("DELETE FROM events WHERE position > 4")
    assert verify_store(store).ok  # a shorter chain is still a chain...
    report = verify_store(store, pinned)  # ...but not the one that was pinned
    assert not report.ok and report.first_bad == 6 and "truncated" in (report.reason or "")
    assert verify_store(store, (4, head(store)[1])).ok


def test_rewritten_history_is_caught_by_an_anchor(
        sq: tuple[SqliteStore, sqlite3.Connection]) -> None:
    store, raw = sq
    pinned = head(store)
    _set(raw, 2, "payload", b"rewritten")
    prev = GENESIS
    for r in list(store.read_all()):  # the attacker recomputes every hash
        prev = record_hash(r, prev)
        _set(raw, r.position, "hash", prev)
    assert verify_store(store).ok
    report = verify_store(store, pinned)
    assert not report.ok and report.first_bad == 6 and "anchor says" in (report.reason or "")


def test_sqlite_schema_1_is_migrated_with_hashes(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite_utils.Database(str(path))
    MIGRATIONS[0](db)
    rows = [(i, "s" if i % 2 else "t", "vm", (i + 1) // 2, "T", 1, 1700000000.5 + i,
             f"p{i}".encode()) for i in range(1, 8)]
    db.conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute("PRAGMA user_version = 1")
    db.conn.commit()
    db.conn.close()
    store = SqliteStore(str(path))
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == 2
    got = list(store.read_all())
    assert [r.payload for r in got] == [r[7] for r in rows]
    assert verify_chain(got).ok
    new = store.append([rec("s", b"after")], expected_version=4)
    assert new[0].position == 8 and new[0].hash == record_hash(new[0], got[-1].hash)
    store.close()
    store = SqliteStore(str(path))
    assert verify_store(store).ok and store.load_snapshot("x") is None
    store.close()


# --- msgpack log -------------------------------------------------------------------------


def _frames_of(data: bytes) -> list[tuple[int, int]]:
    off, out = len(_frames.HEADER), []
    while off < len(data):
        (length,) = struct.unpack_from(">I", data, off)
        out.append((off, length))
        off += 8 + length
    return out


def _rewrite(path: Path, frames: list[bytes]) -> None:
    """The log with these frame bodies (CRCs recomputed)."""
    blob = _frames.HEADER + b"".join(
        struct.pack(">II", len(b), zlib.crc32(b)) + b for b in frames)
    path.write_bytes(blob)


def _bodies(path: Path) -> list[bytes]:
    data = path.read_bytes()
    return [data[off + 8 : off + 8 + n] for off, n in _frames_of(data)]


@pytest.fixture
def mlog(tmp_path: Path) -> Path:
    path = tmp_path / "t.log"
    store = MsgpackLogStore(str(path))
    _fill(store)
    store.close()
    return path


def _verify_log(path: Path) -> Any:
    """verify_store on a freshly opened log, or the STORE_ERROR opening it raised."""
    try:
        store = MsgpackLogStore(str(path))
    except LedgerError as e:
        return e
    try:
        return verify_store(store)
    finally:
        store.close()


def test_msgpack_flips_the_crc_catches_name_the_position(mlog: Path) -> None:
    data = mlog.read_bytes()
    off, n = _frames_of(data)[2]
    for i in range(0, n + 8, 7):  # a sample of the bytes of position 3's frame
        bad = bytearray(data)
        bad[off + i] ^= 0x20
        mlog.write_bytes(bytes(bad))
        out = _verify_log(mlog)
        if isinstance(out, LedgerError):
            assert out.code == "STORE_ERROR" and "position 3" in str(out), str(out)
        else:
            assert not out.ok and out.first_bad == 3, out


def test_msgpack_payload_flips_behind_a_fixed_crc(mlog: Path) -> None:
    bodies = _bodies(mlog)
    at = bodies[2].find(PAYLOAD)
    assert at > 0
    for i in range(len(PAYLOAD)):
        body = bytearray(bodies[2])
        body[at + i] ^= 0x04
        _rewrite(mlog, [*bodies[:2], bytes(body), *bodies[3:]])
        out = _verify_log(mlog)
        assert not isinstance(out, LedgerError) and out.first_bad == 3, out
        assert "fields or payload" in (out.reason or "")
    _rewrite(mlog, bodies)
    assert _verify_log(mlog).ok


def _edit_fields(body: bytes, **changes: Any) -> bytes:
    names = ["position", "stream_id", "stream_name", "stream_version", "type",
             "schema_version", "recorded_at", "payload", "batch_first", "batch_size", "key",
             "digest", "hash"]
    f = msgpack.unpackb(body, raw=False)
    for k, v in changes.items():
        f[names.index(k)] = v
    return msgpack.packb(f, use_bin_type=True)


def test_msgpack_field_edits_behind_a_fixed_crc(mlog: Path) -> None:
    bodies = _bodies(mlog)
    f3 = msgpack.unpackb(bodies[2], raw=False)
    h = f3[12]
    edits: list[tuple[dict[str, Any], str]] = [
        ({"stream_name": "vm-A"}, "fields or payload"),
        ({"type": "Bug"}, "fields or payload"),
        ({"schema_version": 9}, "fields or payload"),
        ({"recorded_at": math.nextafter(f3[6], 0.0)}, "fields or payload"),
        ({"hash": h[:10] + ("0" if h[10] != "0" else "1") + h[11:]}, "stored hash was changed"),
        ({"hash": "x" * 64}, "malformed"),
    ]
    for change, why in edits:
        _rewrite(mlog, [*bodies[:2], _edit_fields(bodies[2], **change), *bodies[3:]])
        out = _verify_log(mlog)
        assert not isinstance(out, LedgerError), out
        assert out.first_bad == 3 and why in (out.reason or ""), out


def test_msgpack_deleted_inserted_reordered_frames(mlog: Path) -> None:
    bodies = _bodies(mlog)
    _rewrite(mlog, [*bodies[:2], *bodies[3:]])  # deleted, positions left alone
    out = _verify_log(mlog)
    assert isinstance(out, LedgerError) and "position 3" in str(out), out
    # deleted and renumbered (batch fields follow so the log opens cleanly)
    later = [_edit_fields(bodies[3], position=3, batch_first=3),
             _edit_fields(bodies[4], position=4, batch_first=4),
             _edit_fields(bodies[5], position=5, batch_first=4)]
    _rewrite(mlog, [*bodies[:2], *later])
    out = _verify_log(mlog)
    assert not isinstance(out, LedgerError) and out.first_bad == 3, out
    # two single-record appends swapped (positions kept in order)
    swapped = [_edit_fields(bodies[3], position=3, batch_first=3),
               _edit_fields(bodies[2], position=4, batch_first=4)]
    _rewrite(mlog, [*bodies[:2], *swapped, *bodies[4:]])
    out = _verify_log(mlog)
    assert not isinstance(out, LedgerError) and out.first_bad == 3, out
    # inserted: a forged frame at 3 with a valid-looking hash, the rest renumbered
    f2 = msgpack.unpackb(bodies[1], raw=False)
    forged: list[Any] = [3, "z", "vm-z", 1, "T", 1, 1.5, b"evil", 3, 1, None, None, ""]
    forged[12] = event_hash(3, "z", "vm-z", 1, "T", 1, 1.5, b"evil", f2[12])
    moved = [_edit_fields(bodies[2], position=4, batch_first=4),
             _edit_fields(bodies[3], position=5, batch_first=5),
             _edit_fields(bodies[4], position=6, batch_first=6),
             _edit_fields(bodies[5], position=7, batch_first=6)]
    _rewrite(mlog, [*bodies[:2], msgpack.packb(forged, use_bin_type=True), *moved])
    out = _verify_log(mlog)
    assert not isinstance(out, LedgerError) and out.first_bad == 4, out


def test_msgpack_truncation_needs_an_anchor(mlog: Path) -> None:
    store = MsgpackLogStore(str(mlog))
    pinned = head(store)
    store.close()
    data = mlog.read_bytes()
    mlog.write_bytes(data[: _frames_of(data)[4][0]])  # cut cleanly before position 5
    store = MsgpackLogStore(str(mlog))
    try:
        assert verify_store(store).ok and store.last_position() == 4
        report = verify_store(store, pinned)
        assert not report.ok and "truncated" in (report.reason or "")
    finally:
        store.close()


def test_msgpack_format_1_log_gets_hashes(tmp_path: Path) -> None:
    path = tmp_path / "old.log"
    frames = [[i, "s", "vm", i, "T", 1, 1700000000.5 + i, f"p{i}".encode(), i, 1, None, None]
              for i in range(1, 5)]
    header = _frames.MAGIC + bytes([1])
    path.write_bytes(header + b"".join(_frames.encode(f) for f in frames))
    store = MsgpackLogStore(str(path))
    got = list(store.read_all())
    assert [r.payload for r in got] == [f[7] for f in frames] and verify_chain(got).ok
    new = store.append([rec("s", b"after")], expected_version=4)
    assert new[0].hash == record_hash(new[0], got[-1].hash)
    store.close()
    store = MsgpackLogStore(str(path))
    assert verify_store(store).ok and store.last_position() == 5
    assert path.read_bytes().startswith(header)  # the header is never rewritten
    store.close()


# --- memory ------------------------------------------------------------------------------


def test_memory_tampering() -> None:
    store = MemoryStore()
    _fill(store)
    orig = list(store._records)
    for change in ({"payload": b"x"}, {"stream_name": "y"}, {"recorded_at": 1.0},
                   {"hash": GENESIS}):
        store._records[3] = replace(orig[3], **change)
        _bad_at(store, 4)
    store._records = [*orig[:3], *orig[4:]]
    _bad_at(store, 4, "missing")
    store._records = [*orig[:2], orig[3], orig[2], *orig[4:]]
    _bad_at(store, 3, "missing")  # position 4 came where 3 belongs
    store._records = [*orig[:2], orig[1], *orig[2:]]
    _bad_at(store, 3, "reordered or duplicated")
    store._records = [*orig[:2], replace(orig[3], position=3), replace(orig[2], position=4),
                      *orig[4:]]
    _bad_at(store, 3, "deleted, inserted or moved")


# --- PostgreSQL --------------------------------------------------------------------------


@pytest.fixture
def pg() -> Iterator[tuple[Any, Any, str]]:
    """(store, admin connection, schema) in a fresh schema, dropped afterwards."""
    try:
        import psycopg

        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except Exception as e:
        if os.environ.get("CKPT_LEDGER_REQUIRE_REAL") == "1":
            pytest.fail(f"PostgreSQL not usable: {e}")
        pytest.skip(f"PostgreSQL not usable at {PG_URL}: {e}")
    from backends.postgres import PostgresStore

    schema = f"t_{uuid.uuid4().hex[:16]}"
    store = PostgresStore(f"{PG_URL}?schema={schema}")
    try:
        _fill(store)
        yield store, admin, schema
    finally:
        store.close()
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.close()


@pytest.mark.postgres
def test_postgres_tampering(pg: tuple[Any, Any, str]) -> None:
    store, admin, s = pg

    def put(col: str, value: object, pos: int = 3) -> None:
        admin.execute(f"UPDATE {s}.events SET {col} = %s WHERE position = %s", [value, pos])

    orig = store.read_all(after=2, limit=1).__next__()
    for i in range(0, len(PAYLOAD), 5):  # a sample of the payload's bytes
        bad = bytearray(PAYLOAD)
        bad[i] ^= 0x10
        put("payload", bytes(bad))
        _bad_at(store, 3, "fields or payload")
    put("payload", PAYLOAD)
    for col, value in (("stream_id", "A"), ("stream_name", "vm-A"), ("type", "Bag"),
                       ("stream_version", 9), ("schema_version", 2),
                       ("recorded_at", math.nextafter(orig.recorded_at, 0.0)),
                       ("hash", "f" * 64)):
        put(col, value)
        _bad_at(store, 3)
        put(col, getattr(orig, col))
    assert verify_store(store).ok
    pinned = head(store)

    def swap() -> None:  # positions 3 and 4 trade contents
        admin.execute(f"UPDATE {s}.events SET position = -position WHERE position IN (3, 4)")
        admin.execute(f"UPDATE {s}.events SET position = 7 + position WHERE position < 0")

    swap()
    _bad_at(store, 3, "deleted, inserted or moved")
    swap()
    assert verify_store(store).ok
    admin.execute(f"DELETE FROM {s}.events WHERE position = 2")
    _bad_at(store, 2, "missing")
    admin.execute(f"DELETE FROM {s}.events WHERE position > 1")
    report = verify_store(store, pinned)
    assert verify_store(store).ok and not report.ok and "truncated" in (report.reason or "")


@pytest.mark.postgres
def test_postgres_schema_1_is_migrated_with_hashes(pg: tuple[Any, Any, str]) -> None:
    store, admin, s = pg
    before = list(store.read_all())
    store.close()
    admin.execute(f"DROP TABLE {s}.snapshots")
    admin.execute(f"ALTER TABLE {s}.events DROP COLUMN hash")
    admin.execute(f"UPDATE {s}.ckpt_ledger_meta SET version = 1")
    from backends.postgres import PostgresStore

    again = PostgresStore(f"{PG_URL}?schema={s}")
    try:
        assert list(again.read_all()) == before and verify_store(again).ok
        assert again.load_snapshot("k") is None
    finally:
        again.close()


# --- anchors and the CLI -----------------------------------------------------------------


def test_parse_anchor() -> None:
    h = "ab" * 32
    assert parse_anchor(f"12:{h}") == (12, h)
    assert parse_anchor(f" 3 : {h.upper()} ") == (3, h)
    for bad in ("", "12", f"x:{h}", f"-1:{h}", "12:abc", f"12:{h}0", f"12:{'g' * 64}", f"{h}:12"):
        with pytest.raises(LedgerError) as ei:
            parse_anchor(bad)
        assert ei.value.code == "INVALID_ARG"


@pytest.fixture
def host(tmp_path: Path) -> Host:
    command()  # build the click command before Host.main patches typer's builder
    h = Host(tmp_path)
    store = SqliteStore(str(h.db))
    _fill(store)
    store.close()
    return h


def _one_line_failure(run: Any, *words: str) -> None:
    assert run.code != 0 and run.stderr.startswith("error: "), run
    assert run.stderr.count("\n") == 1, run.stderr
    for w in words:
        assert w in run.stderr, run.stderr


def test_cli_head_and_verify_log(host: Host) -> None:
    out = host.main("head")
    assert out.code == 0
    pos, h = out.stdout.strip().split(":")
    assert pos == "6" and len(h) == 64
    assert host.main("head", "--json").json() == {"schema": "ckpt-ledger/head/1",
                                                     "position": 6, "hash": h}
    ok = host.main("verify-log")
    assert ok.code == 0 and ok.stdout.startswith("ok: 6 events") and ok.stderr == ""
    ok = host.main("verify-log", "--anchor", f"6:{h}")
    assert ok.code == 0 and "anchor 6 matches" in ok.stdout
    data = host.main("verify-log", "--json", "--anchor", f"6:{h}").json()
    assert data["ok"] and data["head"] == {"position": 6, "hash": h}
    assert data["anchor"] == {"position": 6, "hash": h, "ok": True}
    assert data["first_bad"] is None


def test_cli_verify_log_names_the_first_bad_position(host: Host) -> None:
    h = host.main("head").stdout.strip()
    with contextlib.closing(sqlite3.connect(host.db)) as raw:
        raw.execute("UPDATE events SET payload = x'00' WHERE position = 4")
        raw.commit()
    _one_line_failure(host.main("verify-log"), "position 4", "changed")
    run = host.main("verify-log", "--json", "--anchor", h)
    assert run.code == 1
    assert run.json()["first_bad"]["position"] == 4 and not run.json()["ok"]
    _one_line_failure(run, "position 4")


def test_cli_bad_anchors(host: Host) -> None:
    h = host.main("head").stdout.strip().split(":")[1]
    for bad in ("6", "six:" + h, f"6:{h[:-1]}", f"6:{h}:7", ""):
        _one_line_failure(host.main("verify-log", "--anchor", bad), "POSITION:HASH")
    _one_line_failure(host.main("verify-log", "--anchor", f"99:{h}"), "position 99",
                      "truncated")
    other = "0" * 63 + "1"
    _one_line_failure(host.main("verify-log", "--anchor", f"5:{other}"), "position 5",
                      "anchor says")
