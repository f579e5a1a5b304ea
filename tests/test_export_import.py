"""export / import-log: deterministic files, verified before anything is written, prefix-only
imports, refusals that name the first bad position, and a round trip through every backend."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import sqlite3
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.memory import MemoryStore
from backends.msgpack_log import MsgpackLogStore
from backends.sqlite import SqliteStore
from ledger.app.audit import event_view
from ledger.app.copying import copy_store
from ledger.app.integrity import export_log, export_records, head, import_log, read_export
from ledger.domain.errors import LedgerError
from ledger.domain.events import BackupStarted
from ledger.log.chain import event_hash
from ledger.log.readable import first_unreadable
from ledger.log.records import NewRecord, Provenance, encode_payload
from ledger.log.store import EventStore

try:
    from .helpers import Host, command
    from .store_contract import domain_history, rec
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    from helpers import Host, command  # type: ignore[no-redef]
    from store_contract import domain_history, rec  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("CKPT_LEDGER_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _export(store: EventStore, fmt: str = "jsonl", stream_id: str | None = None,
            version: int = 1) -> bytes:
    """The export of ``store``, in format version 1 unless told (the tests of the stored
    fields' encoding); version 2 is what the CLI writes (tests below)."""
    buf = io.BytesIO()
    export_records(store, buf, fmt, stream_id, "vm" if stream_id else None,  # type: ignore[arg-type]
                   version=version)
    return buf.getvalue()


def _source() -> MemoryStore:
    store = MemoryStore()
    first = domain_history(store, domains=2, checkpoints=4)[0]
    # readable events whose payload JSON cannot give back byte for byte (a schema-1 style
    # provenance map in a version-2 record; a non-minimal integer) -> payload_b64
    meta = {"actor": "a", "host": "h", "tool": "ckpt-ledger", "tool_version": "0.1.0",
            "reason": None, "correlation_id": None}
    drift = {"type": "DriftObserved", "kind": "k", "checkpoint": None, "disk": None,
             "bitmap": None, "detail": ""}
    odd = [msgpack.packb({"data": drift, "meta": meta}, use_bin_type=True),
           msgpack.packb({"data": drift, "meta": msgpack.packb(meta)}, use_bin_type=True)]
    odd[1] = odd[1].replace(b"\xa1k", b"\xd9\x01k")  # "k" as str8: valid, not minimal
    store.append([NewRecord(first.stream_id, first.stream_name, "DriftObserved", 2, t, p)
                  for t, p in ((1800000000.5, odd[0]), (1800000001.5, odd[1]))])
    return store


def _write(tmp_path: Path, data: bytes, name: str = "x.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- the file ----------------------------------------------------------------------------


def test_export_is_deterministic_and_complete(tmp_path: Path) -> None:
    src = _source()
    data = _export(src)
    assert data == _export(src)
    lines = data.decode("ascii").splitlines()
    header = json.loads(lines[0])
    n = src.last_position()
    assert header == {"domain": None, "events": n, "format": "ckpt-ledger-export",
                      "head": {"hash": head(src)[1], "position": n}, "version": 1}
    assert len(lines) == n + 1
    events = [json.loads(line) for line in lines[1:]]
    assert [e["position"] for e in events] == list(range(1, n + 1))
    for line in lines:  # sorted keys, compact, no wall-clock time anywhere
        obj = json.loads(line)
        assert list(obj) == sorted(obj)
        assert ", " not in line[:40] and "exported_at" not in line
    first = events[0]
    assert first["payload"]["data"]["type"] == "DomainEnrolled"  # decoded, readable
    assert first["prev_hash"] == "0" * 64 and first["type"] == "DomainEnrolled"
    assert "payload_b64" in events[-1] and "payload_b64" in events[-2]
    assert events[1]["prev_hash"] == events[0]["hash"]
    mp = _export(src, "msgpack")
    objs = list(msgpack.Unpacker(io.BytesIO(mp), raw=False))
    assert objs[0] == header and len(objs) == n + 1
    assert all(isinstance(o["payload"], bytes) for o in objs[1:])


def test_an_export_holds_the_events_as_log_prints_them(tmp_path: Path) -> None:
    """Version 2 (what ``export`` writes): each event line is the event as ``log --jsonl``
    prints it, valid against the published schema, plus its ``record``; the stored payload
    is there only where that shape does not give it back."""
    src = _source()
    data = _export(src, version=2)
    assert data == _export(src, version=2)  # deterministic
    lines = [json.loads(line) for line in data.decode("ascii").splitlines()]
    header, events = lines[0], lines[1:]
    assert header["version"] == 2 and header["events"] == len(events) == src.last_position()
    schema = json.loads((ROOT / "ledger" / "schemas" / "event.schema.json").read_text())
    for stored, line in zip(src.read_all(), events, strict=True):
        view = event_view(stored).model_dump(mode="json")
        record = line["record"]
        assert {k: v for k, v in line.items() if k != "record"} == view
        jsonschema.validate(line, schema)
        assert record["hash"] == stored.hash and record["recorded_at"] == stored.recorded_at
    assert all("payload_b64" not in e["record"] for e in events[:-2])  # the ledger's own
    assert all("payload_b64" in e["record"] for e in events[-2:])  # another writer's bytes
    for fmt in ("jsonl", "msgpack"):  # both read back as the very records
        path = _write(tmp_path, _export(src, fmt, version=2), f"e.{fmt}")
        dst = SqliteStore(str(tmp_path / f"{fmt}.db"))
        assert import_log(dst, path).imported == src.last_position()
        assert list(dst.read_all()) == list(src.read_all())
        dst.close()


def test_a_time_inside_an_event_survives_the_export(tmp_path: Path) -> None:
    """An event whose data holds a time (shown as ISO 8601, to the second) keeps its exact
    payload in the record, and imports as the very record."""
    src = MemoryStore()
    first = domain_history(src, domains=1, checkpoints=1)[0]
    prov = Provenance(actor="a", host="h")
    started = BackupStarted(job="j1", at=1800000000.123456)
    src.append([NewRecord(first.stream_id, first.stream_name, "BackupStarted", 2,
                          1800000001.5, encode_payload(started, prov))])
    data = _export(src, version=2)
    last = json.loads(data.splitlines()[-1])
    assert last["data"]["at"] == "2027-01-15T08:00:00Z" and "payload_b64" in last["record"]
    dst = MemoryStore()
    import_log(dst, _write(tmp_path, data))
    assert list(dst.read_all()) == list(src.read_all())


def test_an_export_refuses_an_event_edited_in_one_place_only(tmp_path: Path) -> None:
    """The shown fields and the stored record must agree: an edit of either alone (even
    where the hash cannot see it, as the ISO time or a field beside a kept payload) is
    refused, naming the position."""
    ls = _lines(_export(_source(), version=2))
    last = len(ls) - 1
    cases = [
        (2, lambda o: o.__setitem__("recorded_at", "2001-01-01T00:00:00Z")),
        (last, lambda o: o.__setitem__("actor", "mallory")),  # its payload kept in b64
        (3, lambda o: o.__setitem__("schema", "ckpt-ledger/event/2")),
        (3, lambda o: o.pop("record")),
        (3, lambda o: o["record"].__setitem__("extra", 1)),
        (3, lambda o: o.__setitem__("data", {"nonsense": True})),
    ]
    for pos, change in cases:
        path = _write(tmp_path, _join([*ls[:pos], _edit(ls[pos], change), *ls[pos + 1:]]))
        with pytest.raises(LedgerError) as ei:
            import_log(MemoryStore(), path)
        assert ei.value.code == "INVALID_ARG" and (
            f"position {pos}" in str(ei.value) or f"line {pos + 1}" in str(ei.value)), ei.value


def test_round_trip_into_a_file_backend(tmp_path: Path) -> None:
    src = _source()
    for fmt in ("jsonl", "msgpack"):
        path = tmp_path / f"e.{fmt}"
        summary = export_log(src, path, fmt)  # type: ignore[arg-type]
        assert summary.events == src.last_position()
        assert path.read_bytes() == _export(src, fmt, version=2)
        for dst in (SqliteStore(str(tmp_path / f"{fmt}.db")),
                    MsgpackLogStore(str(tmp_path / f"{fmt}.log"))):
            done = import_log(dst, path)
            assert (done.present, done.imported) == (0, src.last_position())
            assert list(dst.read_all()) == list(src.read_all())
            for v in (1, 2):
                assert _export(dst, version=v) == _export(src, version=v)
                assert _export(dst, "msgpack", version=v) == _export(src, "msgpack", version=v)
            again = import_log(dst, path)  # already all there: nothing to do
            assert (again.present, again.imported) == (src.last_position(), 0)
            dst.close()


def test_import_appends_only_the_missing_tail(tmp_path: Path) -> None:
    src = MemoryStore()
    domain_history(src, domains=1, checkpoints=3)
    early = _write(tmp_path, _export(src), "early.jsonl")
    k = src.last_position()
    domain_history(src, domains=2, checkpoints=2, seed=4)
    late = _write(tmp_path, _export(src), "late.jsonl")
    dst = SqliteStore(str(tmp_path / "d.db"))
    assert import_log(dst, early).imported == k
    done = import_log(dst, late)
    assert (done.present, done.imported) == (k, src.last_position() - k)
    assert _export(dst) == late.read_bytes()
    # and a store that is ahead of a file is refused
    with pytest.raises(LedgerError) as ei:
        import_log(dst, early)
    assert ei.value.code == "OPERATION_FAILED" and f"position {k + 1}" in str(ei.value)
    dst.close()


def test_a_store_with_another_history_is_refused(tmp_path: Path) -> None:
    src = _source()
    path = _write(tmp_path, _export(src))
    dst = MemoryStore()
    domain_history(dst, domains=1, checkpoints=1)  # same first event...
    dst.append([rec("other", b"mine")])  # ...then something else at position 3
    before = _export(dst)
    with pytest.raises(LedgerError) as ei:
        import_log(dst, path)
    msg = str(ei.value)
    assert ei.value.code == "OPERATION_FAILED" and "position 3" in msg and "\n" not in msg
    assert "nothing was imported" in msg and _export(dst) == before
    other = MemoryStore()
    domain_history(other, domains=1, checkpoints=1, seed=9)  # another ledger altogether
    with pytest.raises(LedgerError) as ei:
        import_log(other, path)
    assert "position 1" in str(ei.value)


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")[:-1]


def _join(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def _edit(line: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    obj = json.loads(line)
    change(obj)
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _bad_files(data: bytes, version: int = 1) -> list[tuple[str, bytes, str]]:
    """(name, file, words the refusal must contain)."""
    ls = _lines(data)

    def rec(o: dict[str, Any]) -> dict[str, Any]:  # where the stored fields are
        return o if version == 1 else o["record"]

    if version == 1:
        meta = lambda o: o["payload"]["meta"].__setitem__("actor", "mallory")  # noqa: E731
    else:
        meta = lambda o: o.__setitem__("actor", "mallory")  # noqa: E731
    return [
        ("cut mid-line", data[: len(data) - 20], "truncated"),
        ("cut at a line", _join(ls[:-2]), "truncated"),
        ("header only", _join(ls[:1]), "truncated"),
        ("empty", b"", "empty"),
        ("edited payload", _join([*ls[:3], _edit(ls[3], meta), *ls[4:]]), "position 3"),
        ("edited b64", _join([*ls[:-1], _edit(ls[-1], lambda o: rec(o).__setitem__(
            "payload_b64", "AAAA"))]), f"position {len(ls) - 1}"),
        ("edited time", _join([*ls[:2], _edit(ls[2], lambda o: rec(o).__setitem__(
            "recorded_at", rec(o)["recorded_at"] + 1e-6)), *ls[3:]]), "position 2"),
        ("edited hash", _join([*ls[:2], _edit(ls[2], lambda o: rec(o).__setitem__(
            "hash", "0" * 64)), *ls[3:]]), "position 2"),
        ("deleted", _join([*ls[:2], *ls[3:]]), "position 3"),
        ("swapped", _join([ls[0], ls[2], ls[1], *ls[3:]]), "position 2"),
        ("duplicated", _join([*ls[:3], ls[2], *ls[3:]]), "position 2"),
        ("header count", _join([_edit(ls[0], lambda o: o.__setitem__("events", 3)), *ls[1:]]),
         "header says 3"),
        ("not json", b"{hello\n", "line 1"),
        ("not an export", b'{"a": 1}\n', "not a ckpt-ledger export"),
        ("newer version", _join([_edit(ls[0], lambda o: o.__setitem__("version", 3)),
                                 *ls[1:]]), "version 3"),
        ("stray field", _join([*ls[:2], _edit(ls[2], lambda o: o.__setitem__("x", 1)),
                               *ls[3:]]), "line 3"),
    ]


@pytest.mark.parametrize("version", [1, 2])
def test_bad_files_are_refused_before_anything_is_written(tmp_path: Path, version: int) -> None:
    data = _export(_source(), version=version)
    for name, bad, words in _bad_files(data, version):
        path = _write(tmp_path, bad, "bad.jsonl")
        dst = MemoryStore()
        with pytest.raises(LedgerError) as ei:
            import_log(dst, path)
        msg = str(ei.value)
        assert ei.value.code == "INVALID_ARG" and "\n" not in msg, (name, msg)
        assert words in msg and "bad.jsonl" in msg, (name, msg)
        assert dst.last_position() == 0, name
    mp = _export(_source(), "msgpack", version=version)
    for bad in (mp[:-3], mp[: len(mp) // 2], mp[:1]):
        with pytest.raises(LedgerError) as ei:
            read_export(_write(tmp_path, bad, "bad.mp"))
        assert ei.value.code == "INVALID_ARG"
    objs = list(msgpack.Unpacker(io.BytesIO(mp), raw=False))
    if version == 1:
        objs[4]["payload"] = objs[4]["payload"] + b"x"
    else:
        objs[4]["host"] = "elsewhere"
    edited = b"".join(msgpack.packb(o, use_bin_type=True) for o in objs)
    with pytest.raises(LedgerError) as ei:
        read_export(_write(tmp_path, edited, "bad.mp"))
    assert "position 4" in str(ei.value)


def test_domain_export(tmp_path: Path) -> None:
    src = _source()
    sid = next(r.stream_id for r in src.read_all() if r.stream_name == "vm1")
    data = _export(src, "jsonl", sid)
    lines = [json.loads(line) for line in data.splitlines()]
    header, events = lines[0], lines[1:]
    assert header["domain"] == {"name": "vm", "stream_id": sid}
    assert header["head"]["position"] == src.last_position()
    assert events and all(e["stream_id"] == sid for e in events)
    assert header["events"] == len(events) == src.stream_version(sid)
    for e in events:  # each event's own hash can be checked from the file alone
        plain = e["payload"]
        if e["schema_version"] >= 2:  # the provenance is packed on its own in the payload
            plain = {**plain, "meta": msgpack.packb(plain["meta"], use_bin_type=True)}
        payload = msgpack.packb(plain, use_bin_type=True)
        assert e["hash"] == event_hash(e["position"], e["stream_id"], e["stream_name"],
                                       e["stream_version"], e["type"], e["schema_version"],
                                       e["recorded_at"], payload, e["prev_hash"])
    with pytest.raises(LedgerError) as ei:
        import_log(MemoryStore(), _write(tmp_path, data))
    assert "of domain vm only" in str(ei.value) and "whole ledger" in str(ei.value)


def test_a_broken_store_is_not_exported(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "s.db"))
    domain_history(store, domains=1, checkpoints=2)
    with contextlib.closing(sqlite3.connect(tmp_path / "s.db")) as raw:
        raw.execute("UPDATE events SET stream_name = 'evil' WHERE position = 2")
        raw.commit()
    with pytest.raises(LedgerError) as ei:
        export_log(store, tmp_path / "out.jsonl")
    assert ei.value.code == "STORE_ERROR" and "position 2" in str(ei.value)
    assert list(tmp_path.glob("*.jsonl")) == [] and list(tmp_path.glob(".*tmp")) == []
    store.close()


# --- CLI ---------------------------------------------------------------------------------


@pytest.fixture
def host(tmp_path: Path) -> Host:
    command()  # build the click command before Host.main patches typer's builder
    h = Host(tmp_path)
    store = SqliteStore(str(h.db))
    domain_history(store, domains=2, checkpoints=3)
    store.close()
    return h


def test_cli_export_and_import_log(host: Host, tmp_path: Path) -> None:
    out = tmp_path / "e.jsonl"
    run = host.main("export", str(out))
    assert run.code == 0 and run.stdout.startswith("exported 12 events (head 12:"), run
    data = out.read_bytes()
    assert host.main("export", str(out)).code == 0 and out.read_bytes() == data
    dash = host.main("export", "-")
    assert dash.code == 0 and dash.stdout.encode() == data and "exported" in dash.stderr
    mp = host.main("export", "--format", "msgpack", str(tmp_path / "e.mp"), "--json")
    assert mp.json()["events"] == 12 and mp.json()["format"] == "msgpack"
    dom = host.main("export", "--domain", "vm1", str(tmp_path / "d.jsonl"), "--json").json()
    assert dom["domain"] == "vm1" and 0 < dom["events"] < 12
    new = f"sqlite:///{tmp_path}/copy.db"
    run = host.main("import-log", str(out), env=host.env(CKPT_LEDGER_STORE=new))
    assert run.code == 0 and run.stdout.startswith("imported 12 events (0 already present)")
    again = host.main("--store", new, "import-log", str(tmp_path / "e.mp"), "--json").json()
    assert again["imported"] == 0 and again["present"] == 12
    assert host.main("--store", new, "export", "-").stdout.encode() == data
    assert host.main("--store", new, "verify-log").code == 0


def test_cli_bad_input(host: Host, tmp_path: Path) -> None:
    good = tmp_path / "e.jsonl"
    assert host.main("export", str(good)).code == 0
    data = good.read_bytes()
    target = f"sqlite:///{tmp_path}/t.db"
    picked = ("cut mid-line", "cut at a line", "edited payload", "edited hash", "swapped")
    for name, bad, words in [f for f in _bad_files(data, 2) if f[0] in picked]:
        path = _write(tmp_path, bad, "bad.jsonl")
        run = host.main("--store", target, "import-log", str(path))
        assert run.code == 1 and run.stdout == "", (name, run)
        assert run.stderr.startswith("error: ") and run.stderr.count("\n") == 1, run.stderr
        assert words in run.stderr, (name, run.stderr)
    assert "holds no events" in host.main("--store", target, "head").stderr  # nothing imported
    # a file from another ledger into a non-empty store
    other = tmp_path / "other.jsonl"
    store = MemoryStore()
    domain_history(store, domains=1, checkpoints=1, seed=3)
    other.write_bytes(_export(store))
    run = host.main("import-log", str(other))
    assert run.code == 1 and "position 1" in run.stderr and run.stderr.count("\n") == 1
    for args, words in ((["export", "--format", "xml", str(tmp_path / "x")], "--format"),
                        (["export", str(tmp_path / "nope" / "x.jsonl")], "does not exist"),
                        (["export", "--domain", "ghost", str(tmp_path / "g")], "ghost"),
                        (["import-log", str(tmp_path / "missing.jsonl")], "cannot read")):
        run = host.main(*args)
        assert run.code != 0 and run.stderr.count("\n") == 1 and words in run.stderr, run


# --- the property: export -> import anywhere -> export gives the same bytes ---------------

_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3),
    max_leaves=6,
)
_PAYLOADS = st.one_of(st.binary(max_size=24),
                      _JSONISH.map(lambda v: msgpack.packb(v, use_bin_type=True)))
_HISTORY = st.lists(
    st.tuples(st.sampled_from(["a", "b", "ü-c"]), st.lists(_PAYLOADS, min_size=1, max_size=3),
              st.floats(min_value=0, max_value=4e9, allow_nan=False), st.sampled_from(
                  ["T", "DomainEnrolled", "Ω"])),
    min_size=0, max_size=10,
)


@functools.cache
def _pg_ok() -> bool:
    """Whether PostgreSQL is there (without it the property runs on the other three)."""
    try:
        import psycopg

        psycopg.connect(PG_URL, connect_timeout=3).close()
        return True
    except Exception as e:
        if os.environ.get("CKPT_LEDGER_REQUIRE_REAL") == "1":
            pytest.fail(f"PostgreSQL not usable at {PG_URL}: {e}")
        return False


@contextlib.contextmanager
def _backends(folder: str, pg: bool) -> Iterator[list[EventStore]]:
    stores: list[EventStore] = [MemoryStore(), SqliteStore(f"{folder}/p.db"),
                                MsgpackLogStore(f"{folder}/p.log")]
    schema = None
    if pg:
        from backends.postgres import PostgresStore

        schema = f"t_{uuid.uuid4().hex[:16]}"
        stores.append(PostgresStore(f"{PG_URL}?schema={schema}"))
    try:
        yield stores
    finally:
        for s in stores:
            s.close()
        if schema is not None:
            import psycopg

            with psycopg.connect(PG_URL, autocommit=True) as admin:
                admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.mark.postgres
@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(history=_HISTORY)
def test_export_is_identical_on_every_backend_and_import_takes_only_readable_events(
        history: list[tuple[str, list[bytes], float, str]]) -> None:
    """Arbitrary records (mostly nothing the ledger could fold) export to the same bytes
    from every backend; importing them is refused, with nothing written, unless every
    event can be read, and then the import exports the same bytes again."""
    src = MemoryStore()
    for stream, payloads, at, type_ in history:
        src.append([NewRecord(stream, f"vm {stream}", type_, 1, at, p) for p in payloads])
    files = {fmt: _export(src, fmt) for fmt in ("jsonl", "msgpack")}
    readable = first_unreadable(list(src.read_all())) is None
    with tempfile.TemporaryDirectory() as folder:
        for fmt, data in files.items():
            path = Path(folder) / f"e.{fmt}"
            path.write_bytes(data)
            for kind, direct in (("copied", True), ("imported", False)):
                sub = Path(folder) / f"{fmt}-{kind}"
                sub.mkdir()
                with _backends(str(sub), _pg_ok()) as stores:
                    for store in stores:
                        if direct:
                            copy_store(src, store)
                        elif readable:
                            import_log(store, path)
                        else:
                            with pytest.raises(LedgerError) as ei:
                                import_log(store, path)
                            assert ei.value.code == "INVALID_ARG"
                            assert store.last_position() == 0, store.url
                            continue
                        assert _export(store, "jsonl") == files["jsonl"], store.url
                        assert _export(store, "msgpack") == files["msgpack"], store.url


@pytest.mark.postgres
@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(domains=st.integers(0, 3), checkpoints=st.integers(0, 3), seed=st.integers(0, 999),
       t0=st.floats(0, 4e9, allow_nan=False))
def test_a_real_history_round_trips_through_every_backend(
        domains: int, checkpoints: int, seed: int, t0: float) -> None:
    src = MemoryStore()
    domain_history(src, domains=domains, checkpoints=checkpoints, seed=seed, t0=t0)
    files = {(fmt, v): _export(src, fmt, version=v) for fmt in ("jsonl", "msgpack")
             for v in (1, 2)}
    with tempfile.TemporaryDirectory() as folder:
        for (fmt, v), data in files.items():
            path = Path(folder) / f"e{v}.{fmt}"
            path.write_bytes(data)
            sub = Path(folder) / f"{fmt}{v}"
            sub.mkdir()
            with _backends(str(sub), _pg_ok()) as stores:
                for store in stores:
                    import_log(store, path)
                    for key, want in files.items():
                        assert _export(store, key[0], version=key[1]) == want, store.url
