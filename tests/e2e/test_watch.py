"""``ckpt-ledger watch`` on a real libvirtd + QEMU guest: every backup job becomes history.

With the recorder running in the background: a push-mode full backup creating a checkpoint,
an incremental one, a pull-mode job ended with an abort while the recorder is SIGKILLed and
started again, virtnbdbackup's full and incremental, and libvirtd restarted under it.
Afterwards `backups` lists exactly those jobs with their outcome, mode, reference and created
checkpoint, the ledger's checkpoints are the host's, and nothing is recorded twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from qemu_guest import SYSTEM_URI, QemuGuest, guest_write

pytestmark = pytest.mark.qemu
SCRIPT = Path(sys.executable).parent / "ckpt-ledger"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def guest(qemu_system: str) -> Iterator[QemuGuest]:
    g = QemuGuest.create(prefix="ckpt-ledger-watch")
    try:
        yield g
    finally:
        g.destroy()


class Recorder:
    """`ckpt-ledger watch DOMAIN` in the background, and the CLI to read what it recorded."""

    def __init__(self, store: Path, domain: str, log: Path) -> None:
        self.env = {**os.environ, "CKPT_LEDGER_STORE": f"sqlite:///{store}",
                    "CKPT_LEDGER_HYPERVISOR": SYSTEM_URI, "CKPT_LEDGER_ACTOR": "recorder"}
        self.domain, self.log = domain, log
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        out = open(self.log, "a")  # noqa: SIM115  # the child's stderr, read at the end
        self.proc = subprocess.Popen([str(SCRIPT), "watch", self.domain, "--interval", "0.5"],
                                     env=self.env, stdout=out, stderr=out, text=True)

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=30)
        self.proc = None
        return code

    def cli(self, *args: str) -> Any:
        run = subprocess.run([str(SCRIPT), *args, "--json"], env=self.env,
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        return json.loads(run.stdout)

    def jobs(self) -> list[dict[str, Any]]:
        """The jobs recorded so far (none before the recorder has opened its store)."""
        if not Path(self.env["CKPT_LEDGER_STORE"].removeprefix("sqlite:///")).exists():
            return []
        return list(self.cli("backups", self.domain))


def until(what: str, check: Callable[[], bool], timeout: float = 60.0,
          show: Callable[[], object] = lambda: None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {show()}")
        time.sleep(0.2)


def wait_no_job(guest: QemuGuest) -> None:
    until("the job to end", lambda: guest.dom.jobInfo()[0] == 0)


def push(guest: QemuGuest, target: Path, checkpoint: str, since: str | None = None,
         code: int = 0) -> str:
    """``virsh backup-begin DOMAIN backup.xml checkpoint.xml`` (push mode, vda only), waited
    for; virsh's stderr."""
    inc = f"<incremental>{since}</incremental>" if since else ""
    backup = guest.workdir / f"backup-{checkpoint}.xml"
    backup.write_text(f"<domainbackup mode='push'>{inc}<disks><disk name='vda' type='file'>"
                      f"<target file='{target}'/><driver type='qcow2'/></disk>"
                      "<disk name='vdb' backup='no'/><disk name='vdc' backup='no'/></disks>"
                      "</domainbackup>")
    cp = guest.workdir / f"checkpoint-{checkpoint}.xml"
    cp.write_text(f"<domaincheckpoint><name>{checkpoint}</name></domaincheckpoint>")
    run = subprocess.run(["virsh", "-c", SYSTEM_URI, "backup-begin", guest.name, str(backup),
                          str(cp)], capture_output=True, text=True, timeout=60)
    assert run.returncode == code, run.stderr
    wait_no_job(guest)
    return run.stderr


def restart_libvirtd(guest: QemuGuest) -> None:
    """Stop libvirtd (the guest runs on) and start it again; the guest's connection too."""
    import libvirt

    pid = int(Path("/run/libvirtd.pid").read_text().strip())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    subprocess.run(["bash", str(ROOT / "ci" / "start-libvirtd.sh")], check=True,
                   capture_output=True, timeout=120)
    with contextlib.suppress(libvirt.libvirtError):
        guest.conn.close()
    guest.conn = libvirt.open(SYSTEM_URI)
    guest.dom = guest.conn.lookupByName(guest.name)


