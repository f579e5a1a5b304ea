"""The disk fills up during an append: ENOSPC on a small tmpfs, EFBIG under RLIMIT_FSIZE.

Each case must give one clear LedgerError (STORE_ERROR) instead of a traceback, leave nothing
half-written (reopened, every event is readable, positions are gapless and the failed append
is absent) and accept appends again once there is room. The CLI's ``create`` on a full disk
exits non-zero with one line on stderr.

The tmpfs cases need ``mount`` (root): they skip with the reason when it is not permitted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.mock import MockHypervisor
from ledger import Ledger
from ledger.domain.errors import LedgerError
from ledger.log.records import NewRecord, StoredRecord
from ledger.log.store import EventStore

try:
    from .helpers import Host, assert_one_error_line, small_tmpfs
    from .proc_worker import open_store
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    from helpers import Host, assert_one_error_line, small_tmpfs  # type: ignore[no-redef]
    from proc_worker import open_store  # type: ignore[no-redef]

WORKER = Path(__file__).with_name("proc_worker.py")
BACKENDS = {"sqlite": "ledger.db", "msgpack": "ledger.log"}
FILLER = 48 * 1024


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs mounted on a fresh folder (skip when mounting is not permitted)."""
    with small_tmpfs(tmp_path, "size=256k") as where:
        yield where


def _rec(stream: str, i: int) -> NewRecord:
    return NewRecord(stream, f"vm-{stream}", "T", 1, 1700000000.5,
                     os.urandom(200) + f"#{stream}:{i}".encode())


def _fill(store: EventStore) -> tuple[list[bytes], list[bytes], LedgerError]:
    """Append (one- and two-record batches) until it fails: (payloads written, payloads of
    the failed append, the error)."""
    written: list[bytes] = []
    for i in range(100_000):
        batch = [_rec("a", i), _rec("a", -i)] if i % 3 == 0 else [_rec("b", i)]
        try:
            store.append(batch)
        except LedgerError as e:
            return written, [r.payload for r in batch], e
        written += [r.payload for r in batch]
    raise AssertionError("the disk never filled up")


def _check_error(e: LedgerError, *words: str) -> None:
    assert e.code == "STORE_ERROR", e
    line = str(e)
    assert "\n" not in e.one_line() and e.one_line().startswith(line)  # the hint follows
    assert any(w in line for w in words), line


