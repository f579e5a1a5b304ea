"""adapters.libvirt against libvirt's in-process test driver (test:///default).

The shared HypervisorContract runs on the default domain ``test`` (running, one disk
``vda``), plus libvirt-only cases: error mapping, read-only connections, the missing
binding and unreachable URIs. The test driver's state is a per-process singleton, so
every test starts and ends by deleting each root checkpoint with CHILDREN.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypervisor_contract import HypervisorContract, cp_xml, parsed, redef_xml

from backends.memory import MemoryStore
from cli.commands import tree_lines
from ledger import Ledger
from ledger.domain.errors import LedgerError
from ledger.domain.hypervisor import Hypervisor, PartialDelete

pytestmark = pytest.mark.libvirt

URI = "test:///default"


def _libvirt_or_skip() -> Any:
    try:
        import libvirt
    except ImportError:
        pytest.skip("libvirt-python is not installed (pip install 'ckpt-ledger[libvirt]')")
    return libvirt


def wipe(adapter: Any, domain: str) -> None:
    """Delete every checkpoint of ``domain``: each root with CHILDREN."""
    lv = _libvirt_or_skip()
    dom = adapter.connection.lookupByName(domain)
    for root in dom.listAllCheckpoints(lv.VIR_DOMAIN_CHECKPOINT_LIST_ROOTS):
        root.delete(lv.VIR_DOMAIN_CHECKPOINT_DELETE_CHILDREN)
    assert dom.listAllCheckpoints(0) == []


@pytest.fixture
def adapter() -> Iterator[Any]:
    _libvirt_or_skip()
    from adapters.libvirt import LibvirtHypervisor

    hv = LibvirtHypervisor(URI)
    wipe(hv, "test")
    yield hv
    wipe(hv, "test")
    hv.close()


@pytest.fixture
def hypervisor(adapter: Any) -> tuple[Any, str]:
    return adapter, "test"


class TestLibvirtTestDriverContract(HypervisorContract):
    """The shared contract on test:///default."""


# -- libvirt-only cases -----------------------------------------------------------------------


def test_is_a_hypervisor_and_routed_by_plugins(adapter: Any) -> None:
    from adapters.libvirt import LibvirtHypervisor
    from ledger.app.plugins import open_hypervisor

    for name, proto in vars(Hypervisor).items():
        if callable(proto) and not name.startswith("_"):
            ours = inspect.signature(getattr(LibvirtHypervisor, name))
            assert list(ours.parameters) == list(inspect.signature(proto).parameters), name
    hv = open_hypervisor(URI)
    try:
        assert isinstance(hv, LibvirtHypervisor) and hv.uri == URI
        assert "test" in hv.list_domains()
    finally:
        hv.close()


def test_domain_info_of_default_domain(adapter: Any) -> None:
    info = adapter.domain_info("test")
    assert info.uuid == "6695eb01-f6a4-8304-79aa-97f2502e193f"
    assert info.policy == "independent"  # libvirt >= 6.5
    assert [(d.name, d.format, d.source) for d in info.disks] == [
        ("vda", "raw", "/guest/diskimage1")
    ]
    assert info.domain_xml is not None and "<domain" in info.domain_xml


def test_error_mapping_keeps_libvirt_message(adapter: Any) -> None:
    adapter.create_checkpoint("test", cp_xml("c1"))
    with pytest.raises(LedgerError) as ei:
        adapter.create_checkpoint("test", cp_xml("c1"))
    err = ei.value
    assert err.code == "OPERATION_FAILED"
    assert str(err) == "operation failed: domain moment c1 already exists"  # no double prefix
    with pytest.raises(LedgerError) as ei:
        adapter.create_checkpoint("test", cp_xml("../x"))
    assert ei.value.code == "XML_INVALID_SCHEMA"
    assert "\n" not in str(ei.value) and str(ei.value).startswith("XML document failed")


def test_error_code_names() -> None:
    _libvirt_or_skip()
    from adapters.libvirt import error_code_name, load_libvirt

    load_libvirt(URI)
    # 1 and 2 are also the values of the error *levels* VIR_ERR_WARNING / VIR_ERR_ERROR
    assert error_code_name(1) == "INTERNAL_ERROR"
    assert error_code_name(2) == "NO_MEMORY"
    assert error_code_name(42) == "NO_DOMAIN"
    assert error_code_name(103) == "NO_DOMAIN_CHECKPOINT"
    assert error_code_name(None) == "INTERNAL_ERROR"
    assert error_code_name(99999) == "UNKNOWN_99999"


