"""The ledger agrees with the host: nothing recorded is hidden, outside changes are recorded as
observed, an interrupted operation is settled by the next command, host loss is told apart
from deletion, and replay never brings back a deleted checkpoint.

Every scenario runs on every backend, against the mock hypervisor shared by "other tools"
(a second ledger, or direct hypervisor calls, as virtnbdbackup makes them). The real
libvirt + QEMU + virtnbdbackup version is tests/e2e/test_virtnbdbackup.py.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import Host, assert_one_error_line

from adapters.mock import MockHypervisor
from backends.memory import MemoryStore
from ledger import Ledger, LedgerError
from ledger.app import faults
from ledger.domain import rules
from ledger.domain.checkpoint_xml import parse_checkpoint_xml
from ledger.log.store import EventStore

ROOT = Path(__file__).resolve().parent.parent


class Crash(BaseException):
    """Raised at a crash point in place of ending the process."""


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """The mock host's clock: each tick is a second later (checkpoint creation times)."""
    now = [1_800_000_000]

    class _Time:
        def __getattr__(self, name: str) -> Any:
            return getattr(time, name)

        def time(self) -> float:
            return float(now[0])

    monkeypatch.setattr("adapters.mock.time", _Time())

    def tick() -> None:
        now[0] += 1

    return tick


@pytest.fixture
def hv(tmp_path: Path) -> MockHypervisor:
    host = MockHypervisor(str(tmp_path / "host.json"))
    host.define("vm", ["vda", "vdb"])
    return host


def names(lg: Ledger, domain: str = "vm") -> list[str]:
    return [v.name for v in lg.list(domain, topological=True)]


def agrees(lg: Ledger, hv: MockHypervisor, domain: str = "vm") -> None:
    """The ledger's live checkpoints (parents, current) are the host's, and none is hidden."""
    state = lg.state(domain)
    listed = names(lg, domain)
    assert sorted(listed) == sorted(state.checkpoints), "a live checkpoint is hidden"
    assert sorted(listed) == sorted(hv.list_checkpoints(domain)), (listed,
                                                                  hv.list_checkpoints(domain))
    for n in listed:
        host = parse_checkpoint_xml(hv.checkpoint_xml(domain, n), redefine=True)
        assert state.checkpoints[n].parent == host.parent, n
        assert state.checkpoints[n].creation_time == host.creation_time, n


def tool_create(hv: MockHypervisor, name: str, tick: Callable[[], None]) -> None:
    """Another tool makes a checkpoint on the host (as virtnbdbackup's backup job does)."""
    tick()
    hv.create_checkpoint("vm", f"<domaincheckpoint><name>{name}</name></domaincheckpoint>")


def types_after(lg: Ledger, count: int) -> list[str]:
    return [e.type for e in lg.log()[count:]]


# ------------------------------------------------------------------ two tools, one host
def test_checkpoints_made_by_another_tool_are_observed_never_hidden(
    same_store: Callable[[], EventStore], hv: MockHypervisor, tmp_path: Path,
    clock: Callable[[], None]
) -> None:
    """A creates c1, B (another ledger) c2, A c3: the host gives c3 the parent c2, so A
    records c2 as observed before its create, and lists, shows and replays all three."""
    host_uri = f"mock:///{tmp_path / 'host.json'}"
    a = Ledger.open(same_store(), host_uri, actor="tool-a")
    b = Ledger.open(f"sqlite:///{tmp_path / 'b.db'}", host_uri, actor="tool-b")
    with a, b:
        clock()
        a.create("vm", "c1")
        clock()
        b.create("vm", "c2")
        clock()
        before = a.event_count()
        a.create("vm", "c3")
        assert names(a) == ["c1", "c2", "c3"]
        assert a.show("vm", "c3").parent == "c2" and a.show("vm", "c2").parent == "c1"
        observed = [e for e in a.log()[before:] if e.type == "CheckpointObserved"]
        assert [e.data["name"] for e in observed] == ["c2"]
        assert observed[0].data["source"] == "create" and observed[0].actor == "tool-a"
        assert observed[0].reason is not None and "observed on mock" in observed[0].reason
        agrees(a, hv)
        hv.forget_checkpoints("vm")  # the host loses its metadata
        a.replay(["vm"])
        assert hv.list_checkpoints("vm") == ["c1", "c2", "c3"] and hv.current("vm") == "c3"
        agrees(a, hv)


