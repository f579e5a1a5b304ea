"""Backup history: a domain's backup jobs become events, recorded by the tool that ran them
(`record-backup`) or observed on the host (the mock keeps its jobs, as a recorder that was
down can still read them), listed by `backups`, and `backups --between N M` answers "what
happened between backup N and M".
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import SCRIPT, Host, assert_one_error_line

from adapters.mock import MockHypervisor
from ledger import Ledger, LedgerError
from ledger.app.views import BackupDisk
from ledger.log.store import EventStore


@pytest.fixture
def host(tmp_path: Path) -> Host:
    h = Host(tmp_path)
    h.ok("mock", "define", "vm", "--disk", "vda", "--disk", "vdb")
    (tmp_path / "target").mkdir()
    return h


def test_jobs_the_host_ran_are_recorded_once_as_observed(host: Host) -> None:
    """A full backup creating c0, an incremental since c0 creating c1, one that fails (its
    target folder is missing): the next import records the checkpoints and the three jobs,
    a second import nothing."""
    target = str(host.folder / "target")
    host.ok("mock", "write", "vm", "vda", "0", "1M")
    host.ok("mock", "backup", "vm", target, "--checkpoint", "c0")
    host.ok("mock", "write", "vm", "vdb", "64k", "64k")
    host.ok("mock", "backup", "vm", target, "--incremental", "c0", "--checkpoint", "c1")
    failed = host.cli("mock", "backup", "vm", str(host.folder / "nope"), "--incremental", "c1",
                      "--checkpoint", "c2")
    assert "No such file or directory" in assert_one_error_line(failed, "OPERATION_FAILED")
    out = host.ok("import", "vm").stdout
    assert "3 backup job(s) the host ran, recorded as observed" in out, out
    count = host.event_count()
    host.ok("import", "vm")
    assert host.event_count() == count
    jobs = host.ok_json("backups", "vm")
    assert [(j["number"], j["kind"], j["since"], j["checkpoint"], j["outcome"])
            for j in jobs] == [(1, "full", [], "c0", "completed"),
                               (2, "incremental", ["c0"], "c1", "completed"),
                               (3, "incremental", ["c1"], None, "failed")]
    assert jobs[0]["bytes"] == 1 << 20 and jobs[1]["bytes"] == 64 << 10
    assert {j["source"] for j in jobs} == {"observed"}
    assert "No such file" in jobs[2]["error"]
    assert host.names("vm") == ["c0", "c1"]
    text = host.ok("backups", "vm").stdout
    assert "incremental since c0" in text and "failed: Cannot open" in text, text


def test_a_tool_records_its_own_job_start_then_end(host: Host) -> None:
    host.ok("create", "vm", "c1")
    out = host.ok("--actor", "nightly", "record-backup", "vm", "job-17", "--disk",
                  "vda,incremental=c1,target=/srv/b/vda.qcow2", "--disk", "vdb", "--tool",
                  "my-script 2.1", "--target", "/srv/b").stdout
    assert out == "Backup 1 of vm (job-17) recorded: running\n"
    (job,) = host.ok_json("backups", "vm")
    assert job["outcome"] == "running" and job["kind"] == "mixed" and job["actor"] == "nightly"
    assert job["disks"] == [
        {"name": "vda", "incremental": "c1", "target": "/srv/b/vda.qcow2"},
        {"name": "vdb", "incremental": None, "target": None}]
    host.ok("record-backup", "vm", "job-17", "--outcome", "completed", "--bytes", "4096",
            "--seconds", "1.5")
    (job,) = host.ok_json("backups", "vm")
    assert (job["outcome"], job["bytes"], job["seconds"]) == ("completed", 4096, 1.5)
    count = host.event_count()
    again = host.cli("record-backup", "vm", "job-17", "--outcome", "failed")
    assert "already ended (completed)" in assert_one_error_line(again, "OPERATION_INVALID")
    assert host.event_count() == count
    log = host.ok("log", "--type", "BackupStarted", "--type", "BackupEnded").stdout
    assert "job job-17: incremental since c1" in log and "job job-17: completed" in log, log
    assert [e["type"] for e in host.ok_json("log", "--checkpoint", "c1")][-1] == "BackupStarted"


@pytest.mark.parametrize("argv, code", [
    (["--mode", "tape"], "INVALID_ARG"),
    (["--outcome", "sort-of"], "INVALID_ARG"),
    (["--disk", "vda,incremental"], "INVALID_ARG"),
    (["--disk", "vda,speed=9"], "INVALID_ARG"),
    (["--disk", "vda", "--disk", "vda"], "INVALID_ARG"),
    (["--disk", "bad/disk"], "INVALID_ARG"),
    (["--checkpoint", "nope"], "NO_DOMAIN_CHECKPOINT"),
    (["--checkpoint", "../x"], "INVALID_ARG"),
    (["--bytes", "5"], "INVALID_ARG"),  # an end's fact without an outcome
    (["--outcome", "completed", "--bytes", "-1"], "INVALID_ARG"),
    (["--outcome", "completed", "--bytes", "9" * 30], "INVALID_ARG"),
    (["--outcome", "completed", "--seconds", "nan"], "INVALID_ARG"),
    (["--outcome", "completed", "--seconds", "-3"], "INVALID_ARG"),
    (["--error", "x" * 5000, "--outcome", "failed"], "INVALID_ARG"),
])
def test_bad_backup_records_get_one_line_and_append_nothing(
    host: Host, argv: list[str], code: str
) -> None:
    host.ok("create", "vm", "c1")
    count = host.event_count()
    run = host.cli("record-backup", "vm", "j1", *argv)
    assert run.code != 0
    if run.code == 1:
        assert_one_error_line(run, code)
    assert host.event_count() == count


def test_between_two_backups_is_everything_that_happened_then(host: Host) -> None:
    host.ok("create", "vm", "c1")
    host.ok("record-backup", "vm", "j1", "--checkpoint", "c1", "--outcome", "completed")
    host.ok("create", "vm", "c2", "--reason", "before the upgrade")
    host.ok("delete", "vm", "c1")
    host.ok("record-backup", "vm", "j2", "--disk", "vda,incremental=c2", "--outcome",
            "completed")
    host.ok("record-backup", "vm", "j3", "--outcome", "completed")
    events = host.ok_json("backups", "vm", "--between", "1", "2")
    types = [e["type"] for e in events]
    assert types[0] == "BackupStarted" and types[-1] == "BackupEnded"
    assert "CheckpointCreated" in types and "CheckpointDeleted" in types
    assert all(e["data"].get("job") != "j3" for e in events)
    assert any(e["reason"] == "before the upgrade" for e in events)
    for bad in (["0", "1"], ["2", "1"], ["1", "4"]):
        assert_one_error_line(host.cli("backups", "vm", "--between", *bad), "INVALID_ARG")


def test_backups_of_a_domain_only_the_host_knows_is_empty(host: Host) -> None:
    host.ok("mock", "define", "other", "--disk", "vda")
    host.ok("create", "vm", "c1")
    assert host.ok_json("backups", "other") == []
    assert_one_error_line(host.cli("backups", "nosuch"), "NO_DOMAIN")


def test_the_library_records_and_lists_backups_on_every_backend(
    same_store: Callable[[], EventStore], tmp_path: Path
) -> None:
    hv = MockHypervisor(str(tmp_path / "host.json"))
    hv.define("vm", ["vda"])
    with Ledger.open(same_store(), f"mock:///{tmp_path / 'host.json'}", actor="lib") as lg:
        lg.create("vm", "c1")
        view = lg.record_backup("vm", "j1", disks=[BackupDisk(name="vda", incremental="c1")],
                                tool="t", outcome="aborted", error="cancelled")
        assert (view.number, view.kind, view.outcome, view.error) == (
            1, "incremental", "aborted", "cancelled")
        with pytest.raises(LedgerError) as err:
            lg.record_backup("vm", "j1")
        assert err.value.code == "OPERATION_INVALID"
    with Ledger.open(same_store()) as lg:  # reads need no hypervisor
        (job,) = lg.backups("vm")
        assert job.job == "j1" and job.actor == "lib" and job.tool == "t"


def test_watch_once_records_jobs_and_checkpoints_once(host: Host) -> None:
    target = str(host.folder / "target")
    host.ok("create", "vm", "c0")
    host.ok("mock", "write", "vm", "vda", "0", "64k")
    host.ok("mock", "backup", "vm", target, "--checkpoint", "vnb.0")
    run = host.cli("watch", "--once")
    assert run.code == 0 and "vm: recorded 3 event(s)" in run.stderr, run
    assert "watch stopped: 3 event(s) recorded" in run.stderr
    count = host.event_count()
    assert host.cli("watch", "--once").code == 0 and host.event_count() == count
    (job,) = host.ok_json("backups", "vm")
    assert (job["checkpoint"], job["kind"], job["outcome"]) == ("vnb.0", "full", "completed")
    assert host.names("vm") == ["c0", "vnb.0"]
    assert {e["reason"] for e in host.ok_json("log")[-3:]} == {
        f"observed on {host.hv} by watch"}


@pytest.mark.parametrize("interval", ["0", "-1", "nan", "1e400", "x"])
def test_watch_refuses_a_bad_interval(host: Host, interval: str) -> None:
    run = host.cli("watch", "--interval", interval)
    assert run.code in (1, 2) and run.stdout == ""
    if run.code == 1:
        assert_one_error_line(run, "INVALID_ARG")


def test_watch_runs_until_sigterm_and_records_as_tools_work(host: Host) -> None:
    """The recorder in its own process: a job made while it runs is recorded within a few
    polls; SIGTERM stops it cleanly (exit 0)."""
    env = {**os.environ, **{k: v for k, v in host.env().items() if v is not None}}
    proc = subprocess.Popen([str(SCRIPT), "watch", "--interval", "0.1"], env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        host.ok("mock", "backup", "vm", str(host.folder / "target"), "--checkpoint", "c1")
        deadline = time.monotonic() + 30
        while not (host.db.exists() and host.ok_json("backups", "vm")):
            assert time.monotonic() < deadline, "the job was never recorded"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0 and proc.stderr is not None
    assert "watch stopped: 4 event(s) recorded" in proc.stderr.read()


def test_the_timeline_marks_each_backup_job_on_its_disks(host: Host) -> None:
    host.ok("create", "vm", "c1")
    host.ok("record-backup", "vm", "full-1", "--disk", "vda", "--disk", "vdb", "--outcome",
            "completed")
    host.ok("record-backup", "vm", "inc-2", "--disk", "vda,incremental=c1", "--outcome",
            "failed", "--error", "target full")
    host.ok("record-backup", "vm", "inc-3", "--disk", "vdb,incremental=c1")
    out = host.folder / "t.svg"
    host.ok("timeline", "vm", "--out", str(out))
    svg = out.read_text()
    marks = re.findall(r'<g class="backup" data-job="([^"]+)" data-outcome="([^"]+)" '
                       r'data-kind="([^"]+)"><title>([^<]*)</title>((?:<path [^>]*/>)+)</g>',
                       svg)
    assert [(j, o, k, paths.count("<path")) for j, o, k, _, paths in marks] == [
        ("full-1", "completed", "full", 2), ("inc-2", "failed", "incremental", 1),
        ("inc-3", "running", "incremental", 1)]
    assert "target full" in marks[1][3] and 'fill="#c00000"' in marks[1][4]


@pytest.mark.postgres
def test_a_fleet_of_recorders_into_one_postgresql_ledger(tmp_path: Path, pg_url: str) -> None:
    """Two hosts (two mock state files), each with its own `watch` process, record into one
    PostgreSQL ledger; `follow` shows both hosts' events live, in one gapless order."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CKPT_LEDGER_")}
    env["CKPT_LEDGER_STORE"] = pg_url
    hosts = []
    for n in (1, 2):
        folder = tmp_path / f"host{n}"
        folder.mkdir()
        (folder / "target").mkdir()
        hv = MockHypervisor(str(folder / "host.json"))
        hv.define(f"vm{n}", ["vda"])
        hosts.append((n, folder, hv))
    Ledger.open(pg_url).close()  # the schema exists before the processes race to it
    follow = subprocess.Popen([str(SCRIPT), "follow", "--after", "0", "--jsonl", "--timeout",
                               "6"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    watchers = [subprocess.Popen(
        [str(SCRIPT), "--actor", f"recorder@host{n}", "--hypervisor",
         f"mock:///{folder / 'host.json'}", "watch", "--interval", "0.1"],
        env=env, stderr=subprocess.PIPE, text=True) for n, folder, _ in hosts]
    try:
        for n, folder, hv in hosts:
            hv.write(f"vm{n}", "vda", 0, 65536)
            hv.backup(f"vm{n}", str(folder / "target"), checkpoint=f"nightly{n}")
        deadline = time.monotonic() + 30
        while not _recorded(pg_url, [f"vm{n}" for n, _, _ in hosts]):
            assert time.monotonic() < deadline, "a host's job was never recorded"
            time.sleep(0.2)
    finally:
        for p in watchers:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=30) for p in watchers]
    out, err = follow.communicate(timeout=60)
    assert codes == [0, 0], [p.stderr.read() if p.stderr else "" for p in watchers]
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["position"] for e in events] == list(range(1, len(events) + 1)), err
    by_domain = {(e["domain"], e["type"], e["actor"]) for e in events}
    for n in (1, 2):
        assert (f"vm{n}", "CheckpointObserved", f"recorder@host{n}") in by_domain
        assert (f"vm{n}", "BackupEnded", f"recorder@host{n}") in by_domain


def _recorded(url: str, domains: list[str]) -> bool:
    """Whether every domain has a backup job in the ledger at ``url``."""
    with Ledger.open(url) as lg:
        return all(d in lg.domains() and lg.backups(d) for d in domains)
