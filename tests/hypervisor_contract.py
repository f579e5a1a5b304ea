"""The behaviour every Hypervisor adapter owes (ledger/domain/hypervisor.py), as one test class.

These are specifications of libvirt's checkpoint behaviour (docs/libvirt-checkpoints.md
sections 2-6 and 9), written against a *running* domain with one writable disk ``vda``,
like ``test:///default``'s default domain ``test``. Only Protocol methods are used, and
errors are compared by CODE only (never message text or error domain), so the same class
runs against libvirt's test driver and the mock hypervisor.

Use it by subclassing :class:`HypervisorContract` in a test module that provides a
``hypervisor`` fixture yielding ``(adapter, domain_name)`` with no checkpoints on the
domain (and cleans up afterwards)::

    from hypervisor_contract import HypervisorContract

    @pytest.fixture
    def hypervisor():
        adapter = open_url(...)
        yield adapter, "test"
        ...

    class TestMyAdapter(HypervisorContract):
        pass
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ledger.domain.errors import LedgerError

VIRSH_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "libvirt-testdata" / "virsh"
if not VIRSH_DATA.is_dir():
    VIRSH_DATA = Path("/work/shared/libvirt-testdata/virsh")

Hv = tuple[Any, str]


def cp_xml(name: str | None = None, disks: str | None = None, extra: str = "") -> str:
    """A ``<domaincheckpoint>`` for create: optional name, raw ``<disks>`` body, extra XML."""
    parts = ["<domaincheckpoint>"]
    if name is not None:
        parts.append(f"<name>{name}</name>")
    parts.append(extra)
    if disks is not None:
        parts.append(f"<disks>{disks}</disks>")
    parts.append("</domaincheckpoint>")
    return "".join(parts)


def redef_xml(
    name: str | None,
    parent: str | None = None,
    creation_time: int | None = 1000,
    description: str | None = None,
    disks: str | None = "<disk name='vda' checkpoint='bitmap'/>",
) -> str:
    """A ``<domaincheckpoint>`` for REDEFINE (no ``<domain>``, allowed since libvirt 7.0)."""
    extra = ""
    if description is not None:
        extra += f"<description>{description}</description>"
    if parent is not None:
        extra += f"<parent><name>{parent}</name></parent>"
    if creation_time is not None:
        extra += f"<creationTime>{creation_time}</creationTime>"
    return cp_xml(name, disks, extra)


def parsed(xml: str) -> dict[str, Any]:
    """The parts of a checkpoint XML the contract checks."""
    root = ET.fromstring(xml)
    return {
        "name": root.findtext("name"),
        "parent": root.findtext("parent/name"),
        "description": root.findtext("description"),
        "creation_time": root.findtext("creationTime"),
        "disks": {
            d.get("name"): (d.get("checkpoint"), d.get("bitmap"))
            for d in root.findall("disks/disk")
        },
        "has_domain": root.find("domain") is not None,
    }


def code_of(fn: Callable[..., Any], *args: Any, **kw: Any) -> str:
    """Call ``fn``; return the LedgerError code it raised (fail if it did not raise)."""
    with pytest.raises(LedgerError) as ei:
        fn(*args, **kw)
    return str(ei.value.code)


class HypervisorContract:
    """Shared specification; subclasses provide the ``hypervisor`` fixture."""

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def parent(hv: Hv, name: str) -> str | None:
        adapter, dom = hv
        return parsed(adapter.checkpoint_xml(dom, name))["parent"]

    @staticmethod
    def create(hv: Hv, name: str, disks: str | None = None) -> dict[str, Any]:
        adapter, dom = hv
        return parsed(adapter.create_checkpoint(dom, cp_xml(name, disks)))

    # -- domain ----------------------------------------------------------------------------

    def test_domain_info(self, hypervisor: Hv) -> None:
        adapter, dom = hypervisor
        info = adapter.domain_info(dom)
        assert info.name == dom
        assert info.running is True
        assert info.policy in ("independent", "chained")
        vda = info.disk("vda")
        assert vda is not None and not vda.readonly and not vda.empty
        assert dom in adapter.list_domains()

    def test_a_domain_is_found_by_uuid_too(self, hypervisor: Hv) -> None:
        """As virsh: a domain argument is a name or a UUID (any case)."""
        adapter, dom = hypervisor
        info = adapter.domain_info(dom)
        for key in (info.uuid, info.uuid.upper()):
            assert adapter.domain_info(key).name == dom
            assert adapter.list_checkpoints(key) == adapter.list_checkpoints(dom)

    def test_describe_is_one_line_naming_what_it_is(self, hypervisor: Hv) -> None:
        adapter, dom = hypervisor
        line = adapter.describe()
        assert line and "\n" not in line and line.isprintable()
        assert ("mock host" in line) or ("via libvirt" in line and "bitmap policy" in line)
        assert adapter.domain_info(dom).policy in line or "mock host" in line

    def test_unknown_domain(self, hypervisor: Hv) -> None:
        adapter, _ = hypervisor
        assert code_of(adapter.domain_info, "no-such-domain") == "NO_DOMAIN"
        assert code_of(adapter.list_checkpoints, "no-such-domain") == "NO_DOMAIN"
        assert code_of(adapter.create_checkpoint, "no-such-domain", cp_xml("c1")) == "NO_DOMAIN"
        assert code_of(adapter.checkpoint_xml, "no-such-domain", "c1") == "NO_DOMAIN"

    # -- create ----------------------------------------------------------------------------

    def test_create_default_checkpoint(self, hypervisor: Hv) -> None:
        adapter, dom = hypervisor
        c1 = self.create(hypervisor, "c1")
        assert c1["name"] == "c1"
        assert c1["parent"] is None
        assert c1["disks"] == {"vda": ("bitmap", "c1")}  # bitmap name = checkpoint name
        assert c1["has_domain"] is True
        assert c1["creation_time"] is not None and int(c1["creation_time"]) > 0
        c2 = self.create(hypervisor, "c2")
        assert c2["parent"] == "c1"  # parent = the previous current checkpoint
        assert adapter.list_checkpoints(dom) == ["c1", "c2"]
        assert parsed(adapter.checkpoint_xml(dom, "c2", no_domain=True))["has_domain"] is False
        assert parsed(adapter.checkpoint_xml(dom, "c2"))["has_domain"] is True

    def test_create_ignores_parent_and_keeps_description(self, hypervisor: Hv) -> None:
        adapter, dom = hypervisor
        self.create(hypervisor, "c1")
        xml = cp_xml("c2", extra="<description>d2</description><parent><name>zz</name></parent>")
        c2 = parsed(adapter.create_checkpoint(dom, xml))
        assert c2["parent"] == "c1" and c2["description"] == "d2"

    def test_create_listed_disk_and_excluded_disk(self, hypervisor: Hv) -> None:
        c1 = self.create(hypervisor, "c1", "<disk name='vda' checkpoint='no'/>")
        assert c1["disks"] == {"vda": ("no", None)}

    def test_duplicate_name(self, hypervisor: Hv) -> None:
        adapter, dom = hypervisor
        self.create(hypervisor, "c1")
        assert code_of(adapter.create_checkpoint, dom, cp_xml("c1")) == "OPERATION_FAILED"
        assert adapter.list_checkpoints(dom) == ["c1"]

    def test_unknown_disk(self, hypervisor: Hv) -> None:
        adapter, dom = hypervisor
        xml = cp_xml("c1", "<disk name='vdz'/>")
        assert code_of(adapter.create_checkpoint, dom, xml) == "CONFIG_UNSUPPORTED"
        assert adapter.list_checkpoints(dom) == []

    @pytest.mark.parametrize("bad", ["../escape", ".hidden", "a/b", "with space"])
    def test_bad_name(self, hypervisor: Hv, bad: str) -> None:
        adapter, dom = hypervisor
        assert code_of(adapter.create_checkpoint, dom, cp_xml(bad)) == "XML_INVALID_SCHEMA"

    def test_empty_disks_element_is_schema_error(self, hypervisor: Hv) -> None:
        adapter, dom = hypervisor
        xml = "<domaincheckpoint><name>c1</name><disks/></domaincheckpoint>"
        assert code_of(adapter.create_checkpoint, dom, xml) == "XML_INVALID_SCHEMA"

    # -- lookup ----------------------------------------------------------------------------

    def test_unknown_checkpoint(self, hypervisor: Hv) -> None:
        adapter, dom = hypervisor
        assert code_of(adapter.checkpoint_xml, dom, "nope") == "NO_DOMAIN_CHECKPOINT"
        assert code_of(adapter.delete_checkpoint, dom, "nope") == "NO_DOMAIN_CHECKPOINT"

    # -- delete ----------------------------------------------------------------------------

    def test_delete_reparents_children(self, hypervisor: Hv) -> None:
        adapter, dom = hypervisor
        for n in ("c1", "c2", "c3"):
            self.create(hypervisor, n)
        adapter.delete_checkpoint(dom, "c2")
        assert adapter.list_checkpoints(dom) == ["c1", "c3"]
        assert self.parent(hypervisor, "c3") == "c1"
        assert code_of(adapter.checkpoint_xml, dom, "c2") == "NO_DOMAIN_CHECKPOINT"

    def test_delete_root_makes_children_roots(self, hypervisor: Hv) -> None:
        adapter, dom = hypervisor
        for n in ("c1", "c2"):
            self.create(hypervisor, n)
        adapter.delete_checkpoint(dom, "c1")
        assert self.parent(hypervisor, "c2") is None

    def test_delete_current_moves_current_to_parent(self, hypervisor: Hv) -> None:
        adapter, dom = hypervisor
        for n in ("c1", "c2"):
            self.create(hypervisor, n)
        adapter.delete_checkpoint(dom, "c2")
        assert self.create(hypervisor, "c3")["parent"] == "c1"
        adapter.delete_checkpoint(dom, "c3")
        adapter.delete_checkpoint(dom, "c1")
        assert self.create(hypervisor, "c4")["parent"] is None  # no current left

    def test_delete_children(self, hypervisor: Hv) -> None:
        adapter, dom = hypervisor
        for n in ("c1", "c2", "c3"):
            self.create(hypervisor, n)
        adapter.delete_checkpoint(dom, "c2", children=True)
        assert adapter.list_checkpoints(dom) == ["c1"]
        assert self.create(hypervisor, "c4")["parent"] == "c1"

    def test_delete_children_only(self, hypervisor: Hv) -> None:
        adapter, dom = hypervisor
        for n in ("c1", "c2", "c3"):
            self.create(hypervisor, n)
        adapter.delete_checkpoint(dom, "c1", children_only=True)
        assert adapter.list_checkpoints(dom) == ["c1"]
        # current was among the children: it becomes the target
        assert self.create(hypervisor, "c4")["parent"] == "c1"

    def test_delete_children_and_children_only_together(self, hypervisor: Hv) -> None:
        adapter, dom = hypervisor
        self.create(hypervisor, "c1")
        code = code_of(adapter.delete_checkpoint, dom, "c1", children=True, children_only=True)
        assert code == "INVALID_ARG"
        assert adapter.list_checkpoints(dom) == ["c1"]

    def test_delete_metadata_only(self, hypervisor: Hv) -> None:
        adapter, dom = hypervisor
        for n in ("c1", "c2", "c3"):
            self.create(hypervisor, n)
        adapter.delete_checkpoint(dom, "c2", metadata_only=True)
        assert adapter.list_checkpoints(dom) == ["c1", "c3"]
        assert self.parent(hypervisor, "c3") == "c1"
        adapter.delete_checkpoint(dom, "c1", children=True, metadata_only=True)
        assert adapter.list_checkpoints(dom) == []

    # -- redefine --------------------------------------------------------------------------

    def test_redefine_new_checkpoints(self, hypervisor: Hv) -> None:
        adapter, dom = hypervisor
        r1 = parsed(adapter.redefine_checkpoint(dom, redef_xml("r1", creation_time=1234)))
        assert r1["name"] == "r1" and r1["creation_time"] == "1234"
        assert r1["disks"] == {"vda": ("bitmap", "r1")}  # default bitmap name
        adapter.redefine_checkpoint(dom, redef_xml("r2", parent="r1"))
        assert adapter.list_checkpoints(dom) == ["r1", "r2"]
        assert self.parent(hypervisor, "r2") == "r1"
        # redefining a chain root-first makes the last one current
        assert self.create(hypervisor, "c1")["parent"] == "r2"

    def test_redefine_without_read_back_answers_none_and_defines_the_same(
        self, hypervisor: Hv
    ) -> None:
        adapter, dom = hypervisor
        out = adapter.redefine_checkpoint(dom, redef_xml("r1", creation_time=1234))
        assert adapter.redefine_checkpoint(dom, redef_xml("r2", parent="r1"),
                                           read_back=False) is None
        assert parsed(adapter.checkpoint_xml(dom, "r1")) == parsed(out)
        assert parsed(adapter.checkpoint_xml(dom, "r2"))["parent"] == "r1"
        assert adapter.list_checkpoints(dom) == ["r1", "r2"]

    def test_redefine_existing_updates_in_place_keeping_children(self, hypervisor: Hv) -> None:
        adapter, dom = hypervisor
        self.create(hypervisor, "c1")
        self.create(hypervisor, "c2")
        created = parsed(adapter.checkpoint_xml(dom, "c1"))["creation_time"]
        xml = redef_xml("c1", creation_time=int(created), description="updated")
        out = parsed(adapter.redefine_checkpoint(dom, xml))
        assert out["description"] == "updated"
        assert parsed(adapter.checkpoint_xml(dom, "c1"))["description"] == "updated"
        assert self.parent(hypervisor, "c2") == "c1"  # the child link survived
        assert adapter.list_checkpoints(dom) == ["c1", "c2"]

    def test_redefine_sibling_makes_fanout(self, hypervisor: Hv) -> None:
        adapter, dom = hypervisor
        self.create(hypervisor, "c1")
        self.create(hypervisor, "c2")
        adapter.redefine_checkpoint(dom, redef_xml("b", parent="c1"))
        assert self.parent(hypervisor, "b") == "c1"
        assert self.parent(hypervisor, "c2") == "c1"
        names = adapter.list_checkpoints(dom)
        assert names[0] == "c1" and sorted(names[1:]) == ["b", "c2"]
        # b's parent was not current, so current stays c2
        assert self.create(hypervisor, "c3")["parent"] == "c2"

    def test_redefine_parent_errors(self, hypervisor: Hv) -> None:
        adapter, dom = hypervisor
        assert code_of(adapter.redefine_checkpoint, dom, redef_xml("r1", parent="ghost")) == (
            "INVALID_ARG"
        )
        assert code_of(adapter.redefine_checkpoint, dom, redef_xml("r1", parent="r1")) == (
            "INVALID_ARG"
        )
        adapter.redefine_checkpoint(dom, redef_xml("r1"))
        adapter.redefine_checkpoint(dom, redef_xml("r2", parent="r1"))
        assert code_of(adapter.redefine_checkpoint, dom, redef_xml("r1", parent="r2")) == (
            "INVALID_ARG"
        )
        assert adapter.list_checkpoints(dom) == ["r1", "r2"]
        assert self.parent(hypervisor, "r1") is None

    def test_redefine_without_name(self, hypervisor: Hv) -> None:
        adapter, dom = hypervisor
        assert code_of(adapter.redefine_checkpoint, dom, redef_xml(None)) == "XML_ERROR"

    def test_redefine_without_creation_time(self, hypervisor: Hv) -> None:
        adapter, dom = hypervisor
        xml = redef_xml("r1", creation_time=None)
        assert code_of(adapter.redefine_checkpoint, dom, xml) == "INTERNAL_ERROR"
        assert adapter.list_checkpoints(dom) == []

    def test_redefine_bad_name_is_schema_error(self, hypervisor: Hv) -> None:
        adapter, dom = hypervisor
        xml = redef_xml("../escape")
        assert code_of(adapter.redefine_checkpoint, dom, xml) == "XML_INVALID_SCHEMA"

    # -- libvirt's own virsh scenarios ------------------------------------------------------

    def test_virsh_checkpoint_script(self, hypervisor: Hv) -> None:
        """tests/virshtestdata/checkpoint.in, minus the snapshot and listing-filter lines."""
        adapter, dom = hypervisor
        self.create(hypervisor, "c1")
        assert code_of(adapter.create_checkpoint, dom, cp_xml("c1")) == "OPERATION_FAILED"
        self.create(hypervisor, "c3")
        self.create(hypervisor, "c2")
        assert adapter.list_checkpoints(dom) == ["c1", "c3", "c2"]  # topological, not by name
        adapter.delete_checkpoint(dom, "c1")
        assert adapter.list_checkpoints(dom) == ["c3", "c2"]
        c3 = parsed(adapter.checkpoint_xml(dom, "c3"))
        c2 = parsed(adapter.checkpoint_xml(dom, "c2"))
        assert c3["parent"] is None and c3["disks"] == {"vda": ("bitmap", "c3")}
        assert c2["parent"] == "c3" and c2["disks"] == {"vda": ("bitmap", "c2")}
        adapter.delete_checkpoint(dom, "c3", children_only=True)
        assert adapter.list_checkpoints(dom) == ["c3"]
        adapter.delete_checkpoint(dom, "c3", children=True)
        assert adapter.list_checkpoints(dom) == []

    def test_virsh_redefine_order(self, hypervisor: Hv) -> None:
        """checkpoint-c2.xml before its parent c3 fails; c3 then c2 succeeds."""
        adapter, dom = hypervisor
        if not VIRSH_DATA.is_dir():
            pytest.skip(f"libvirt virsh test data not found at {VIRSH_DATA}")
        uuid = adapter.domain_info(dom).uuid

        def load(name: str) -> str:
            text = (VIRSH_DATA / name).read_text()
            # the files embed test:///default's domain; point them at this domain's UUID
            return re.sub(r"<uuid>[^<]*</uuid>", f"<uuid>{uuid}</uuid>", text)

        c2, c3 = load("checkpoint-c2.xml"), load("checkpoint-c3.xml")
        assert code_of(adapter.redefine_checkpoint, dom, c2) == "INVALID_ARG"
        assert adapter.list_checkpoints(dom) == []
        out3 = parsed(adapter.redefine_checkpoint(dom, c3))
        out2 = parsed(adapter.redefine_checkpoint(dom, c2))
        assert out3["name"] == "c3" and out3["creation_time"] == "5678"
        assert out2["parent"] == "c3" and out2["creation_time"] == "1234"
        assert adapter.list_checkpoints(dom) == ["c3", "c2"]