def test_a_parent_made_between_reconcile_and_create_is_observed_in_the_same_append(
    same_store: Callable[[], EventStore], hv: MockHypervisor, tmp_path: Path,
    clock: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another tool creates x just before the hypervisor call: the hypervisor's answer names
    a parent the ledger never saw, recorded as observed in the create's own append."""
    with Ledger.open(same_store(), f"mock:///{tmp_path / 'host.json'}") as lg:
        clock()
        lg.create("vm", "c1")
        real = MockHypervisor.create_checkpoint

        def racing(self: MockHypervisor, domain: str, xml: str, quiesce: bool = False) -> str:
            if "<name>c2</name>" in xml:
                clock()
                real(self, domain, "<domaincheckpoint><name>x</name></domaincheckpoint>")
            clock()
            return real(self, domain, xml, quiesce)

        monkeypatch.setattr(MockHypervisor, "create_checkpoint", racing)
        before = lg.event_count()
        lg.create("vm", "c2")
        assert names(lg) == ["c1", "x", "c2"]
        new = lg.log()[before:]
        assert [e.type for e in new if e.type.startswith("Checkpoint")] == [
            "CheckpointObserved", "CheckpointCreated"]
        assert len({e.position for e in new}) == len(new)
        assert len({e.stream_version for e in new}) == len(new)
        agrees(lg, hv)


# -------------------------------------------------------------------------- crashes
@pytest.mark.parametrize("point", faults.POINTS)
@pytest.mark.parametrize("op", ["create", "delete"])
def test_an_interrupted_operation_is_settled_by_the_next_command(
    same_store: Callable[[], EventStore], hv: MockHypervisor, tmp_path: Path,
    clock: Callable[[], None], monkeypatch: pytest.MonkeyPatch, point: str, op: str
) -> None:
    """The process dies before the hypervisor call, after it, or after the append: the next
    command on the domain settles it from the host first, so the ledger equals the host,
    nothing acknowledged is missing, and the log says what was attempted and how it ended."""
    host_uri = f"mock:///{tmp_path / 'host.json'}"

    def stop(where: str) -> None:
        raise Crash(where)

    monkeypatch.setattr(faults, "crash", stop)
    with Ledger.open(same_store(), host_uri, actor="alice", reason="nightly") as lg:
        for n in ("c1", "c2"):
            clock()
            lg.create("vm", n)
        count = lg.event_count()
        monkeypatch.setenv("CKPT_LEDGER_CRASH_AT", point)
        clock()
        with pytest.raises(Crash):
            if op == "create":
                lg.create("vm", "c3")
            else:
                lg.delete("vm", "c2")
        monkeypatch.delenv("CKPT_LEDGER_CRASH_AT")
    with Ledger.open(same_store(), host_uri, actor="bob") as lg:  # the next process
        clock()
        lg.create("vm", "c4")
        agrees(lg, hv)
        assert {"c1", "c4"} <= set(names(lg))
        new = lg.log()[count:]
        settled = [e for e in new if e.type == "OperationSettled"]
        target = "c3" if op == "create" else "c2"
        if point == "after-append":
            assert not settled  # its own events were recorded
            assert (target in names(lg)) == (op == "create")
        else:
            (s,) = settled
            done = point == "after-hypervisor"
            assert s.data["outcome"] == ("done" if done else "not-done"), s.data
            assert (s.data["op"], s.data["checkpoint"]) == (op, target)
            assert s.data["attempted_by"] == "alice" and s.data["attempted_reason"] == "nightly"
            assert s.actor == "bob"
            assert (target in names(lg)) == (done == (op == "create"))
            if done and op == "create":
                assert "CheckpointObserved" in [e.type for e in new]
            if done and op == "delete":
                (gone,) = [e for e in new if e.type == "CheckpointGone"]
                assert gone.data["why"] == "deleted"
        lg.create("vm", "c5")  # and the intent is closed: nothing more is settled
        assert [e.type for e in lg.log()].count("OperationSettled") == len(settled)


@pytest.mark.parametrize("point", faults.POINTS)
def test_an_interrupted_replay_is_settled_and_the_next_replay_finishes_it(
    same_store: Callable[[], EventStore], hv: MockHypervisor, tmp_path: Path,
    clock: Callable[[], None], monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    """Replay redefines in batches, one intent and one append a batch: a process that dies
    in the first batch leaves the host with that batch or none of it; the next command
    records how far it got, and the next replay redefines the rest, current last."""
    host_uri = f"mock:///{tmp_path / 'host.json'}"
    monkeypatch.setattr(faults, "crash", lambda where: (_ for _ in ()).throw(Crash(where)))
    monkeypatch.setattr("ledger.app.commands.REPLAY_BATCH", 2)
    made = [f"c{i}" for i in range(5)]
    with Ledger.open(same_store(), host_uri, actor="alice") as lg:
        for n in made:
            clock()
            lg.create("vm", n)
        hv.forget_checkpoints("vm")  # the host lost its metadata; the bitmaps are there
        count = lg.event_count()
        monkeypatch.setenv("CKPT_LEDGER_CRASH_AT", point)
        with pytest.raises(Crash):
            lg.replay(["vm"])
        monkeypatch.delenv("CKPT_LEDGER_CRASH_AT")
    on_host = [] if point == "before-hypervisor" else ["c0", "c1"]
    assert hv.list_checkpoints("vm") == on_host
    with Ledger.open(same_store(), host_uri, actor="bob") as lg:
        (report,) = lg.replay(["vm"])
        assert [s.name for s in report.steps if s.action == "redefine"] == made[len(on_host):]
        agrees(lg, hv)
        assert names(lg) == made and lg.show("vm", "c4").current
        new = lg.log()[count:]
        settled = [e.data for e in new if e.type == "OperationSettled"]
        redefined = [e.data["name"] for e in new if e.type == "CheckpointRedefined"]
        if point == "after-append":
            assert not settled and redefined == made
        else:
            (s,) = settled
            assert (s["op"], s["checkpoint"], s["attempted_by"]) == ("replay", "c0", "alice")
            assert s["attempted_reason"] == "replay"
            assert s["outcome"] == ("done" if on_host else "not-done")
            assert f"{len(on_host)} of the 2 checkpoints" in s["detail"]
            assert redefined == made[len(on_host):]


def test_a_refused_operation_leaves_nothing_to_settle(
    same_store: Callable[[], EventStore], hv: MockHypervisor, tmp_path: Path,
    clock: Callable[[], None]
) -> None:
    with Ledger.open(same_store(), f"mock:///{tmp_path / 'host.json'}") as lg:
        clock()
        lg.create("vm", "c1")
        hv.set_running("vm", False)
        count = lg.event_count()
        with pytest.raises(LedgerError):
            lg.delete("vm", "c1")  # qemu refuses a non-metadata delete of a shut-off domain
        hv.set_running("vm", True)
        assert lg.event_count() == count
        clock()
        lg.create("vm", "c2")
        assert "OperationSettled" not in types_after(lg, count)


LOOP = """
import sys
from ledger import Ledger
with Ledger.open(sys.argv[1], sys.argv[2]) as lg:
    for i in range(int(sys.argv[3]), 100000):
        lg.create("vm", f"k{i}")
        print(f"k{i}", flush=True)
"""


@pytest.mark.parametrize("backend", ["sqlite", "msgpack"])
def test_sigkill_anywhere_in_a_create_loop_loses_no_acknowledged_checkpoint(
    backend: str, tmp_path: Path
) -> None:
    """A create loop in another process, SIGKILLed at random moments: after each kill, the
    next command leaves the ledger equal to the host, with every acknowledged create listed."""
    seed = int(os.environ.get("CKPT_TEST_SEED", random.randrange(1 << 32)))
    print(f"seed {seed}")
    rng = random.Random(seed)
    store = f"{backend}:///{tmp_path / ('l.db' if backend == 'sqlite' else 'l.log')}"
    hv = MockHypervisor(str(tmp_path / "host.json"))
    hv.define("vm", ["vda"])
    host_uri = f"mock:///{tmp_path / 'host.json'}"
    acknowledged: list[str] = []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", LOOP, store, host_uri,
                                 str(len(acknowledged) * 10 + 1000 * _)],
                                stdout=subprocess.PIPE, text=True, env=env)
        time.sleep(0.6 + rng.random() * 0.8)  # start-up, then some creates
        proc.send_signal(signal.SIGKILL)
        out, _err = proc.communicate()
        acknowledged += out.split()
        with Ledger.open(store, host_uri) as lg:
            lg.create("vm", f"after{_}")
            acknowledged.append(f"after{_}")
            listed = set(names(lg))
            assert set(acknowledged) <= listed, sorted(set(acknowledged) - listed)
            agrees(lg, hv)
    assert len(acknowledged) > 6