def test_redefine_validate_is_refused_by_the_test_driver(adapter: Any) -> None:
    with pytest.raises(LedgerError) as ei:
        adapter.redefine_checkpoint("test", redef_xml("r1"), validate=True)
    assert ei.value.code == "INVALID_ARG" and "0x4" in str(ei.value)


def test_quiesce_is_accepted_by_the_test_driver(adapter: Any) -> None:
    assert parsed(adapter.create_checkpoint("test", cp_xml("q1"), quiesce=True))["name"] == "q1"


def test_checkpoint_xmls_parents_first(adapter: Any) -> None:
    for n in ("c1", "c3", "c2"):
        adapter.create_checkpoint("test", cp_xml(n))
    xmls = adapter.checkpoint_xmls("test")
    assert [parsed(x)["name"] for x in xmls] == ["c1", "c3", "c2"]
    assert all(parsed(x)["has_domain"] for x in xmls)


def test_observed_bitmaps_needs_the_qemu_driver(adapter: Any) -> None:
    with pytest.raises(LedgerError) as ei:
        adapter.observed_bitmaps("test")
    assert ei.value.code == "NO_SUPPORT"


def test_read_only_connection(adapter: Any) -> None:
    from adapters.libvirt import LibvirtHypervisor

    adapter.create_checkpoint("test", cp_xml("c1"))
    ro = LibvirtHypervisor(URI, readonly=True)
    try:
        assert ro.list_checkpoints("test") == ["c1"]
        assert parsed(ro.checkpoint_xml("test", "c1"))["name"] == "c1"  # no SECURE flag
        assert ro.domain_info("test").running
        for call in (
            lambda: ro.create_checkpoint("test", cp_xml("c2")),
            lambda: ro.redefine_checkpoint("test", redef_xml("r1")),
            lambda: ro.delete_checkpoint("test", "c1"),
        ):
            with pytest.raises(LedgerError) as ei:
                call()
            assert ei.value.code == "OPERATION_DENIED"
        assert adapter.list_checkpoints("test") == ["c1"]
    finally:
        ro.close()


def test_closed_adapter(adapter: Any) -> None:
    from adapters.libvirt import LibvirtHypervisor

    hv = LibvirtHypervisor(URI)
    hv.close()
    hv.close()  # idempotent
    with pytest.raises(LedgerError) as ei:
        hv.list_checkpoints("test")
    assert ei.value.code == "HYPERVISOR_ERROR"


def test_unreachable_socket_uri() -> None:
    _libvirt_or_skip()
    from adapters.libvirt import open_url

    uri = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"
    with pytest.raises(LedgerError) as ei:
        open_url(uri)
    msg = str(ei.value)
    assert ei.value.code == "HYPERVISOR_ERROR"
    assert uri in msg and "\n" not in msg


