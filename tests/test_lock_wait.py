"""A domain's lock held by another process: wait with one message, give up after a timeout.

A child process holds the store's per-domain lock (``EventStore.lock``: a flock on
``<db>.lock`` for SQLite and msgpack, an advisory lock for PostgreSQL). ``create`` then
either fails after ``--lock-timeout`` seconds with one line naming the child, appending
nothing, or -- the child letting go in time -- succeeds after printing one "waiting"
line. The timeout's values are checked like every numeric option.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import SCRIPT, Host, Run, assert_one_error_line

from ledger import Ledger
from ledger.domain.errors import LedgerError
from ledger.log import locks

UUID = "5f0c5e2a-8d3e-4c1b-9f7a-2b6d1e0c9a11"
HOLD = """
import sys, time
from ledger.app.plugins import open_store
store = open_store(sys.argv[1])
with store.lock(sys.argv[2]):
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
store.close()
"""


def make_host(request: pytest.FixtureRequest, tmp_path: Path) -> Host:
    """A host with domain ``vm`` (uuid :data:`UUID`) and one checkpoint, on the store
    ``request.param`` (sqlite, msgpack or postgres)."""
    h = Host(tmp_path)
    if request.param == "msgpack":
        h.store = f"msgpack:///{tmp_path}/ledger.log"
    elif request.param == "postgres":
        request.applymarker(pytest.mark.postgres)
        h.store = request.getfixturevalue("pg_url")
    h.ok("mock", "define", "vm", "--disk", "vda", "--uuid", UUID)
    h.ok("create", "vm", "c1")
    return h


@pytest.fixture(params=["sqlite", "msgpack", "postgres"])
def host(request: pytest.FixtureRequest, tmp_path: Path) -> Host:
    """:func:`make_host` on each store."""
    return make_host(request, tmp_path)


@pytest.fixture(params=["sqlite"])
def sqlite_host(request: pytest.FixtureRequest, tmp_path: Path) -> Host:
    """:func:`make_host` on SQLite (for what does not depend on the store)."""
    return make_host(request, tmp_path)


@pytest.fixture
def holder() -> Iterator[list[subprocess.Popen[bytes]]]:
    """The children :func:`hold` starts; killed afterwards."""
    children: list[subprocess.Popen[bytes]] = []
    yield children
    for c in children:
        c.kill()
        c.wait()


def hold(host: Host, children: list[subprocess.Popen[bytes]], seconds: float) -> int:
    """A child that holds the lock of ``vm`` for ``seconds``; its pid once it holds it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CKPT_LEDGER_")}
    child = subprocess.Popen([sys.executable, "-c", HOLD, host.store, UUID, str(seconds)],
                             stdout=subprocess.PIPE, env=env)
    children.append(child)
    assert child.stdout is not None and child.stdout.readline() == b"held\n"
    return child.pid


def create(host: Host, *global_opts: str, env: dict[str, str] | None = None) -> tuple[Run, float]:
    """``ckpt-ledger GLOBAL_OPTS create vm c2`` in a subprocess; (its run, seconds taken)."""
    start = time.monotonic()
    run = host.proc(*global_opts, "create", "vm", "c2", env=host.env() | (env or {}))
    return run, time.monotonic() - start


def test_gives_up_after_the_timeout_naming_the_holder(host: Host, holder: list) -> None:
    pid = hold(host, holder, 60)
    events = host.event_count()
    run, took = create(host, "--lock-timeout", "1")
    line = assert_one_error_line(run, "OPERATION_TIMEOUT")
    assert line.startswith("error: Timed out during operation: cannot acquire the ledger lock")
    assert f"pid {pid}" in line, line
    assert 1.0 <= took < 5, took
    assert host.event_count() == events
    assert "c2" not in host.names("vm")


def test_waits_with_one_message_and_succeeds_once_released(host: Host, holder: list) -> None:
    pid = hold(host, holder, 2.5)
    run, took = create(host, "--lock-timeout", "30")
    assert run.code == 0, run.stderr
    waiting = [ln for ln in run.stderr.splitlines() if ln.startswith("waiting for the ledger lock")]
    assert len(waiting) == 1 and run.stderr.splitlines() == waiting, run.stderr
    assert f"pid {pid}" in waiting[0], waiting[0]
    assert 2 <= took < 10, took
    assert "c2" in host.names("vm")


def test_the_environment_variable_sets_the_timeout(sqlite_host: Host, holder: list) -> None:
    host = sqlite_host
    pid = hold(host, holder, 60)
    run, took = create(host, env={"CKPT_LEDGER_LOCK_TIMEOUT": "0.5"})
    assert f"pid {pid}" in assert_one_error_line(run, "OPERATION_TIMEOUT")
    assert took < 4