# ---------------------------------------------------- outside deletes, host loss, replay
def test_a_new_chain_made_outside_is_recorded_and_the_old_one_never_replayed(
    same_store: Callable[[], EventStore], hv: MockHypervisor, tmp_path: Path,
    clock: Callable[[], None]
) -> None:
    """virtnbdbackup's pattern: a chain .0 .1 .2; a new full backup deletes them all (bitmaps
    too) and starts again at .0. import records .1 and .2 deleted outside and .0 replaced;
    after host loss, replay restores the new chain only, and the tool's next checkpoint
    (.2 again) can be made."""
    with Ledger.open(same_store(), f"mock:///{tmp_path / 'host.json'}") as lg:
        for n in ("vnb.0", "vnb.1", "vnb.2"):
            tool_create(hv, n, clock)
        assert lg.import_(["vm"])[0].added == ["vnb.0", "vnb.1", "vnb.2"]
        old = lg.show("vm", "vnb.0").creation_time
        for n in ("vnb.2", "vnb.1", "vnb.0"):
            hv.delete_checkpoint("vm", n)
        tool_create(hv, "vnb.0", clock)
        count = lg.event_count()
        (report,) = lg.import_(["vm"])
        assert report.deleted_outside == ["vnb.2", "vnb.1"] and report.replaced == ["vnb.0"]
        assert names(lg) == ["vnb.0"] and lg.show("vm", "vnb.0").creation_time != old
        new = lg.log()[count:]
        assert [(e.type, e.data["name"], e.data.get("why")) for e in new] == [
            ("CheckpointGone", "vnb.2", "deleted-outside"),
            ("CheckpointGone", "vnb.1", "deleted-outside"),
            ("CheckpointGone", "vnb.0", "replaced"),
            ("CheckpointObserved", "vnb.0", None)]
        assert {e.actor for e in new} == {"import"}
        assert lg.import_(["vm"])[0].unchanged == ["vnb.0"]
        assert lg.event_count() == count + 4  # a second import appends nothing
        tool_create(hv, "vnb.1", clock)
        assert lg.import_(["vm"])[0].added == ["vnb.1"]
        hv.forget_checkpoints("vm")  # host loss: metadata gone, bitmaps kept
        (plan,) = lg.replay(["vm"], dry_run=True)
        assert [(s.name, s.action) for s in plan.steps] == [("vnb.0", "redefine"),
                                                              ("vnb.1", "redefine")]
        lg.replay(["vm"])
        assert hv.list_checkpoints("vm") == ["vnb.0", "vnb.1"] and hv.current("vm") == "vnb.1"
        agrees(lg, hv)
        tool_create(hv, "vnb.2", clock)  # the tool goes on: an incremental from .1
        assert parse_checkpoint_xml(hv.checkpoint_xml("vm", "vnb.2"), redefine=True).parent == \
        "vnb.1"


