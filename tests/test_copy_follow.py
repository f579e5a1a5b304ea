"""``copy`` (a whole ledger to another backend, verified) and ``follow`` (tail new events)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from adapters.mock import MockHypervisor
from backends.memory import MemoryStore
from ledger import Ledger
from ledger.app.copying import copy_store, verify_copy
from ledger.domain.errors import LedgerError
from ledger.log.records import NewRecord, StoredRecord
from ledger.log.store import EventStore

try:
    from .helpers import SCRIPT, Host, assert_one_error_line
    from .proc_worker import open_store
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    from helpers import SCRIPT, Host, assert_one_error_line  # type: ignore[no-redef]
    from proc_worker import open_store  # type: ignore[no-redef]



def _fill(url: str, state: Path, creates: int = 4) -> None:
    """Two domains with interleaved creates (enrolments are two-record appends)."""
    hv = MockHypervisor(str(state))
    for d in ("vm1", "vm2"):
        if d not in hv.list_domains():
            hv.define(d, ["vda", "vdb"])
    with Ledger.open(open_store(url), hv) as lg:
        for i in range(creates):
            lg.create("vm1", f"a{i}")
            lg.create("vm2", f"b{i}", reason=f"r{i}")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small SQLite ledger to copy (never written to after it is built)."""
    folder = tmp_path_factory.mktemp("source")
    url = f"sqlite:///{folder}/ledger.db"
    _fill(url, folder / "host.json")
    return url


@contextlib.contextmanager
def _opened(url: str) -> Iterator[EventStore]:
    store = open_store(url)
    try:
        yield store
    finally:
        store.close()


def _records(store: EventStore) -> list[StoredRecord]:
    return list(store.read_all())


# ------------------------------------------------------------------------------- copy
@pytest.mark.parametrize("target", ["msgpack", "sqlite", "memory"])
def test_copy_keeps_every_field(source: str, target: str, tmp_path: Path) -> None:
    dst: EventStore = (MemoryStore() if target == "memory"
                       else open_store(f"{target}:///{tmp_path}/copy.{target}"))
    try:
        with _opened(source) as src:
            seen: list[int] = []
            report = copy_store(src, dst, batch_size=1000, progress=seen.append)
            assert report.verify is not None and report.verify.identical
            assert report.verify.mismatch is None
            assert report.events == sum(seen) == src.last_position() == 10
            assert report.streams == 2
            assert report.batches == 1  # one transaction: 10 records, batch_size 1000
            for a, b in zip(_records(src), _records(dst), strict=True):
                for f in ("position", "stream_id", "stream_name", "stream_version", "type",
                          "schema_version", "recorded_at", "payload"):
                    assert getattr(a, f) == getattr(b, f), f
                if hasattr(a, "hash") and hasattr(b, "hash"):
                    assert a.hash == b.hash
                    assert "hash" in report.verify.fields
        with Ledger(dst) as lg:  # the copy is a working ledger
            lg.catch_up()
            assert [c.name for c in lg.list("vm2")] == ["b0", "b1", "b2", "b3"]
    finally:
        with contextlib.suppress(Exception):
            dst.close()


def test_copy_refuses_a_non_empty_target(source: str, tmp_path: Path) -> None:
    url = f"msgpack:///{tmp_path}/copy.log"
    with _opened(source) as src, _opened(url) as dst:
        copy_store(src, dst)
        with pytest.raises(LedgerError) as err:
            copy_store(src, dst)
        assert err.value.code == "OPERATION_INVALID"
        assert "not empty (10 events)" in str(err.value)
        assert dst.last_position() == 10


class _Tampered(MemoryStore):
    """A memory store whose reads show one payload changed."""

    def read_all(self, after: int = 0, limit: int | None = None) -> Iterator[StoredRecord]:
        for rec in super().read_all(after, limit):
            yield replace(rec, payload=b"x" + rec.payload) if rec.position == 3 else rec


