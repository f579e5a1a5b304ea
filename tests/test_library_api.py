"""The library API: ``from ledger import Ledger, LedgerError``, and libvirt's "current"
checkpoint rules for REDEFINE and delete (docs/libvirt-checkpoints.md §5.2)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from adapters.mock import MockHypervisor
from backends.memory import open_url as open_memory
from ledger import (
    BitmapsView,
    CheckpointView,
    DeleteResult,
    EventView,
    Ledger,
    LedgerError,
    PlanView,
)


def redef(name: str, parent: str | None = None, t: int = 100) -> str:
    p = f"<parent><name>{parent}</name></parent>" if parent else ""
    return (f"<domaincheckpoint><name>{name}</name>{p}<creationTime>{t}</creationTime>"
            "<disks><disk name='vda'/></disks></domaincheckpoint>")


@pytest.fixture
def hv(tmp_path: Path) -> MockHypervisor:
    m = MockHypervisor(str(tmp_path / "host.json"))
    m.define("vm", ["vda"])
    return m


@pytest.fixture
def lg(tmp_path: Path, hv: MockHypervisor) -> Iterator[Ledger]:
    with Ledger.open(store=f"sqlite:///{tmp_path / 'l.db'}", hypervisor=hv) as ledger:
        yield ledger


def current(lg: Ledger, domain: str = "vm") -> str | None:
    cur = [v.name for v in lg.list(domain) if v.current]
    return cur[0] if cur else None


def test_open_with_urls_and_instances(tmp_path: Path, hv: MockHypervisor) -> None:
    """Ledger.open takes a store URL or instance and a hypervisor URI or instance; state is
    read back from the store by a new Ledger."""
    db = f"sqlite:///{tmp_path / 'l.db'}"
    with Ledger.open(store=db, hypervisor=f"mock:///{tmp_path / 'host.json'}") as a:
        a.create("vm", "c1")
    with Ledger.open(store=db) as b:  # reads need no hypervisor
        assert [v.name for v in b.list("vm")] == ["c1"]
        with pytest.raises(LedgerError) as err:
            b.create("vm", "c2")
        assert err.value.code == "NO_CONNECT"
    with Ledger.open(store=open_memory("memory://"), hypervisor=hv) as c:
        c.create("vm", "m1")
        assert c.event_count() >= 2
    with Ledger.open(store="memory://", hypervisor=hv) as d:
        assert d.event_count() == 0


def test_methods_return_pydantic_models(lg: Ledger) -> None:
    """Every read returns a pydantic model with the CLI's JSON shape."""
    created = lg.create("vm", "c1", ["vda"], description="d")
    assert isinstance(created, CheckpointView) and created.current
    lg.create("vm", "c2")
    assert all(isinstance(v, CheckpointView) for v in lg.list("vm"))
    assert isinstance(lg.show("vm", "c1"), CheckpointView)
    assert isinstance(lg.bitmaps("vm"), BitmapsView)
    plan = lg.plan("vm", "c1")
    assert isinstance(plan, PlanView) and plan.disks["vda"].bitmaps == ["c1"]
    assert all(isinstance(e, EventView) for e in lg.log())
    assert isinstance(lg.xml("vm", "c1"), str)
    res = lg.delete("vm", "c2")
    assert isinstance(res, DeleteResult) and res.deleted == ["c2"]
    for m in (created, plan, res):
        assert isinstance(m, BaseModel)


def test_ledger_error_has_libvirt_code(lg: Ledger) -> None:
    """A LedgerError carries libvirt's error-code name in ``.code``."""
    lg.create("vm", "c1")
    cases = [
        (lambda: lg.create("vm", "c1"), "OPERATION_FAILED"),
        (lambda: lg.create("nodom", "x"), "NO_DOMAIN"),
        (lambda: lg.show("vm", "nope"), "NO_DOMAIN_CHECKPOINT"),
        (lambda: lg.delete("vm", "c1", children=True, children_only=True), "INVALID_ARG"),
        (lambda: lg.create("vm", "../x"), "XML_INVALID_SCHEMA"),
        (lambda: lg.redefine("vm", "<domaincheckpoint/>"), "XML_ERROR"),
    ]
    for call, code in cases:
        with pytest.raises(LedgerError) as err:
            call()
        assert err.value.code == code
        assert "\n" not in err.value.one_line()