def test_host_loss_is_not_deletion(
    same_store: Callable[[], EventStore], hv: MockHypervisor, tmp_path: Path,
    clock: Callable[[], None]
) -> None:
    """Metadata gone, bitmaps still in the images: nothing is recorded, replay restores.
    Metadata and bitmaps gone: recorded as deleted outside, replay skips it."""
    with Ledger.open(same_store(), f"mock:///{tmp_path / 'host.json'}") as lg:
        for n in ("c1", "c2", "c3"):
            clock()
            lg.create("vm", n)
        hv.forget_checkpoints("vm")
        count = lg.event_count()
        (report,) = lg.import_(["vm"])
        assert report.missing_on_host == ["c1", "c2", "c3"] and lg.event_count() == count
        assert names(lg) == ["c1", "c2", "c3"]
        hv.remove_bitmap("vm", "vda", "c3")
        hv.remove_bitmap("vm", "vdb", "c3")  # every bitmap of c3 gone too
        (plan,) = lg.replay(["vm"], dry_run=True)
        assert lg.event_count() == count  # a dry run records nothing
        assert [(s.name, s.action) for s in plan.steps] == [
            ("c1", "redefine"), ("c2", "redefine"), ("c3", "skip")]
        assert "deleted outside" in (plan.steps[2].why or "")
        (done,) = lg.replay(["vm"])
        assert done.steps == plan.steps
        (gone,) = [e for e in lg.log()[count:] if e.type == "CheckpointGone"]
        assert gone.data["name"] == "c3" and gone.data["why"] == "deleted-outside"
        assert hv.list_checkpoints("vm") == ["c1", "c2"] and hv.current("vm") == "c2"
        agrees(lg, hv)