def _reopen(url: str) -> tuple[EventStore, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = open_store(url)
    return store, [str(w.message) for w in caught]


def _check_records(records: list[StoredRecord], written: list[bytes], failed: list[bytes]) -> None:
    assert [r.position for r in records] == list(range(1, len(records) + 1))
    versions: dict[str, list[int]] = {}
    for r in records:
        versions.setdefault(r.stream_id, []).append(r.stream_version)
    assert all(v == list(range(1, len(v) + 1)) for v in versions.values())
    payloads = [r.payload for r in records]
    assert payloads[: len(written)] == written
    assert not set(failed) & set(payloads), "the failed append is (partly) visible"


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_enospc_on_a_full_tmpfs(backend: str, tmpfs: Path) -> None:
    url = f"{backend}:///{tmpfs}/{BACKENDS[backend]}"
    filler = tmpfs / "filler"
    filler.write_bytes(b"\0" * FILLER)  # what "freeing space" will delete
    store = open_store(url)
    written, failed, err = _fill(store)
    assert written, "not even one append fitted"
    _check_error(err, "full", "No space left")
    with pytest.raises(LedgerError) as again:  # still full: still a clean error
        store.append([_rec("b", -1)])
    _check_error(again.value, "full", "No space left")
    store.close()

    # reopened while the disk is still full: everything readable, the failure absent (SQLite
    # may be unable to open a WAL database on a full disk at all: then one clean error)
    try:
        store, messages = _reopen(url)
    except LedgerError as e:
        assert backend == "sqlite", e
        _check_error(e, "full", "disk I/O error")
    else:
        assert all("torn" in m for m in messages), messages
        _check_records(list(store.read_all()), written, failed)
        store.close()

    filler.unlink()  # free space: appends work again, in the same handle and after reopening
    store, _ = _reopen(url)
    try:
        records = list(store.read_all())
        _check_records(records, written, failed)
        new = store.append([_rec("b", 10**6)])
        assert new[0].position == len(records) + 1
    finally:
        store.close()


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_efbig_under_rlimit_fsize(backend: str, tmp_path: Path) -> None:
    """In a subprocess: RLIMIT_FSIZE of 64 KiB, SIGXFSZ ignored (writes fail with EFBIG)."""
    url = f"{backend}:///{tmp_path}/{BACKENDS[backend]}"
    p = subprocess.run([sys.executable, str(WORKER), "fsize", url, str(64 * 1024)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    result = json.loads(p.stdout)
    assert result["appended"] > 0
    code, line = result["error"]
    assert code == "STORE_ERROR", line
    assert "File too large" in line or "disk I/O error" in line or "full" in line, line
    assert result["after"] == result["appended"] + 1, result  # works once the limit is lifted
    store, messages = _reopen(url)
    try:
        assert all("torn" in m for m in messages), messages
        records = list(store.read_all())
        assert [r.position for r in records] == list(range(1, result["appended"] + 2))
        assert records[-1].payload.endswith(b"-1")  # the append made after lifting the limit
    finally:
        store.close()


def _fill_disk(folder: Path) -> Path:
    """Write a file until the filesystem is full; the file."""
    ballast = folder / "ballast"
    with open(ballast, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return ballast


def _top_up(url: str, state: str) -> int:
    """Create checkpoints through the library until the store refuses (a file's last page
    may still have room when the disk is full); how many were recorded."""
    try:
        lg = Ledger.open(open_store(url), MockHypervisor(state))
    except LedgerError:
        return 0  # SQLite cannot even open a WAL database on a full disk
    try:
        for i in range(10_000):
            lg.create("vm", f"fill{i}")
    except LedgerError as e:
        _check_error(e, "full", "No space left", "disk I/O error")
        return i
    finally:
        lg.close()
    raise AssertionError("the disk never filled up")


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_cli_create_on_a_full_disk(backend: str, tmpfs: Path, tmp_path: Path) -> None:
    host = Host(tmp_path / "host")
    host.folder.mkdir()
    host.store = f"{backend}:///{tmpfs}/{BACKENDS[backend]}"  # the ledger on the small disk
    hv = MockHypervisor(str(host.state))  # the hypervisor's state is on a roomy disk
    hv.define("vm", ["vda"])
    assert host.proc("create", "vm", "c1").code == 0
    ballast = _fill_disk(tmpfs)
    _top_up(host.store, str(host.state))

    run = host.proc("create", "vm", "c2")
    line = assert_one_error_line(run, "STORE_ERROR")
    assert any(w in line for w in ("full", "No space left", "disk I/O error")), line

    ballast.unlink()
    log = host.proc("log", "--json")  # every event readable, positions gapless
    assert log.code == 0, log.stderr
    assert [e["position"] for e in log.json()] == list(range(1, len(log.json()) + 1))
    known = {c["name"] for c in host.proc("list", "vm", "--json").json()}
    on_host = set(hv.list_checkpoints("vm"))
    assert known <= on_host and len(on_host - known) <= 2, (known, on_host)  # in-flight ones
    assert host.proc("import").code == 0  # they are recorded by import
    assert host.proc("create", "vm", "c3").code == 0  # and appends work again
    known = {c["name"] for c in host.proc("list", "vm", "--json").json()}
    assert known == set(hv.list_checkpoints("vm")) and {"c1", "c3"} <= known


def test_new_msgpack_log_on_a_full_disk(tmpfs: Path) -> None:
    """Writing a new log's header fails cleanly too (it once escaped as a raw OSError)."""
    _fill_disk(tmpfs)
    with pytest.raises(LedgerError) as err:
        open_store(f"msgpack:///{tmpfs}/new.log")
    _check_error(err.value, "No space left")


def test_a_create_the_store_could_not_record_says_how_to_reconcile(tmp_path: Path) -> None:
    """The hypervisor made the checkpoint, the append failed: the error says the ledger
    lags behind the host and that `ckpt-ledger import` reconciles it."""
    from adapters.mock import MockHypervisor
    from ledger import Ledger, LedgerError

    class FullStore:
        """A real SQLite store whose appends fail from the second on, as on a full disk
        (the real full-disk cases are above; this one is about the message)."""

        def __init__(self, url: str) -> None:
            from backends.sqlite import open_url

            self.inner = open_url(url)
            self.appends = 0

        def __getattr__(self, name: str) -> object:
            return getattr(self.inner, name)

        def append(
            self, records: list[NewRecord], *args: object, **kw: object
        ) -> list[StoredRecord]:
            self.appends += 1
            if self.appends > 1:
                raise LedgerError("STORE_ERROR", "cannot append to store: database or disk is full")
            return self.inner.append(records, *args, **kw)

    hv = MockHypervisor(str(tmp_path / "host.json"))
    hv.define("vm", ["vda"])
    store = FullStore(f"sqlite:///{tmp_path / 'l.db'}")
    with Ledger.open(store=store, hypervisor=hv) as lg:  # type: ignore[arg-type]
        lg.create("vm", "c1")
        with pytest.raises(LedgerError) as err:
            lg.create("vm", "c2")
    assert err.value.code == "STORE_ERROR"
    assert "ledger now lags behind" in str(err.value) and "\n" not in str(err.value)
    assert err.value.hint is not None and "ckpt-ledger import vm" in err.value.hint
    assert hv.list_checkpoints("vm") == ["c1", "c2"]
    with Ledger.open(store=f"sqlite:///{tmp_path / 'l.db'}", hypervisor=hv) as lg:
        assert lg.import_(["vm"])[0].added == ["c2"]


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_reads_answer_on_a_full_disk(backend: str, tmpfs: Path, tmp_path: Path) -> None:
    """Reads need no space: with the store's disk full, list, log, show, history,
    verify-log and head answer (they open the store read-only: no WAL switch, no -shm, no
    snapshot), and leave the store's files as they were."""
    host = Host(tmp_path / "host")
    host.folder.mkdir()
    host.store = f"{backend}:///{tmpfs}/{BACKENDS[backend]}"
    hv = MockHypervisor(str(host.state))
    hv.define("vm", ["vda"])
    for name in ("c1", "c2"):
        assert host.main("create", "vm", name).code == 0
    ballast = _fill_disk(tmpfs)
    before = {str(p): p.read_bytes() for p in tmpfs.rglob("*") if p.is_file() and p != ballast}
    env = host.env(CKPT_LEDGER_SNAPSHOT_EVERY="1")
    runs = {" ".join(argv): host.main(*argv, env=env) for argv in (
        ["list", "vm", "--json"], ["log", "--json"], ["show", "vm", "c1", "--json"],
        ["history", "vm", "c2"], ["verify-log"], ["head"])}
    for argv, run in runs.items():
        assert run.code == 0, (argv, run.everything)
    assert [v["name"] for v in runs["list vm --json"].json()] == ["c1", "c2"]
    events = runs["log --json"].json()
    assert [e["position"] for e in events] == list(range(1, len(events) + 1))
    assert runs["verify-log"].stdout.startswith(f"ok: {len(events)} events")
    assert runs["head"].stdout.startswith(f"{len(events)}:")
    assert {str(p): p.read_bytes() for p in tmpfs.rglob("*")
            if p.is_file() and p != ballast} == before