def test_verify_finds_a_changed_record_and_a_missing_one(source: str) -> None:
    with _opened(source) as src:
        bad = _Tampered()
        report = copy_store(src, bad)
        assert report.verify is not None and not report.verify.identical
        mismatch = report.verify.mismatch
        assert mismatch is not None and (mismatch.position, mismatch.field) == (3, "payload")
        assert "position 3: payload differs" in mismatch.describe()
        assert report.verify.source_digest != report.verify.target_digest

        exact, longer = MemoryStore(), MemoryStore()
        copy_store(src, exact, verify=False)
        copy_store(src, longer, verify=False)
        assert verify_copy(src, exact).identical
        longer.append([NewRecord("s", "vm-s", "T", 1, 1.0, b"extra")])
        extra = verify_copy(exact, longer).mismatch
        assert extra is not None and (extra.position, extra.field) == (11, "record")
        missing = verify_copy(longer, exact).mismatch
        assert missing is not None and (missing.position, missing.field) == (11, "record")
        assert (missing.source, missing.target) == ("present", "missing")


def test_cli_copy(source: str, tmp_path: Path) -> None:
    host = Host(tmp_path)
    url = f"msgpack:///{tmp_path}/copy.log"
    run = host.proc("copy", "--from", source, "--to", url)
    assert run.code == 0, run.stderr
    assert run.stdout.startswith("copied 10 events in 2 streams")
    assert "verified: identical" in run.stdout

    again = host.proc("copy", "--from", source, "--to", url)
    assert "not empty" in assert_one_error_line(again, "OPERATION_INVALID")

    data = host.proc("copy", "--from", url, "--to", f"sqlite:///{tmp_path}/back.db",
                     "--json").json()
    assert data["verified"] is True and data["events"] == 10
    assert data["source_digest"] == data["target_digest"]

    for args in (["--from", "memory://", "--to", url], ["--from", url, "--to", "memory://"]):
        line = assert_one_error_line(host.proc("copy", *args), "STORE_URL")
        assert "memory://" in line


