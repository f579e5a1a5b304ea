"""import, import-xml, replay and verify against the mock hypervisor (issue: real libvirt).

The same flows run on a real QEMU guest in tests/e2e/test_cli_recovery.py; here every
branch is exercised quickly, including hostile import directories.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.mock import MockHypervisor
from ledger import Ledger, LedgerError
from ledger.app.recovery import replay_order
from ledger.log.store import EventStore

SEED = [("chk1.1", ["vda", "vdb"]), ("chk2.1", ["vdb", "vdc"]),
        ("chk1.2", ["vda", "vdb"]), ("chk2.2", ["vdb", "vdc"])]


@pytest.fixture
def host(tmp_path: Path) -> MockHypervisor:
    hv = MockHypervisor(str(tmp_path / "host.json"))
    hv.define("vm", ["vda", "vdb", "vdc"], "independent")
    return hv


@pytest.fixture
def lg(tmp_path: Path, host: MockHypervisor) -> Iterator[Ledger]:
    with Ledger.open(store=f"sqlite:///{tmp_path / 'l.db'}", hypervisor=host) as ledger:
        yield ledger


def seed(lg: Ledger) -> None:
    for name, disks in SEED:
        lg.create("vm", name, [d if d in disks else f"{d},checkpoint=no"
                               for d in ("vda", "vdb", "vdc")])


# ----------------------------------------------------------------------------- import
def test_import_learns_checkpoints_made_outside_the_ledger_once(tmp_path: Path,
                                                                 host: MockHypervisor) -> None:
    for name in ("a", "b"):
        host.create_checkpoint("vm", f"<domaincheckpoint><name>{name}</name></domaincheckpoint>")
    with Ledger.open(store=f"sqlite:///{tmp_path / 'x.db'}", hypervisor=host) as lg:
        first = lg.import_()
        assert first[0].added == ["a", "b"]
        assert [c.name for c in lg.list("vm", topological=True)] == ["a", "b"]
        assert {e.actor for e in lg.log()} == {"import"}
        count = lg.event_count()
        again = lg.import_(["vm"])
        assert again[0].added == [] and again[0].unchanged == ["a", "b"]
        assert lg.event_count() == count  # a second import appends nothing
        assert lg.show("vm", "b").current


def test_import_records_a_checkpoint_changed_outside_the_ledger(lg: Ledger,
                                                                host: MockHypervisor) -> None:
    seed(lg)
    xml = host.checkpoint_xml("vm", "chk1.2").replace(
        "<name>chk1.2</name>", "<name>chk1.2</name>\n  <description>edited by hand</description>")
    host.redefine_checkpoint("vm", xml)
    report = lg.import_(["vm"])[0]
    assert report.changed == ["chk1.2"]
    assert lg.show("vm", "chk1.2").description == "edited by hand"


def test_import_never_forgets_what_the_host_lost(lg: Ledger, host: MockHypervisor) -> None:
    seed(lg)
    host.forget_checkpoints("vm")
    report = lg.import_(["vm"])[0]
    assert report.missing_on_host == ["chk1.1", "chk2.1", "chk1.2", "chk2.2"]
    assert len(lg.list("vm")) == 4


# ------------------------------------------------------------------------- import-xml
def write_dir(folder: Path, host: MockHypervisor, names: list[str]) -> None:
    folder.mkdir()
    for n in names:
        (folder / f"{n}.xml").write_text(host.checkpoint_xml("vm", n))


def test_import_xml_orders_by_parent_links_not_by_file_names(
    tmp_path: Path, lg: Ledger, host: MockHypervisor
) -> None:
    seed(lg)
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    # virtnbdbackup-style names that sort against the chain: z, y, x, w
    for prefix, n in zip("zyxw", ["chk1.1", "chk2.1", "chk1.2", "chk2.2"], strict=True):
        (folder / f"{prefix}-{n}.xml").write_text(host.checkpoint_xml("vm", n))
    with Ledger.open(store=f"sqlite:///{tmp_path / 'new.db'}") as fresh:  # no hypervisor
        report = fresh.import_xml("vm", folder)
        assert report.added == ["chk1.1", "chk2.1", "chk1.2", "chk2.2"]
        assert [c.parent for c in fresh.list("vm", topological=True)] == [
            None, "chk1.1", "chk2.1", "chk1.2"]
        assert fresh.show("vm", "chk2.2").current
        assert fresh.import_xml("vm", folder).added == []


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a.xml": "<domaincheckpoint><name>a</name>"}, "a.xml: XML error"),
        ({"a.xml": "<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><x>&e;</x>"},
         "a.xml"),
        ({"a.xml": "<domaincheckpoint><name>c</name><creationTime>1</creationTime>"
                   "</domaincheckpoint>",
          "b.xml": "<domaincheckpoint><name>c</name><creationTime>2</creationTime>"
                   "</domaincheckpoint>"}, "defined twice"),
        ({"a.xml": "<domaincheckpoint><name>a</name><parent><name>ghost</name></parent>"
                   "<creationTime>1</creationTime></domaincheckpoint>"},
         "parent ghost of checkpoint a is neither in the directory nor in the ledger"),
        ({"a.xml": "<domaincheckpoint><name>a</name><parent><name>b</name></parent>"
                   "<creationTime>1</creationTime></domaincheckpoint>",
          "b.xml": "<domaincheckpoint><name>b</name><parent><name>a</name></parent>"
                   "<creationTime>2</creationTime></domaincheckpoint>"}, "form a cycle"),
        ({"a.xml": "<domaincheckpoint><creationTime>1</creationTime></domaincheckpoint>"},
         "a redefined checkpoint must have a name"),
        ({}, "no checkpoint XML files"),
    ],
)
def test_import_xml_refuses_bad_directories_and_appends_nothing(
    tmp_path: Path, lg: Ledger, files: dict[str, str], message: str
) -> None:
    seed(lg)
    count = lg.event_count()
    folder = tmp_path / "bad"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    with pytest.raises(LedgerError) as err:
        lg.import_xml("vm", folder)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert "root:" not in str(err.value)  # /etc/passwd was never read
    assert lg.event_count() == count


def test_import_xml_of_a_missing_directory(tmp_path: Path, lg: Ledger) -> None:
    with pytest.raises(LedgerError, match="is not a directory"):
        lg.import_xml("vm", tmp_path / "nope")


def test_import_xml_refuses_files_of_another_domain(tmp_path: Path, lg: Ledger,
                                                     host: MockHypervisor) -> None:
    seed(lg)
    other = MockHypervisor(str(tmp_path / "other.json"))
    other.define("vm", ["vda"])
    other.create_checkpoint("vm", "<domaincheckpoint><name>x</name></domaincheckpoint>")
    folder = tmp_path / "foreign"
    folder.mkdir()
    (folder / "x.xml").write_text(other.checkpoint_xml("vm", "x"))
    with pytest.raises(LedgerError, match="uuid"):
        lg.import_xml("vm", folder)


# ----------------------------------------------------------------------------- replay
def test_replay_after_host_loss_restores_list_parents_and_current(
    lg: Ledger, host: MockHypervisor
) -> None:
    seed(lg)
    host.forget_checkpoints("vm")
    dry = lg.replay(["vm"], dry_run=True)[0]
    assert [s.action for s in dry.steps] == ["redefine"] * 4
    assert host.list_checkpoints("vm") == []
    lg.replay(["vm"], validate=True)
    assert host.list_checkpoints("vm") == ["chk1.1", "chk2.1", "chk1.2", "chk2.2"]
    assert host.current("vm") == "chk2.2"
    count = lg.event_count()
    again = lg.replay(["vm"])[0]
    assert {s.action for s in again.steps} == {"skip"} and lg.event_count() == count


def test_replay_learns_what_other_tools_changed_before_it_redefines(
    lg: Ledger, host: MockHypervisor
) -> None:
    """Another tool redefined chk2.2 and made `stranger`: replay records both as observed
    (a dry run plans the same, recording nothing) and changes nothing on the host."""
    seed(lg)
    xml = host.checkpoint_xml("vm", "chk2.2").replace(
        "<name>chk2.2</name>", "<name>chk2.2</name>\n  <description>theirs</description>")
    host.redefine_checkpoint("vm", xml)
    host.create_checkpoint("vm", "<domaincheckpoint><name>stranger</name></domaincheckpoint>")
    count = lg.event_count()
    dry = lg.replay(["vm"], dry_run=True)[0]
    assert lg.event_count() == count and dry.unknown_on_host == []
    assert {s.action for s in dry.steps} == {"skip"}
    report = lg.replay(["vm"])[0]
    assert report.steps == dry.steps and not report.unknown_on_host
    assert lg.show("vm", "chk2.2").description == "theirs"
    assert lg.show("vm", "stranger").parent == "chk2.2"
    types = [e.type for e in lg.log()[count:]]
    assert types == ["CheckpointObserved", "CheckpointObserved"], types
    assert "<description>theirs" in host.checkpoint_xml("vm", "chk2.2")


def test_replay_of_many_domains_runs_them_at_once_in_order_and_reports_each_failure(
    same_store: Callable[[], EventStore], tmp_path: Path
) -> None:
    """``jobs`` domains replay at once, each parents first with its current last; a domain
    that fails (here: one the ledger never recorded) is reported with why, the others are
    restored, and the progress counts every redefinition of every domain."""
    host = MockHypervisor(str(tmp_path / "host.json"))
    doms = [f"vm{i}" for i in range(6)]
    for d in doms:
        host.define(d, ["vda", "vdb"], "chained" if d == "vm1" else "independent")
    with Ledger.open(store=same_store(), hypervisor=host) as lg:
        for d in doms:
            for n in ("a", "b", "c"):
                lg.create(d, f"{d}-{n}")
            lg.delete(d, f"{d}-c", metadata_only=True)
            lg.redefine(d, host.checkpoint_xml(d, f"{d}-a"))
            lg.create(d, f"{d}-d")  # a second branch under a; the current
        before = {d: [c.name for c in lg.list(d, topological=True)] for d in doms}
        for d in doms:
            host.forget_checkpoints(d)
        host.define("stranger", ["vda"])  # the host's, never recorded
        count = lg.event_count()
        seen: list[tuple[int, int]] = []
        reports = lg.replay(["stranger", *doms], jobs=3,
                            progress=lambda done, total: seen.append((done, total)))
    assert [r.domain for r in reports] == ["stranger", *doms]
    (failed,) = [r for r in reports if r.error]
    assert failed.domain == "stranger"
    assert "in the ledger (nothing has been recorded for it)" in (failed.error or "")
    for d in doms:
        assert host.list_checkpoints(d) == before[d] and host.current(d) == f"{d}-d"
    assert seen[-1] == (18, 18) and [done for done, _ in seen] == list(range(1, 19))
    with Ledger.open(store=same_store(), hypervisor=host) as lg:
        redefined = [(e.domain, e.data["name"]) for e in lg.log()[count:]
                     if e.type == "CheckpointRedefined"]
    for d in doms:
        assert [n for dom, n in redefined if dom == d] == before[d]


def test_replay_cli_names_the_domains_that_failed_and_exits_1(tmp_path: Path) -> None:
    env = {**os.environ, "CKPT_LEDGER_STORE": f"sqlite:///{tmp_path / 'l.db'}",
           "CKPT_LEDGER_HYPERVISOR": f"mock:///{tmp_path / 'host.json'}"}
    run = functools.partial(subprocess.run, capture_output=True, text=True, env=env)
    exe = str(Path(sys.executable).with_name("ckpt-ledger"))
    for d in ("vm1", "vm2"):
        assert run([exe, "mock", "define", d, "--disk", "vda"]).returncode == 0
        assert run([exe, "create", d, f"{d}-a"]).returncode == 0
        assert run([exe, "mock", "lose-metadata", d]).returncode == 0
    out = run([exe, "replay", "vm1", "nosuch", "vm2", "--jobs", "2"])
    assert out.returncode == 1, out
    assert "nosuch: failed: Domain not found" in out.stdout
    assert "vm1: redefined 1" in out.stdout and "vm2: redefined 1" in out.stdout
    assert out.stderr.strip() == "replay failed for 1 of 3 domain(s): nosuch"
    for bad in ("0", "x"):
        refused = run([exe, "replay", "--jobs", bad])
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1


def test_replay_into_a_domain_with_another_uuid_is_refused(tmp_path: Path, lg: Ledger) -> None:
    seed(lg)
    other = MockHypervisor(str(tmp_path / "rebuilt.json"))
    other.define("vm", ["vda", "vdb", "vdc"])  # a new UUID
    with Ledger.open(store=lg.store, hypervisor=other) as lg2, pytest.raises(
            LedgerError, match="refusing to replay into another domain") as err:
        lg2.replay(["vm"])
    assert err.value.code == "INVALID_ARG"
    assert other.list_checkpoints("vm") == []


def test_replay_order_walks_the_current_branch_first() -> None:
    from ledger.domain.model import CheckpointDef, CheckpointDisk
    from ledger.domain.rules import redefined_events
    from ledger.domain.state import DomainState

    st = DomainState(stream_id="u")
    for name, parent in [("r", None), ("a", "r"), ("b", "r"), ("b1", "b")]:
        d = CheckpointDef(name=name, parent=parent, creation_time=1,
                          disks=(CheckpointDisk(name="vda", bitmap=name),))
        for ev in redefined_events(st, d, ""):
            st.apply(ev)
    st.current = "b1"
    order = replay_order(st)
    assert order == ["r", "b", "b1", "a"]
    # replaying that order with libvirt's rule leaves b1 current
    st2 = DomainState(stream_id="u")
    for n in order:
        cp = st.checkpoints[n]
        for ev in redefined_events(st2, cp.definition(), ""):
            st2.apply(ev)
    assert st2.current == "b1"


# ----------------------------------------------------------------------------- verify
def test_verify_agrees_then_finds_every_kind_of_drift(lg: Ledger, host: MockHypervisor) -> None:
    seed(lg)
    assert lg.verify(["vm"])[0].ok
    host.remove_bitmap("vm", "vdb", "chk2.1")
    host.delete_checkpoint("vm", "chk2.2", metadata_only=True)  # outside the ledger
    host.create_checkpoint("vm", "<domaincheckpoint><name>x</name></domaincheckpoint>")
    r = lg.verify(["vm"])[0]
    kinds = {(f.kind, f.checkpoint, f.disk, f.bitmap) for f in r.findings}
    assert ("bitmap-missing", "chk2.1", "vdb", "chk2.1") in kinds
    assert ("missing-on-host", "chk2.2", None, None) in kinds
    assert ("extra-on-host", "x", None, None) in kinds
    assert ("orphan-bitmap", None, "vda", "x") in kinds
    assert not r.ok
    assert r.unusable_plans["chk2.1"] == {"vdb": "bitmap 'chk2.1' is missing on vdb"}


def test_verify_record_appends_each_observation_once_and_plan_goes_full(
    lg: Ledger, host: MockHypervisor
) -> None:
    seed(lg)
    host.remove_bitmap("vm", "vdb", "chk2.1")
    assert lg.plan("vm", "chk2.1").disks["vdb"].mode == "incremental"
    first = lg.verify(["vm"], record=True)[0]
    assert first.recorded == 1
    assert lg.plan("vm", "chk2.1").disks["vdb"].mode == "full"
    count = lg.event_count()
    assert lg.verify(["vm"], record=True)[0].recorded == 0
    assert lg.event_count() == count
    assert any(e.type == "DriftObserved" and e.actor == "verify" for e in lg.log())


def test_verify_finds_a_bitmap_that_stopped_recording(lg: Ledger, host: MockHypervisor) -> None:
    seed(lg)
    host.set_bitmap_recording("vm", "vda", "chk1.1", False)  # behind the metadata's back
    r = lg.verify(["vm"])[0]
    assert [(f.kind, f.bitmap) for f in r.findings] == [("bitmap-not-recording", "chk1.1")]


# --------------------------------------------------------------- partial delete (§5.2.3)
def test_a_delete_qemu_did_only_in_part_is_recorded_as_what_really_happened(
    lg: Ledger, host: MockHypervisor
) -> None:
    """qemu reparents the children, then fails on a missing bitmap: the delete is an error,
    the checkpoint stays, and the ledger records the reparenting (not the delete)."""
    seed(lg)
    host.remove_bitmap("vm", "vdb", "chk2.1")
    with pytest.raises(LedgerError) as err:
        lg.delete("vm", "chk2.1")
    assert err.value.code == "INTERNAL_ERROR"
    assert "bitmap 'chk2.1' not found in backing chain of 'vdb'" in str(err.value)
    assert lg.show("vm", "chk2.1").children == []
    assert lg.show("vm", "chk1.2").parent == "chk1.1"  # as on the host
    assert host.checkpoint_xml("vm", "chk1.2").count("<name>chk1.1</name>") == 1
    assert not any(e.type == "CheckpointDeleted" for e in lg.log())
    partial = [e for e in lg.log() if e.reason and "partial delete" in e.reason]
    assert [e.data["name"] for e in partial] == ["chk1.2"]
    assert lg.verify(["vm"])[0].findings[0].kind == "bitmap-missing"
    lg.delete("vm", "chk2.1", metadata_only=True)  # the known workaround
    assert "chk2.1" not in [c.name for c in lg.list("vm")]
    assert host.list_checkpoints("vm") == ["chk1.1", "chk1.2", "chk2.2"]


def test_replay_as_of_redefines_the_chain_as_it_stood_then(lg: Ledger,
                                                           host: MockHypervisor) -> None:
    seed(lg)
    then = lg.event_count()
    lg.delete("vm", "chk2.2")
    lg.create("vm", "later", ["vda"])
    host.forget_checkpoints("vm")
    (report,) = lg.replay(["vm"], as_of=then)
    # chk2.2 was deleted later with its bitmap: it is not brought back
    assert host.list_checkpoints("vm") == ["chk1.1", "chk2.1", "chk1.2"]
    (skip,) = [s for s in report.steps if s.name == "chk2.2"]
    assert skip.action == "skip" and "gone from the images" in (skip.why or "")
    assert host.current("vm") == "chk1.2"


def test_import_xml_reads_no_more_than_the_cap_of_a_huge_file(tmp_path: Path, lg: Ledger) -> None:
    """A sparse 256 MiB file is refused after reading 1 MiB + 1 byte, naming it (issue 11
    item 12): the process does not grow by the file's size."""
    import resource

    folder = tmp_path / "huge"
    folder.mkdir()
    with open(folder / "big.xml", "wb") as f:
        f.truncate(256 << 20)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(LedgerError) as err:
        lg.import_xml("vm", folder)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before  # KiB
    assert err.value.code == "XML_ERROR" and "big.xml" in str(err.value)
    assert "larger than 1048576 bytes" in str(err.value)
    assert grown < 64 * 1024, f"grew by {grown} KiB"


