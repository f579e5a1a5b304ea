"""The ledger against libvirt itself: random checkpoint histories on test:///default.

Hypothesis draws sequences of creates (with each kind of disk list, names taken or not),
deletes (every combination of CHILDREN, CHILDREN_ONLY and METADATA_ONLY, mostly of existing
checkpoints, some of a missing one) and REDEFINEs (new names and in-place updates, with no
parent, an existing one, a missing one, itself or a descendant). Each step runs twice:
through a :class:`Ledger` on the domain ``test`` of libvirt's test driver, and as the raw
libvirt call on its twin domain. After every step:

* both sides accepted it, or both refused it with the same libvirt error code (a delete
  with CHILDREN and CHILDREN_ONLY is INVALID_ARG before the name is looked up, as in
  virsh), and a refusal appended no event;
* the ledger's checkpoints and parents equal libvirt's own (``listAllCheckpoints`` and
  ``getParent``) on ``test``, and the twin's equal them too;
* the ledger's current checkpoint is libvirt's: libvirt exposes none, so it is observed as
  the parent libvirt gives a probe checkpoint, created and deleted again at once.

A failing sequence is printed by Hypothesis, with a ``@reproduce_failure`` blob to replay it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import Ledger
from ledger.domain.errors import LedgerError

pytestmark = pytest.mark.libvirt

URI = "test:///default"
NAMES = "abcdef"
FLAGS = [frozenset(f) for f in ([], ["children"], ["children_only"], ["metadata_only"],
                                ["children", "metadata_only"],
                                ["children_only", "metadata_only"],
                                ["children", "children_only"])]
PROBE = "zz-probe"

# delete and redefine name checkpoints by index into those that exist at that step (see
# resolve), so that most of them act on a real checkpoint
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.sampled_from(NAMES),
                  st.sampled_from([None, "vda", "vda,checkpoint=no"])),
        st.tuples(st.just("delete"), st.integers(0, 7), st.sampled_from(FLAGS)),
        st.tuples(st.just("redefine"), st.integers(0, 7), st.integers(-2, 7)),
    ),
    min_size=1, max_size=10,
)


def resolve(op: tuple[Any, ...], existing: list[str]) -> tuple[Any, ...]:
    """``op`` with names: a delete targets an existing checkpoint (or ``z``, which is
    missing); a redefine updates one (or defines a new name) with an existing parent, none
    (-2) or a missing one (-1)."""
    kind, a, b = op
    if kind == "delete":
        return kind, existing[a % len(existing)] if existing and a < 6 else "z", b
    if kind == "redefine":
        new = next(n for n in "ghijklmnopq" if n not in existing)
        name = existing[a % len(existing)] if existing and a < 4 else new
        parent = None if b == -2 or (b >= 0 and not existing) else (
            "z" if b == -1 else existing[b % len(existing)])
        return kind, name, parent
    return op


@pytest.fixture(scope="module")
def libvirt_domains() -> Iterator[tuple[Any, Any, Any]]:
    """(libvirt module, domain ``test``, its running twin) on test:///default; the twin is
    removed afterwards."""
    try:
        import libvirt  # noqa: F401
    except ImportError:
        pytest.skip("libvirt-python is not installed (pip install 'ckpt-ledger[libvirt]')")
    from adapters.libvirt import load_libvirt

    libvirt = load_libvirt(URI)  # its error-code names, and libvirt's stderr quiet
    conn = libvirt.open(URI)
    test = conn.lookupByName("test")
    xml = test.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    twin = conn.defineXML(re.sub(r"<uuid>.*?</uuid>", "", xml)
                          .replace("<name>test</name>", "<name>twin</name>"))
    twin.create()
    try:
        yield libvirt, test, twin
    finally:
        for dom in (test, twin):
            wipe(libvirt, dom)
        twin.destroy()
        twin.undefine()
        conn.close()


def wipe(libvirt: Any, dom: Any) -> None:
    for root in dom.listAllCheckpoints(libvirt.VIR_DOMAIN_CHECKPOINT_LIST_ROOTS):
        root.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_CHILDREN)


def libvirt_tree(libvirt: Any, dom: Any) -> dict[str, str | None]:
    """libvirt's own {checkpoint: parent}."""
    out: dict[str, str | None] = {}
    for cp in dom.listAllCheckpoints(0):
        try:
            out[cp.getName()] = cp.getParent(0).getName()
        except libvirt.libvirtError as e:
            assert e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_CHECKPOINT, e
            out[cp.getName()] = None
    return out