def test_redefine_chain_in_topological_order_makes_last_current(lg: Ledger) -> None:
    """§5.2 item 2: redefining r1, r2(parent r1), r3(parent r2) makes r3 current; a fresh
    create then gets parent r3."""
    for name, parent in (("r1", None), ("r2", "r1"), ("r3", "r2")):
        lg.redefine("vm", redef(name, parent))
    assert current(lg) == "r3"
    assert lg.create("vm", "n").parent == "r3"


def test_sibling_redefine_does_not_move_current(lg: Ledger) -> None:
    """§5.2 item 2: after b2 (parent b, which was current) and b3 (parent b), current stays
    b2, and a new checkpoint gets parent b2: fan-out only through REDEFINE."""
    lg.redefine("vm", redef("b"))
    lg.redefine("vm", redef("b2", "b"))
    lg.redefine("vm", redef("b3", "b"))
    assert current(lg) == "b2"
    assert lg.create("vm", "n").parent == "b2"
    assert sorted(lg.show("vm", "b").children) == ["b2", "b3"]


def test_deleting_current_moves_current_to_parent(lg: Ledger) -> None:
    """§5.2 item 3: if the deleted checkpoint was current, current := its parent."""
    for n in ("a", "b", "c"):
        lg.create("vm", n)
    lg.delete("vm", "c")
    assert current(lg) == "b"
    lg.delete("vm", "a")  # a root with a child: b becomes a root, current unchanged
    assert current(lg) == "b" and lg.show("vm", "b").parent is None
    lg.delete("vm", "b")
    assert current(lg) is None
    assert lg.create("vm", "n").parent is None


def test_children_only_makes_target_current(lg: Ledger) -> None:
    """§5.2 item 4: CHILDREN_ONLY discards the descendants; current was among them, so the
    target becomes current and the next create is its child."""
    for n in ("a", "b", "c"):
        lg.create("vm", n)
    lg.delete("vm", "a", children_only=True)
    assert [v.name for v in lg.list("vm")] == ["a"] and current(lg) == "a"
    assert lg.create("vm", "n").parent == "a"


def test_in_place_redefine_keeps_children(lg: Ledger) -> None:
    """§3.3: redefining an existing name replaces the definition in place and keeps all its
    child links."""
    for n in ("a", "b", "c"):
        lg.create("vm", n)
    described = "<name>b</name>\n  <description>new</description>"
    lg.redefine("vm", lg.xml("vm", "b").replace("<name>b</name>", described))
    b = lg.show("vm", "b")
    assert b.description == "new" and b.children == ["c"] and b.parent == "a"
    assert lg.show("vm", "c").parent == "b"
    assert [v.name for v in lg.list("vm", topological=True)] == ["a", "b", "c"]


def test_failed_hypervisor_call_appends_nothing(lg: Ledger, hv: MockHypervisor) -> None:
    """A command the hypervisor refuses leaves the log exactly as it was."""
    lg.create("vm", "c1")
    before = lg.event_count()
    hv.set_running("vm", False)
    with pytest.raises(LedgerError) as err:
        lg.create("vm", "c2")
    assert err.value.code == "OPERATION_UNSUPPORTED"
    with pytest.raises(LedgerError) as err:
        lg.delete("vm", "c1")
    assert err.value.code == "OPERATION_UNSUPPORTED"
    hv.set_running("vm", True)
    hv.remove_bitmap("vm", "vda", "c1")
    with pytest.raises(LedgerError) as err:
        lg.delete("vm", "c1")
    assert err.value.code == "INTERNAL_ERROR"
    assert lg.event_count() == before
    assert [v.name for v in lg.list("vm")] == ["c1"]