def test_import_xml_of_ten_thousand_files_is_linear(tmp_path: Path, lg: Ledger) -> None:
    """A 10,000-checkpoint chain, files named against the chain: imported parents first
    (issue 11 item 18: ordering once rescanned the set per checkpoint). The time is printed,
    not asserted."""
    import time as clock

    from ledger.domain.checkpoint_xml import format_checkpoint_xml
    from ledger.domain.model import CheckpointDef

    folder = tmp_path / "many"
    folder.mkdir()
    n = 10_000
    for i in range(n):
        d = CheckpointDef(name=f"c{i:05d}", parent=f"c{i - 1:05d}" if i else None,
                          creation_time=1_700_000_000 + i, disks=())
        (folder / f"{n - i:05d}.xml").write_text(format_checkpoint_xml(d))
    start = clock.perf_counter()
    report = lg.import_xml("vm", folder)
    took = clock.perf_counter() - start
    print(f"import-xml of {n} files: {took:.1f} s")
    assert len(report.added) == n
    assert [v.name for v in lg.list("vm", topological=True)][:3] == ["c00000", "c00001",
                                                                      "c00002"]


def test_a_replay_of_many_domains_folds_what_was_appended_before_its_locks(
    tmp_path: Path,
) -> None:
    """Another writer appends between the replay's start and the moment it holds the
    domains' locks: the replay folds that first (as every locked command does), so nothing
    conflicts and the other writer's checkpoint is neither lost nor replayed twice."""
    from backends.memory import MemoryStore

    host = MockHypervisor(str(tmp_path / "host.json"))
    for d in ("vm1", "vm2"):
        host.define(d, ["vda"])
    store = MemoryStore()
    store.close = lambda: None  # type: ignore[method-assign]  # shared by both ledgers
    with Ledger.open(store=store, hypervisor=host) as lg, \
            Ledger.open(store=store, hypervisor=host, actor="other") as other:
        for d in ("vm1", "vm2"):
            lg.create(d, f"{d}-a")
        host.forget_checkpoints("vm2")
        real = store.lock_all

        def late(ids: Any) -> Any:
            other.create("vm1", "vm1-b")  # lands after the replay read the log
            return real(ids)

        store.lock_all = late  # type: ignore[method-assign]
        reports = lg.replay(["vm1", "vm2"], jobs=2)
        assert [r.error for r in reports] == [None, None]
        assert host.list_checkpoints("vm1") == ["vm1-a", "vm1-b"]
        assert host.list_checkpoints("vm2") == ["vm2-a"]
        assert [c.name for c in lg.list("vm1", topological=True)] == ["vm1-a", "vm1-b"]
        assert "OperationSettled" not in [e.type for e in lg.log()]