def test_zero_fails_at_once_and_says_nothing_else(sqlite_host: Host, holder: list) -> None:
    host = sqlite_host
    hold(host, holder, 60)
    run, took = create(host, "--lock-timeout", "0")
    assert_one_error_line(run, "OPERATION_TIMEOUT")
    assert took < 3  # the process's start-up; the lock is tried once


@pytest.mark.parametrize("value", ["0", str(2**63), "1" + "0" * 5000, "1e5000", "inf", "1.5"])
def test_any_timeout_of_0_or_more_is_accepted(value: str, tmp_path: Path) -> None:
    h = Host(tmp_path)
    h.ok("mock", "define", "vm", "--disk", "vda")
    run = h.main("--lock-timeout", value, "create", "vm", "c1")
    assert run.code == 0 and run.stderr == "", run.stderr


@pytest.mark.parametrize("value", ["-1", "-0.001", "nan", "abc", "", "1s", "-1" + "0" * 5000])
def test_a_bad_timeout_is_one_line(value: str, tmp_path: Path) -> None:
    h = Host(tmp_path)
    h.ok("mock", "define", "vm", "--disk", "vda")
    assert_one_error_line(h.main("--lock-timeout", value, "create", "vm", "c1"), "USAGE")
    env = h.env(CKPT_LEDGER_LOCK_TIMEOUT=value or " ")
    if value.strip():
        assert_one_error_line(h.main("create", "vm", "c1", env=env))
    assert h.event_count() == 0


@pytest.mark.parametrize("value", [-1, math.nan, "x", True])
def test_ledger_open_refuses_a_bad_timeout(value: object, tmp_path: Path) -> None:
    with pytest.raises(LedgerError) as ei:
        Ledger.open(store=tmp_path / "l.db", lock_timeout=value)  # type: ignore[arg-type]
    assert ei.value.code == "INVALID_ARG"


def test_file_lock_names_its_holder_and_forgets_it_on_release(tmp_path: Path) -> None:
    path = str(tmp_path / "x.lock")
    with locks.file_lock(path, 0):
        text = Path(path).read_text()
        assert f"pid {os.getpid()} on " in (locks.describe(text) or "")
        with pytest.raises(LedgerError) as ei, locks.file_lock(path, 0.2):
            pass
        assert f"held by pid {os.getpid()}" in str(ei.value)
    assert Path(path).read_text() == ""


def test_msgpack_writer_lock_waits_as_long_as_the_lock_timeout_or_30_s(tmp_path: Path) -> None:
    """The log's own writer lock (held for one append) follows the timeout, never < 30 s."""
    import fcntl

    from backends import _frames
    from backends.msgpack_log import MsgpackLogStore

    store = MsgpackLogStore(str(tmp_path / "l.log"))
    other = os.open(tmp_path / "l.log", os.O_RDWR)
    fcntl.flock(other, fcntl.LOCK_EX)
    try:
        waited: list[float] = []
        real_wait = locks.wait

        def spy(try_acquire, timeout, what, holder):  # type: ignore[no-untyped-def]
            waited.append(timeout)
            return real_wait(try_acquire, 0.1, what, holder)

        store.lock_timeout = 0
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_frames.locks, "wait", spy)
            with pytest.raises(LedgerError) as ei, store._writer():
                pass
        assert ei.value.code == "OPERATION_TIMEOUT" and "writer lock" in str(ei.value)
        assert waited == [_frames.WRITER_WAIT]
    finally:
        os.close(other)
        store.close()


def test_the_holder_line_masks_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["/usr/bin/ckpt-ledger", "--store",
                                      "postgresql://u:s3cret@h/db?password=s3cret&x=1",
                                      "create", "vm"])
    line = locks.command_line()
    assert "s3cret" not in line and line.startswith("ckpt-ledger --store postgresql://u:***@h")
    assert "password=***&x=1" in line


def test_help_documents_the_option() -> None:
    out = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True).stdout
    assert "--lock-timeout" in out and "CKPT_LEDGER_LOCK_TIMEOUT" in out


def test_one_notice_and_none_when_the_end_is_near(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The "waiting" line comes once after NOTICE_AFTER; not when the timeout is about to
    end anyway (then the error is the only line)."""
    monkeypatch.setattr(locks, "NOTICE_AFTER", 0.2)
    start = time.monotonic()
    locks.wait(lambda: time.monotonic() - start > 0.6, 5, "the test lock", lambda: "me")
    assert [r.getMessage() for r in caplog.records] == [
        "waiting for the test lock held by me (for up to 5 s) ..."]
    caplog.clear()
    with pytest.raises(LedgerError):
        locks.wait(lambda: False, 0.3, "the test lock", lambda: "me")
    assert caplog.records == []