def test_watch_records_every_backup_job_once(guest: QemuGuest) -> None:
    work = guest.workdir
    rec = Recorder(work / "ledger.db", guest.name, work / "watch.log")
    rec.start()
    try:
        guest_write(guest.dom, 0, "1M", "64k", 0x11)
        push(guest, work / "full.qcow2", "b1")
        until("the full backup", lambda: [j["outcome"] for j in rec.jobs()] == ["completed"])
        guest_write(guest.dom, 0, "2M", "128k", 0x22)
        push(guest, work / "inc.qcow2", "b2", since="b1")
        until("the incremental", lambda: len(rec.jobs()) == 2
              and rec.jobs()[1]["outcome"] == "completed")

        # a pull-mode job: the recorder sees it start, is killed, the job ends meanwhile
        sock = work / "nbd.sock"
        guest.dom.backupBegin(
            f"<domainbackup mode='pull'><incremental>b2</incremental><server transport='unix' "
            f"socket='{sock}'/><disks><disk name='vda' type='file'><scratch "
            f"file='{work}/scratch.qcow2'/></disk><disk name='vdb' backup='no'/>"
            "<disk name='vdc' backup='no'/></disks></domainbackup>",
            "<domaincheckpoint><name>b3</name></domaincheckpoint>", 0)
        until("the pull job to be seen running",
              lambda: len(rec.jobs()) == 3 and rec.jobs()[2]["outcome"] == "running")
        rec.kill()
        subprocess.run(["virsh", "-c", SYSTEM_URI, "domjobabort", guest.name], check=True,
                       capture_output=True, timeout=60)
        wait_no_job(guest)
        rec.start()
        until("the pull job to be ended", lambda: rec.jobs()[2]["outcome"] != "running")

        # a job libvirt refuses at its start (no target directory) never runs: nothing to record
        failed = push(guest, work / "missing" / "x.qcow2", "never", code=1)
        assert "No such file or directory" in failed
        time.sleep(1.5)  # three polls
        assert len(rec.jobs()) == 3 and "never" not in guest.checkpoint_names()

        # virtnbdbackup refuses foreign checkpoints: they go first, through the ledger
        for cp in ("b3", "b2", "b1"):
            subprocess.run([str(SCRIPT), "delete", guest.name, cp], env=rec.env, check=True,
                           capture_output=True)
        if shutil.which("virtnbdbackup"):
            for count, (level, folder) in enumerate(
                    [("full", "vnb"), ("inc", "vnb"), ("full", "vnb-new-chain")], start=4):
                run = subprocess.run(["virtnbdbackup", "-U", SYSTEM_URI, "-d", guest.name,
                                      "-l", level, "-o", str(work / folder), "-n"],
                                     capture_output=True, text=True, timeout=300)
                assert run.returncode == 0, run.stderr[-2000:]
                until(f"virtnbdbackup's {level}",
                      lambda c=count: len(rec.jobs()) == c  # type: ignore[misc]
                      and rec.jobs()[-1]["outcome"] != "running",
                      show=lambda: [(j["job"], j["kind"], j["checkpoint"], j["outcome"],
                                     j["bytes"], j["seconds"]) for j in rec.jobs()])

        restart_libvirtd(guest)
        guest_write(guest.dom, 1, "1M", "64k", 0x33)
        before = len(rec.jobs())
        push(guest, work / "after-restart.qcow2", "b9")
        until("a backup after libvirtd restarted", lambda: len(rec.jobs()) == before + 1
              and rec.jobs()[-1]["outcome"] == "completed", timeout=120)
        assert rec.kill(signal.SIGTERM) == 0  # a clean stop
    finally:
        if rec.proc is not None:
            rec.kill()
        print((work / "watch.log").read_text())

    jobs = rec.jobs()
    summary = [(j["mode"], j["kind"], j["since"], j["checkpoint"], j["outcome"]) for j in jobs]
    # a push job this small ends before a poll sees it run: libvirt's job event says that a
    # backup ran, how long and how much, and the checkpoint appears, but not full/incremental
    expected = [("push", "unknown", [], "b1", "completed"),
                ("push", "unknown", [], "b2", "completed"),
                ("pull", "incremental", ["b2"], "b3", "completed")]
    if shutil.which("virtnbdbackup"):
        expected += [("pull", "full", [], "virtnbdbackup.0", "completed"),
                     ("pull", "incremental", ["virtnbdbackup.0"], "virtnbdbackup.1",
                      "completed"),
                     ("pull", "full", [], "virtnbdbackup.0", "completed")]  # a new chain
    expected.append(("push", "unknown", [], "b9", "completed"))
    assert summary == expected, summary
    assert all(j["source"] == "observed" for j in jobs)
    assert jobs[0]["bytes"] and jobs[1]["seconds"] is not None
    log = rec.cli("log", "--domain", guest.name)
    started = [e["data"]["job"] for e in log if e["type"] == "BackupStarted"]
    assert len(started) == len(set(started)) == len(jobs)  # nothing recorded twice
    ended = [e["data"]["job"] for e in log if e["type"] == "BackupEnded"]
    assert len(ended) == len(set(ended)) == len(jobs)
    names = [c["name"] for c in rec.cli("list", guest.name, "--topological")]
    assert names == guest.checkpoint_names()
    if shutil.which("virtnbdbackup"):
        gone = [(e["data"]["name"], e["data"]["why"]) for e in log
                if e["type"] == "CheckpointGone"]
        # the new chain's full backup deletes both, then makes virtnbdbackup.0 again: a poll
        # that saw the host between the two records the old .0 as deleted outside, one that
        # did not sees the name come back with another creation time (replaced)
        assert len(gone) == 2 and dict(gone)["virtnbdbackup.1"] == "deleted-outside", gone
        assert dict(gone)["virtnbdbackup.0"] in ("replaced", "deleted-outside"), gone
        observed = [e["data"]["name"] for e in log if e["type"] == "CheckpointObserved"]
        assert observed.count("virtnbdbackup.0") == 2  # the old one and the new one