def test_replay_skips_a_checkpoint_whose_bitmaps_are_gone_and_says_why(
    hv: MockHypervisor, tmp_path: Path, clock: Callable[[], None]
) -> None:
    """As of an earlier position, a checkpoint deleted later (bitmaps gone) is not brought
    back; nor are its descendants then (their parent would be missing)."""
    with Ledger.open(f"sqlite:///{tmp_path / 'l.db'}", f"mock:///{tmp_path / 'host.json'}") as lg:
        for n in ("c1", "c2", "c3"):
            clock()
            lg.create("vm", n)
        then = lg.event_count()
        lg.delete("vm", "c2")
        hv.forget_checkpoints("vm")
        (report,) = lg.replay(["vm"], as_of=then)
        why = {s.name: (s.action, s.why) for s in report.steps}
        assert why["c1"] == ("redefine", None)
        assert why["c2"][0] == "skip" and "gone from the images" in (why["c2"][1] or "")
        assert why["c3"] == ("skip", "its parent c2 is skipped")
        assert hv.list_checkpoints("vm") == ["c1"]


# --------------------------------------------------------------------------- orphans
def test_an_orphan_is_listed_flagged_by_verify_and_not_replayed(
    same_store: Callable[[], EventStore], hv: MockHypervisor, tmp_path: Path,
    clock: Callable[[], None]
) -> None:
    """A store written before the ledger observed outside checkpoints holds c3 whose parent
    c2 it never recorded: c3 is listed (as a root, flagged orphan), `verify` reports it, and
    replay skips it with the reason rather than fail."""
    host_uri = f"mock:///{tmp_path / 'host.json'}"
    with Ledger.open(same_store(), host_uri) as lg:
        clock()
        lg.create("vm", "c1")
        tool_create(hv, "c2", clock)
        tool_create(hv, "c3", clock)
        xml = hv.checkpoint_xml("vm", "c3")
        info = hv.domain_info("vm")
        lg.writer.append(info, rules.created_events(lg.state("vm"), parse_checkpoint_xml(
            xml, redefine=True), xml), "as an older ckpt-ledger recorded it")
        assert names(lg) == ["c1", "c3"]
        (view,) = [v for v in lg.list("vm") if v.name == "c3"]
        assert view.orphan and view.parent == "c2"
        assert [v.name for v in lg.list("vm", roots=True)] == ["c1", "c3"]
        (report,) = lg.verify(["vm"])
        assert ("orphan", "c3") in [(f.kind, f.checkpoint) for f in report.findings]
        hv.forget_checkpoints("vm")
        (plan,) = lg.replay(["vm"])
        steps = {s.name: (s.action, s.why) for s in plan.steps}
        assert steps["c1"] == ("redefine", None)
        assert steps["c3"][0] == "skip" and "orphan" in (steps["c3"][1] or "")
        assert hv.list_checkpoints("vm") == ["c1"]
        lg.create("vm", "c4")  # the orphan is in the ledger, not on the host: kept (bitmaps)
        assert "c3" in names(lg)


