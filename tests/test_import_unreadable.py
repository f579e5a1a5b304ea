"""import-log refuses events this ckpt-ledger could not read or fold, before appending any.

Each file is a real export whose hashes are all valid (the bad event was appended to a
memory store, which chained it, and the store exported): only reading the events as the
ledger does can tell. The refusal is one line naming the position; the target store, which
already holds the good prefix, is unchanged and every read command still works on it.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest

from backends.memory import MemoryStore
from ledger.app.integrity import export_records, import_log
from ledger.domain.errors import LedgerError
from ledger.domain.events import (
    SCHEMA_VERSION,
    CheckpointCreated,
    CheckpointDeleted,
    DomainEnrolled,
    event_data,
)
from ledger.domain.model import CheckpointDisk, DomainDisk
from ledger.log.records import NewRecord, Provenance, encode_payload, provenance_bytes
from ledger.log.store import EventStore

try:
    from .helpers import Host, assert_one_error_line
    from .proc_worker import open_store
    from .store_contract import domain_history
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    from helpers import Host, assert_one_error_line  # type: ignore[no-redef]
    from proc_worker import open_store  # type: ignore[no-redef]
    from store_contract import domain_history  # type: ignore[no-redef]

PROV = Provenance(actor="mallory", host="evil")
META = provenance_bytes(PROV)
CREATED = CheckpointCreated(name="cpX", parent=None, creation_time=1, disks=(
    CheckpointDisk(name="vda", bitmap="cpX"),), xml="<domaincheckpoint/>")


def _pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _created(**over: object) -> bytes:
    return _pack({"data": {**event_data(CREATED), **over}, "meta": META})


# name -> (type, schema version, payload, recorded_at, words the refusal must contain)
BAD: dict[str, tuple[str, int, bytes, float, str]] = {
    "unknown type": ("Bogus", 2, _pack({"data": {"type": "Bogus"}, "meta": META}), 1.0,
                     "Bogus"),
    "non-map payload": ("CheckpointCreated", 2, _pack([1, 2, 3]), 1.0, "not a map"),
    "payload a string": ("CheckpointCreated", 2, _pack("hello"), 1.0, "not a map"),
    "not msgpack": ("CheckpointCreated", 2, b"\xc1\xc1", 1.0, "not msgpack"),
    "no meta": ("CheckpointCreated", 2, _pack({"data": event_data(CREATED)}), 1.0,
                "not a map of data and meta"),
    "extra key": ("CheckpointCreated", 2, _pack({"data": event_data(CREATED), "meta": META,
                                                 "x": 1}), 1.0, "data and meta"),
    "meta not provenance": ("CheckpointCreated", 2, _pack({"data": event_data(CREATED),
                                                           "meta": _pack([1])}), 1.0,
                            "provenance"),
    "schema 99": ("CheckpointCreated", 99, encode_payload(CREATED, PROV), 1.0,
                  f"written by a newer ckpt-ledger (event schema 99; this version "
                  f"understands up to {SCHEMA_VERSION})"),
    "schema 0": ("CheckpointCreated", 0, encode_payload(CREATED, PROV), 1.0, "schema 0"),
    "schema -1": ("CheckpointCreated", -1, encode_payload(CREATED, PROV), 1.0, "schema -1"),
    "schema 2**63-1": ("CheckpointCreated", 2**63 - 1, encode_payload(CREATED, PROV), 1.0,
                       "newer"),
    "type mismatch": ("CheckpointDeleted", 2, encode_payload(CREATED, PROV), 1.0,
                      "is not its payload's"),
    "delete unknown": ("CheckpointDeleted", 2, encode_payload(
        CheckpointDeleted(name="ghost", deleted=("ghost",)), PROV), 1.0, "ghost"),
    "wrong field type": ("CheckpointCreated", 2, _created(creation_time="soon"), 1.0,
                         "creation_time"),
    "missing field": ("CheckpointCreated", 2, _pack({"data": {
        k: v for k, v in event_data(CREATED).items() if k != "xml"}, "meta": META}), 1.0,
        "xml"),
    "time out of range": ("CheckpointCreated", 2, encode_payload(CREATED, PROV), 1e300,
                          "not a time"),
    "time negative huge": ("CheckpointCreated", 2, encode_payload(CREATED, PROV), -1e18,
                           "not a time"),
}


def _history() -> MemoryStore:
    store = MemoryStore()
    domain_history(store, domains=2, checkpoints=3)
    return store


def _export(store: EventStore, fmt: str, version: int = 1) -> bytes:
    """Format version 1, which carries any stored bytes (version 2 refuses to write an
    event it cannot read: see the test below)."""
    buf = io.BytesIO()
    export_records(store, buf, fmt, version=version)  # type: ignore[arg-type]
    return buf.getvalue()


def _bad_file(tmp_path: Path, case: str, fmt: str) -> tuple[Path, Path, int]:
    """(the good prefix's export, the export with the bad event after it, its position)."""
    store = _history()
    good = tmp_path / f"good.{fmt}"
    good.write_bytes(_export(store, fmt))
    type_, schema, payload, at, _ = BAD[case]
    sid = next(store.read_all()).stream_id  # vm0's stream
    [bad] = store.append([NewRecord(sid, "vm0", type_, schema, at, payload)])
    path = tmp_path / f"bad.{fmt}"
    path.write_bytes(_export(store, fmt))
    return good, path, bad.position


@pytest.mark.parametrize("fmt", ["jsonl", "msgpack"])
@pytest.mark.parametrize("case", sorted(BAD))
def test_an_unreadable_event_is_refused_before_anything_is_appended(
        tmp_path: Path, case: str, fmt: str) -> None:
    _, path, position = _bad_file(tmp_path, case, fmt)
    for store in (MemoryStore(), _history()):
        before = list(store.read_all())
        with pytest.raises(LedgerError) as err:
            import_log(store, path)
        msg = str(err.value)
        assert err.value.code == "INVALID_ARG" and "\n" not in msg
        assert f"position {position}" in msg and BAD[case][4] in msg, msg
        assert "nothing was imported" in msg
        assert list(store.read_all()) == before


@pytest.mark.parametrize("case", sorted(BAD))
def test_an_unreadable_event_is_not_exported_as_an_event(tmp_path: Path, case: str) -> None:
    """Format version 2 shows each event as ``log`` does: a store holding one it cannot
    decode is not exported (STORE_ERROR naming the position), and one that decodes but
    does not fold exports to a file that import refuses; version 1 carries any bytes."""
    store = _history()
    type_, schema, payload, at, _ = BAD[case]
    sid = next(store.read_all()).stream_id
    [bad] = store.append([NewRecord(sid, "vm0", type_, schema, at, payload)])
    for fmt in ("jsonl", "msgpack"):
        assert _export(store, fmt, version=1)
        try:
            data = _export(store, fmt, version=2)
        except LedgerError as err:
            assert err.code == "STORE_ERROR" and f"position {bad.position}" in str(err)
            continue
        path = tmp_path / f"v2.{fmt}"
        path.write_bytes(data)
        with pytest.raises(LedgerError) as refused:
            import_log(MemoryStore(), path)
        assert f"position {bad.position}" in str(refused.value), refused.value


def _reads_work(host: Host, url: str) -> None:
    for argv in (["list", "vm0"], ["log"], ["log", "--domain", "vm1"], ["rebuild"],
                 ["history", "vm0", "cp1"], ["show", "vm0", "cp2"], ["verify-log"]):
        run = host.main("--store", url, *argv)
        assert run.code == 0, (argv, run.stderr)


TARGETS: dict[str, Callable[[Path], str]] = {
    "sqlite": lambda p: f"sqlite:///{p}/t.db",
    "msgpack": lambda p: f"msgpack:///{p}/t.log",
}
CLI_CASES = ("unknown type", "non-map payload", "no meta", "schema 99", "type mismatch",
             "delete unknown", "wrong field type", "time out of range")


def _cli_refuses(tmp_path: Path, url: str, case: str) -> None:
    good, path, position = _bad_file(tmp_path, case, "jsonl")
    host = Host(tmp_path)
    assert host.main("--store", url, "import-log", str(good)).code == 0
    store = open_store(url)
    before = list(store.read_all())
    store.close()
    line = assert_one_error_line(host.main("--store", url, "import-log", str(path)),
                                 "INVALID_ARG")
    assert f"position {position}" in line and BAD[case][4] in line, line
    store = open_store(url)
    assert list(store.read_all()) == before
    store.close()
    _reads_work(host, url)


@pytest.mark.parametrize("case", CLI_CASES)
@pytest.mark.parametrize("backend", sorted(TARGETS))
def test_cli_import_refuses_and_the_store_still_reads(
        tmp_path: Path, backend: str, case: str) -> None:
    _cli_refuses(tmp_path, TARGETS[backend](tmp_path), case)


@pytest.mark.postgres
@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_import_refuses_on_postgres(tmp_path: Path, pg_url: str, case: str) -> None:
    _cli_refuses(tmp_path, pg_url, case)


def test_an_enrolment_of_another_shape_still_imports(tmp_path: Path) -> None:
    """A readable event in an encoding the ledger does not write (schema 1: provenance as
    a map, exported as base64) is accepted: the check is what the ledger can read."""
    store = _history()
    ev = DomainEnrolled(name="vm9", uuid="u9", disks=(DomainDisk(name="vda"),),
                        policy="independent")
    payload = _pack({"data": event_data(ev), "meta": PROV.model_dump(mode="json")})
    store.append([NewRecord("u9", "vm9", "DomainEnrolled", 1, 5.0, payload)])
    store.append([NewRecord("u9", "vm9", "DomainEnrolled", 2, 6.0, payload)])
    path = tmp_path / "odd.jsonl"
    path.write_bytes(_export(store, "jsonl"))
    assert b"payload_b64" in path.read_bytes()
    target = MemoryStore()
    assert import_log(target, path).imported == store.last_position()