def test_missing_binding_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulates an environment without libvirt-python (tests our error path only)."""
    from adapters import libvirt as adapter_mod

    monkeypatch.setitem(sys.modules, "libvirt", None)  # makes `import libvirt` fail
    with pytest.raises(LedgerError) as ei:
        adapter_mod.open_url("qemu:///system")
    assert ei.value.code == "HYPERVISOR_ERROR"
    assert str(ei.value) == (
        "libvirt URI 'qemu:///system' needs libvirt-python: pip install 'ckpt-ledger[libvirt]' "
        "(it builds against the system libvirt: apt-get install libvirt-dev pkg-config)"
    )


# -- PartialDelete detection (docs/libvirt-checkpoints.md §5.2 item 3) ------------------------
# The test driver cannot fail a delete half-way, so a stand-in connection replays what the
# qemu driver does: children reparented, then the bitmap removal fails. (tests/e2e provokes
# the real thing on QEMU.)


class _FakeCp:
    def __init__(self, dom: _FakeDom, name: str) -> None:
        self.dom, self.name = dom, name

    def getName(self) -> str:  # noqa: N802 - libvirt's spelling
        return self.name

    def getParent(self, flags: int = 0) -> _FakeCp:  # noqa: N802
        parent = self.dom.parents[self.name]
        if parent is None:
            raise self.dom.error(103, f"checkpoint '{self.name}' does not have a parent")
        return _FakeCp(self.dom, parent)

    def listAllChildren(self, flags: int = 0) -> list[_FakeCp]:  # noqa: N802
        return [_FakeCp(self.dom, k) for k, p in self.dom.parents.items() if p == self.name]

    def delete(self, flags: int = 0) -> None:
        if self.dom.reparent_then_fail:
            for kid, p in list(self.dom.parents.items()):
                if p == self.name:
                    self.dom.parents[kid] = self.dom.parents[self.name]
        raise self.dom.error(1, f"internal error: bitmap '{self.name}' not found in backing chain")


class _FakeDom:
    def __init__(self, lv: Any, reparent_then_fail: bool) -> None:
        self.lv = lv
        self.reparent_then_fail = reparent_then_fail
        self.parents: dict[str, str | None] = {"a": None, "b": "a", "c": "b", "d": "b"}

    def error(self, code: int, msg: str) -> Exception:
        class Err(self.lv.libvirtError):  # type: ignore[name-defined,misc]
            def get_error_code(self) -> int:
                return code

            def get_error_message(self) -> str:
                return msg

        return Err(msg)

    def checkpointLookupByName(self, name: str, flags: int = 0) -> _FakeCp:  # noqa: N802
        if name not in self.parents:
            raise self.error(103, f"no domain checkpoint with matching name '{name}'")
        return _FakeCp(self, name)


class _FakeConn:
    def __init__(self, dom: _FakeDom) -> None:
        self.dom = dom

    def lookupByName(self, name: str) -> _FakeDom:  # noqa: N802
        return self.dom

    def close(self) -> int:
        return 0


@pytest.mark.parametrize("reparent_then_fail", [True, False])
def test_partial_delete_detection(adapter: Any, reparent_then_fail: bool) -> None:
    lv = _libvirt_or_skip()
    from adapters.libvirt import LibvirtHypervisor

    hv = LibvirtHypervisor(URI)
    hv.close()
    hv._conn = _FakeConn(_FakeDom(lv, reparent_then_fail))
    if reparent_then_fail:
        with pytest.raises(PartialDelete) as pe:
            hv.delete_checkpoint("vm", "b")
        assert pe.value.reparented == {"c": "a", "d": "a"}
        assert isinstance(pe.value.error, LedgerError)
        assert pe.value.error.code == "INTERNAL_ERROR"
    else:
        with pytest.raises(LedgerError) as ei:
            hv.delete_checkpoint("vm", "b")
        assert ei.value.code == "INTERNAL_ERROR" and not isinstance(ei.value, PartialDelete)


@pytest.mark.parametrize("n", [
    1_100,  # beyond Python's recursion limit, which a 1,000-deep walk once hit
    pytest.param(10_000, marks=[pytest.mark.timeout(1800), pytest.mark.skipif(
        not os.environ.get("CI"), reason="~5 minutes in the test driver (CI runs it)")]),
])
def test_a_long_chain_replays_into_libvirt(adapter: Any, tmp_path: Any, n: int) -> None:
    """Years of daily backups: a chain of thousands of checkpoints, imported from XML files,
    replays into the test driver parents first, current last, and `list --tree` draws it (no
    recursion on any chain walk). Not timed: it must just work (the test driver spends
    ~30 ms in each REDEFINE)."""
    folder = tmp_path / "chain"
    folder.mkdir()
    for i in range(n):
        parent = f"<parent><name>c{i - 1:05d}</name></parent>" if i else ""
        (folder / f"c{i:05d}.xml").write_text(
            f"<domaincheckpoint><name>c{i:05d}</name>{parent}<creationTime>{1_000 + i}"
            "</creationTime><disks><disk name='vda' checkpoint='bitmap'/></disks>"
            "</domaincheckpoint>")
    with Ledger.open(MemoryStore(), URI) as lg:  # its own connection to the same driver
        assert len(lg.import_xml("test", folder).added) == n
        (report,) = lg.replay(["test"])
        assert [s.action for s in report.steps] == ["redefine"] * n
        names = adapter.list_checkpoints("test")
        assert len(names) == n and names[0] == "c00000" and names[-1] == f"c{n - 1:05d}"
        assert lg.show("test", f"c{n - 1:05d}").current
        drawn = tree_lines(lg.list("test"))
        assert drawn[0] == "c00000" and drawn[-2].endswith(f"+- c{n - 1:05d}")
        assert len(drawn) == 2 * n


def test_several_domains_replay_at_once_into_libvirt(adapter: Any, tmp_path: Any) -> None:
    """``replay --jobs``: each domain's thread redefines its chain over one shared
    connection, parents first, and every domain ends with the ledger's checkpoints and
    current."""
    import uuid

    lv = _libvirt_or_skip()
    names = [f"replay-{i}" for i in range(4)]
    doms = []
    try:
        for name in names:
            doms.append(adapter.connection.createXML(
                f"<domain type='test'><name>{name}</name><uuid>{uuid.uuid4()}</uuid>"
                "<memory>65536</memory><os><type arch='x86_64'>hvm</type></os><devices>"
                "<disk type='file' device='disk'><source file='/tmp/x.qcow2'/><target "
                "dev='vda'/></disk></devices></domain>", 0))
            folder = tmp_path / name
            folder.mkdir()
            for i in range(30):
                parent = f"<parent><name>{name}.{i - 1}</name></parent>" if i else ""
                (folder / f"{i}.xml").write_text(
                    f"<domaincheckpoint><name>{name}.{i}</name>{parent}<creationTime>"
                    f"{1_000 + i}</creationTime><disks><disk name='vda' checkpoint='bitmap'/>"
                    "</disks></domaincheckpoint>")
        with Ledger.open(MemoryStore(), URI) as lg:
            for name in names:
                lg.import_xml(name, tmp_path / name)
            reports = lg.replay(names, jobs=4)
            assert [r.error for r in reports] == [None] * 4
            for name in names:
                assert adapter.list_checkpoints(name) == [f"{name}.{i}" for i in range(30)]
                assert lg.show(name, f"{name}.29").current
                made = parsed(adapter.create_checkpoint(  # libvirt's own current: the parent
                    name, f"<domaincheckpoint><name>{name}.next</name></domaincheckpoint>"))
                assert made["parent"] == f"{name}.29"
    finally:
        for dom in doms:
            for root in dom.listAllCheckpoints(lv.VIR_DOMAIN_CHECKPOINT_LIST_ROOTS):
                root.delete(lv.VIR_DOMAIN_CHECKPOINT_DELETE_CHILDREN)
            dom.destroy()


def _transient(adapter: Any, name: str, uuid: str) -> Any:
    return adapter.connection.createXML(
        f"<domain type='test'><name>{name}</name><uuid>{uuid}</uuid><memory>65536</memory>"
        "<os><type arch='x86_64'>hvm</type></os><devices><disk type='file' device='disk'>"
        "<source file='/tmp/x.qcow2'/><target dev='vda'/></disk></devices></domain>", 0)


@pytest.mark.parametrize("op", ["create", "delete", "replay"])
def test_a_command_acts_only_on_the_domain_it_locked(
    adapter: Any, monkeypatch: pytest.MonkeyPatch, op: str
) -> None:
    """Another tool replaces the domain (same name, new UUID) between the ledger's lock and
    its call to the hypervisor: the call fails with NO_DOMAIN instead of changing the new
    domain, and neither domain's stream records anything."""
    import uuid

    from ledger.app import faults

    lv = _libvirt_or_skip()
    old, new = str(uuid.uuid4()), str(uuid.uuid4())
    doms = [_transient(adapter, "swapped", old)]

    def replace(_point: str) -> None:
        doms[0].destroy()  # a transient domain: gone with its checkpoints
        doms.append(_transient(adapter, "swapped", new))
        doms[0] = doms[-1]
        monkeypatch.delenv("CKPT_LEDGER_CRASH_AT")

    try:
        with Ledger.open(MemoryStore(), URI) as lg:
            lg.create("swapped", name="c1")
            if op == "replay":  # the host lost the metadata: replay puts it back
                doms[0].checkpointLookupByName("c1").delete(
                    lv.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
            before = lg.event_count()
            monkeypatch.setattr(faults, "crash", replace)
            monkeypatch.setenv("CKPT_LEDGER_CRASH_AT", "before-hypervisor")
            with pytest.raises(LedgerError) as err:
                if op == "create":
                    lg.create("swapped", name="c2")
                elif op == "delete":
                    lg.delete("swapped", "c1")
                else:
                    (report,) = lg.replay(["swapped"])
                    raise report.error or AssertionError("replay reported no error")
            assert err.value.code == "NO_DOMAIN"
            assert adapter.list_checkpoints("swapped") == []  # the new domain is untouched
            assert lg.event_count() == before
            assert new not in lg.states and old in lg.states
    finally:
        doms[0].destroy()


def test_forget_asks_the_host_about_the_domain_it_recorded(adapter: Any) -> None:
    """``forget`` is refused while the host still has the checkpoint on the domain the
    ledger recorded (by UUID); a new domain that took the name, with a checkpoint that took
    the checkpoint's name, does not stand in for it."""
    import uuid

    _libvirt_or_skip()
    doms = [_transient(adapter, "renamed", str(uuid.uuid4()))]
    try:
        with Ledger.open(MemoryStore(), URI) as lg:
            lg.create("renamed", name="c1")
            lg.create("renamed", name="c2")
            with pytest.raises(LedgerError) as err:
                lg.forget("renamed", "c1", "a typo")
            assert err.value.code == "OPERATION_INVALID" and "still on" in str(err.value)
            doms[0].destroy()  # gone, with its checkpoints; another domain takes the name
            doms[0] = _transient(adapter, "renamed", str(uuid.uuid4()))
            doms[0].checkpointCreateXML("<domaincheckpoint><name>c1</name></domaincheckpoint>")
            count = lg.event_count()
            lg.forget("renamed", "c1", "the host lost it")
            assert lg.event_count() == count + 1
            assert [c.name for c in lg.list("renamed")] == ["c2"]
            assert [c.getName() for c in doms[0].listAllCheckpoints()] == ["c1"]
    finally:
        doms[0].destroy()


class _Counting:
    """The adapter, with a count of each method's calls."""

    def __init__(self, hv: Any) -> None:
        self.hv = hv
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.hv, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return attr(*args, **kwargs)

        return counted


@pytest.mark.parametrize("laid_out_as_libvirt", [True, False])
def test_replay_records_the_text_libvirt_holds(
    adapter: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, laid_out_as_libvirt: bool
) -> None:
    """Replay reads back the last checkpoint of each batch. When libvirt holds the very text
    sent, that one read stands for the batch; when not (here: the files' embedded domain is
    not laid out as libvirt formats one), every checkpoint is read back. Either way the
    ledger's XML of each replayed checkpoint is libvirt's."""
    from ledger.app import commands

    monkeypatch.setattr(commands, "REPLAY_BATCH", 4)
    dom_xml = adapter.domain_info("test").domain_xml.rstrip()
    if not laid_out_as_libvirt:
        dom_xml = dom_xml.replace("'", '"')
    embedded = "  " + dom_xml.replace("\n", "\n  ")
    folder = tmp_path / "chain"
    folder.mkdir()
    names = [f"c{i}" for i in range(10)]
    for i, name in enumerate(names):
        parent = f"<parent><name>c{i - 1}</name></parent>" if i else ""
        (folder / f"{name}.xml").write_text(
            f"<domaincheckpoint><name>{name}</name>{parent}<creationTime>{1_000 + i}"
            "</creationTime><disks><disk name='vda' checkpoint='bitmap' bitmap='b'/></disks>"
            f"\n{embedded}\n</domaincheckpoint>")
    from adapters.libvirt import LibvirtHypervisor

    hv = _Counting(LibvirtHypervisor(URI))  # its own connection: the ledger closes it
    with Ledger.open(MemoryStore(), hv) as lg:
        lg.import_xml("test", folder)
        hv.calls.clear()
        (report,) = lg.replay(["test"])
        assert report.error is None
        assert hv.calls["redefine_checkpoint"] == 10
        reads = hv.calls.get("checkpoint_xml", 0)
        assert reads == (3 if laid_out_as_libvirt else 3 + 10)  # batches of 4, 4 and 2
        for name in names:
            assert lg.xml("test", name) == adapter.checkpoint_xml("test", name)