# ------------------------------------------------------------------ the CLI's part
def test_forget_records_a_hand_correction_with_who_and_why(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.ok("mock", "define", "vm", "--disk", "vda")
    host.ok("create", "vm", "c1")
    host.ok("create", "vm", "c2")
    hv = MockHypervisor(str(host.state))
    hv.delete_checkpoint("vm", "c2", metadata_only=True)  # a tool forgot it, bitmap kept
    assert host.names("vm") == ["c1", "c2"]  # reads never write, nor guess
    run = host.cli("forget", "vm", "c1", "--reason", "typo")
    line = assert_one_error_line(run, "OPERATION_INVALID")
    assert "still on" in line and "ckpt-ledger delete vm c1" in line
    assert_one_error_line(host.cli("forget", "vm", "nope", "--reason", "x"),
                          "NO_DOMAIN_CHECKPOINT")
    assert host.cli("forget", "vm", "c2").code == 2  # the reason is required
    count = host.event_count()
    run = host.cli("--actor", "alice", "forget", "vm", "c2", "--reason",
                   "deleted by backup tool")
    assert run.code == 0 and run.stdout == "Domain checkpoint c2 forgotten\n", run
    assert host.names("vm") == ["c1"] and host.event_count() == count + 1
    (ev,) = host.ok_json("log", "--type", "CheckpointGone")
    assert ev["actor"] == "alice" and ev["data"]["why"] == "forgotten"
    assert ev["data"]["detail"] == "deleted by backup tool"
    hist = host.ok_json("history", "vm", "c2")
    assert hist[-1]["what"] == "gone" and "forgotten" in hist[-1]["detail"]


def test_a_domain_only_the_host_knows_lists_empty(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.ok("mock", "define", "vm", "--disk", "vda")
    host.ok("mock", "define", "vm2", "--disk", "vda")
    host.ok("create", "vm", "c1")
    count = host.event_count()
    assert host.ok_json("list", "vm2") == []
    assert host.ok("list", "vm2", "--name").stdout == ""
    assert host.ok_json("bitmaps", "vm2")["disks"] == {"vda": []}
    assert_one_error_line(host.cli("show", "vm2", "c1"), "NO_DOMAIN_CHECKPOINT")
    assert_one_error_line(host.cli("list", "nosuch"), "NO_DOMAIN")
    assert host.event_count() == count


def test_import_text_says_what_it_recorded_and_why(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.ok("mock", "define", "vm", "--disk", "vda")
    host.ok("create", "vm", "c1")
    host.ok("create", "vm", "c2")
    hv = MockHypervisor(str(host.state))
    hv.delete_checkpoint("vm", "c2")  # deleted outside, bitmap too
    hv.create_checkpoint("vm", "<domaincheckpoint><name>x</name></domaincheckpoint>")
    out = host.ok("import", "vm").stdout
    assert "x: on the host, not in the ledger (recorded as observed)" in out, out
    assert "c2: deleted outside the ledger, its bitmaps gone too" in out, out
    data = host.ok_json("import", "vm")
    assert data[0]["deleted_outside"] == [] and data[0]["unchanged"] == ["c1", "x"]


# ------------------------------------------------------------------------- property
@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_no_recorded_live_checkpoint_is_ever_missing_from_list(
    backend: str, tmp_path: Path, clock: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random creates and deletes by the ledger, by another ledger and by a bare tool, host
    losses and crashes at every point: after each command of the ledger it equals the host,
    and `list` shows every live checkpoint its events hold."""
    seed = int(os.environ.get("CKPT_TEST_SEED", random.randrange(1 << 32)))
    print(f"seed {seed}")
    rng = random.Random(seed)
    hv = MockHypervisor(str(tmp_path / "host.json"))
    hv.define("vm", ["vda"])
    host_uri = f"mock:///{tmp_path / 'host.json'}"
    mem = MemoryStore()
    mem.close = lambda: None  # type: ignore[method-assign]

    def open_a() -> Ledger:
        store: Any = mem if backend == "memory" else f"sqlite:///{tmp_path / 'a.db'}"
        return Ledger.open(store, host_uri, actor="a")

    def stop(where: str) -> None:
        raise Crash(where)

    monkeypatch.setattr(faults, "crash", stop)
    a = open_a()
    b = Ledger.open(f"sqlite:///{tmp_path / 'b.db'}", host_uri, actor="b")
    acknowledged: set[str] = set()
    deleted: set[str] = set()
    a.import_(["vm"])  # the ledger knows the domain from the start
    try:
        for step in range(60):
            clock()
            kind = rng.choice(["a-create", "a-create", "a-delete", "b-create", "tool-create",
                               "tool-delete", "host-loss", "a-crash"])
            on_host = hv.list_checkpoints("vm")
            name = f"s{step}"
            ran = kind in ("a-create", "host-loss", "a-crash") or (kind == "a-delete" and on_host)
            if kind == "a-create":
                a.create("vm", name)
                acknowledged.add(name)
            elif kind == "a-delete" and on_host:
                victim = rng.choice(on_host)
                a.delete("vm", victim)
                deleted.add(victim)
            elif kind == "b-create":
                b.create("vm", name)
            elif kind == "tool-create":
                hv.create_checkpoint("vm", f"<domaincheckpoint><name>{name}</name>"
                                     "</domaincheckpoint>")
            elif kind == "tool-delete" and on_host:
                victim = rng.choice(on_host)
                hv.delete_checkpoint("vm", victim)
                deleted.add(victim)
            elif kind == "host-loss":
                hv.forget_checkpoints("vm")
                a.replay(["vm"])
            elif kind == "a-crash":
                monkeypatch.setenv("CKPT_LEDGER_CRASH_AT", rng.choice(faults.POINTS))
                with pytest.raises(Crash):
                    a.create("vm", name)
                monkeypatch.delenv("CKPT_LEDGER_CRASH_AT")
                a.close()
                a = open_a()
            if ran:  # a command of the ledger's talked to the host
                if kind == "a-crash":
                    a.import_(["vm"])
                state = a.state("vm")
                assert sorted(names(a)) == sorted(state.checkpoints), (step, kind)
                assert set(names(a)) == set(hv.list_checkpoints("vm")), (step, kind)
                assert (acknowledged - deleted) <= set(names(a)), (step, kind)
    finally:
        a.close()
        b.close()