def test_cli_copy_mismatch_exits_non_zero(source: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import cli.ops_cmd
    import ledger.app.copying as copying

    real = copying.verify_copy

    def lying(src: EventStore, dst: EventStore, **kw: Any) -> copying.VerifyResult:
        result = real(src, dst, **kw)
        return replace(result, mismatch=copying.Mismatch(2, "type", "A", "B"))

    monkeypatch.setattr(cli.ops_cmd, "verify_copy", lying)
    run = Host(tmp_path).cli("copy", "--from", source, "--to", f"sqlite:///{tmp_path}/c.db")
    line = assert_one_error_line(run, "STORE_ERROR")
    assert "position 2: type differs" in line


@pytest.mark.postgres
def test_copy_to_and_from_postgres(source: str, pg_url: str, tmp_path: Path) -> None:
    with _opened(source) as src, _opened(pg_url) as pg:
        assert copy_store(src, pg).verify.identical  # type: ignore[union-attr]
        with _opened(f"msgpack:///{tmp_path}/back.log") as back:
            report = copy_store(pg, back)
            assert report.verify is not None and report.verify.identical
            assert verify_copy(src, back).identical


# ----------------------------------------------------------------------------- follow
def _follow_while_writing(url: str, state: Path, after: int) -> list[Any]:
    """Follow from ``after`` in this thread while another thread creates two checkpoints."""
    def writer() -> None:
        time.sleep(0.3)
        with Ledger.open(open_store(url), MockHypervisor(str(state))) as lg:
            lg.create("vm1", "live1")
            time.sleep(0.3)
            lg.create("vm2", "live2")

    t = threading.Thread(target=writer)
    t.start()
    try:
        with Ledger(open_store(url)) as lg:
            return list(lg.follow(after=after, timeout=1.5))
    finally:
        t.join()


@pytest.mark.parametrize("backend", ["sqlite", "msgpack"])
def test_ledger_follow_polls(backend: str, tmp_path: Path) -> None:
    url = f"{backend}:///{tmp_path}/ledger.{backend}"
    _fill(url, tmp_path / "host.json", creates=1)  # positions 1..4
    views = _follow_while_writing(url, tmp_path / "host.json", after=2)
    assert [v.position for v in views] == [3, 4, 5, 6]
    assert [v.data.get("name") for v in views[2:]] == ["live1", "live2"]
    assert [v.domain for v in views] == ["vm2", "vm2", "vm1", "vm2"]


@pytest.mark.postgres
def test_ledger_follow_listens_on_postgres(pg_url: str, tmp_path: Path) -> None:
    _fill(pg_url, tmp_path / "host.json", creates=1)
    started = time.monotonic()
    views = _follow_while_writing(pg_url, tmp_path / "host.json", after=0)
    assert [v.position for v in views] == [1, 2, 3, 4, 5, 6]
    assert time.monotonic() - started < 10


def test_follow_times_out_when_quiet(tmp_path: Path) -> None:
    with Ledger(open_store(f"sqlite:///{tmp_path}/l.db")) as lg:
        started = time.monotonic()
        assert list(lg.follow(timeout=0.3)) == []
        assert 0.25 <= time.monotonic() - started < 3


def test_cli_follow(tmp_path: Path) -> None:
    host = Host(tmp_path)
    _fill(host.store, host.state, creates=2)  # positions 1..6
    run = host.proc("follow", "--after", "0", "--jsonl", "--timeout", "0.2", "--domain", "vm2")
    assert run.code == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [e["position"] for e in lines] == [3, 4, 6]
    assert {e["domain"] for e in lines} == {"vm2"}
    assert lines[-1]["type"] == "CheckpointCreated" and lines[-1]["data"]["name"] == "b1"

    table = host.proc("follow", "--after", "4", "--timeout", "0.2")
    assert table.code == 0, table.stderr
    rows = table.stdout.splitlines()
    assert rows[0].split()[:2] == ["Position", "Recorded"] and rows[1].startswith("---")
    assert [r.split()[0] for r in rows[2:]] == ["5", "6"]

    quiet = host.proc("follow", "--jsonl", "--timeout", "0.2")  # default: from the end
    assert quiet.code == 0 and quiet.stdout == "", quiet.stderr

    # live
    env = {k: v for k, v in os.environ.items() if not k.startswith("CKPT_LEDGER_")}
    env["CKPT_LEDGER_STORE"] = host.store
    proc = subprocess.Popen([str(SCRIPT), "follow", "--jsonl", "--after", "6", "--timeout", "20"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        with Ledger.open(open_store(host.store), MockHypervisor(str(host.state))) as lg:
            lg.create("vm1", "tail-me")
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["position"] == 7 and first["data"]["name"] == "tail-me"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _new_ledger(url: str, folder: Path) -> None:
    """A different ledger at ``url``: more events than the one it replaces."""
    _fill(url, folder / "other-host.json", creates=3)


@pytest.mark.parametrize("backend", ["sqlite", "msgpack"])
@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_follow_stops_when_its_store_file_is_deleted_or_replaced(
    tmp_path: Path, backend: str, how: str
) -> None:
    """`follow` on a file store whose file is deleted (and a new store then made at the
    same path) or replaced by another store's file stops with one line saying so and a
    non-zero exit: it never goes on silently following a ghost, nor prints the events of
    the store now at that path."""
    folder = tmp_path / "a"
    folder.mkdir()
    path = folder / f"ledger.{backend}"
    url = f"{backend}:///{path}"
    _fill(url, tmp_path / "host.json", creates=1)  # positions 1..4
    env = {k: v for k, v in os.environ.items() if not k.startswith("CKPT_LEDGER_")}
    env["CKPT_LEDGER_STORE"] = url
    proc = subprocess.Popen([str(SCRIPT), "follow", "--jsonl", "--after", "0", "--timeout", "60"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        seen = [json.loads(proc.stdout.readline())["position"] for _ in range(4)]
        assert seen == [1, 2, 3, 4]
        if how == "deleted":
            shutil.rmtree(folder)  # the store and everything beside it
            folder.mkdir()
            _new_ledger(url, tmp_path)
        else:
            other = tmp_path / "b"
            other.mkdir()
            _new_ledger(f"{backend}:///{other}/ledger.{backend}", tmp_path)
            os.replace(other / f"ledger.{backend}", path)
        code = proc.wait(timeout=20)
        rest, err = proc.stdout.read(), proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
    assert code != 0 and rest == "", (code, rest, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0].endswith(
        "[STORE_ERROR]"), err
    assert str(path) in lines[0] and ("deleted" in lines[0] or "replaced" in lines[0]), err