def libvirt_current(libvirt: Any, dom: Any) -> str | None:
    """libvirt's current checkpoint: the parent it gives a new one (deleted again)."""
    probe = dom.checkpointCreateXML(f"<domaincheckpoint><name>{PROBE}</name>"
                                    "</domaincheckpoint>", 0)
    try:
        return str(probe.getParent(0).getName())
    except libvirt.libvirtError:
        return None
    finally:
        probe.delete(0)


def create_xml(name: str, disk: str | None) -> str:
    disks = {None: "", "vda": "<disks><disk name='vda' checkpoint='bitmap'/></disks>",
             "vda,checkpoint=no": "<disks><disk name='vda' checkpoint='no'/></disks>"}[disk]
    return f"<domaincheckpoint><name>{name}</name>{disks}</domaincheckpoint>"


def redefine_xml(name: str, parent: str | None) -> str:
    up = f"<parent><name>{parent}</name></parent>" if parent else ""
    return (f"<domaincheckpoint><name>{name}</name>{up}<creationTime>1700000000"
            "</creationTime><disks><disk name='vda' checkpoint='bitmap'/></disks>"
            "</domaincheckpoint>")


def through_ledger(lg: Ledger, op: tuple[Any, ...]) -> str | None:
    """Run ``op`` on ``test`` through the ledger: None, or the refusal's error code."""
    kind, name, arg = op
    try:
        if kind == "create":
            lg.create("test", name, None if arg is None else [arg])
        elif kind == "delete":
            lg.delete("test", name, **{f: True for f in arg})
        else:
            lg.redefine("test", redefine_xml(name, arg))
    except LedgerError as e:
        return e.code
    return None


def raw(libvirt: Any, dom: Any, op: tuple[Any, ...]) -> str | None:
    """Run ``op`` on ``dom`` with libvirt's own calls: None, or libvirt's error code."""
    from adapters.libvirt import error_code_name

    kind, name, arg = op
    try:
        if kind == "create":
            dom.checkpointCreateXML(create_xml(name, arg), 0)
        elif kind == "delete":
            flags = 0
            for f, bit in (("children", libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_CHILDREN),
                           ("children_only", libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_CHILDREN_ONLY),
                           ("metadata_only", libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)):
                if f in arg:
                    flags |= bit
            dom.checkpointLookupByName(name, 0).delete(flags)
        else:
            dom.checkpointCreateXML(redefine_xml(name, arg),
                                    libvirt.VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE)
    except libvirt.libvirtError as e:
        return error_code_name(e.get_error_code())
    return None


@settings(max_examples=25, deadline=None, print_blob=True)
@given(ops=OPS)
def test_ledger_equals_libvirt_test_driver(libvirt_domains: tuple[Any, Any, Any],
                                           ops: list[tuple[Any, ...]]) -> None:
    """After every step: the same outcome as libvirt, and libvirt's tree and current."""
    libvirt, test, twin = libvirt_domains
    from adapters.libvirt import LibvirtHypervisor

    wipe(libvirt, test)
    wipe(libvirt, twin)
    with Ledger.open("memory://", LibvirtHypervisor(URI)) as lg:
        tree: dict[str, str | None] = {}
        for step, drawn in enumerate(ops):
            op = resolve(drawn, sorted(tree))
            events = lg.event_count()
            ours, theirs = through_ledger(lg, op), raw(libvirt, twin, op)
            where = f"step {step}: {op}"
            if op[0] == "delete" and {"children", "children_only"} <= op[2]:
                # virsh refuses these exclusive options before it looks the name up, as the
                # ledger does; the API can check them only on a checkpoint it has found
                assert ours == "INVALID_ARG", where
                assert theirs in ("INVALID_ARG", "NO_DOMAIN_CHECKPOINT"), where
            else:
                assert ours == theirs, f"{where}: ledger {ours}, libvirt {theirs}"
            if ours is not None:
                assert lg.event_count() == events, f"{where}: a refusal appended an event"
            tree = libvirt_tree(libvirt, test)
            assert libvirt_tree(libvirt, twin) == tree, where
            current = libvirt_current(libvirt, test) if tree else None  # 15 ms a probe
            if "test" not in lg.domains():  # nothing recorded yet: nothing on libvirt either
                assert tree == {} and current is None, where
                continue
            views = lg.list("test")
            assert {v.name: v.parent for v in views} == tree, where
            assert [v.name for v in views if v.current] == ([current] if current else []), where
