"""adapters.libvirt against a real libvirt 9.0 + QEMU 7.2 guest (qemu:///system)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
from qemu_guest import QemuGuest, dirty_extents, guest_write

from adapters import qemu_img
from ledger.domain.errors import LedgerError
from ledger.domain.hypervisor import PartialDelete

pytestmark = pytest.mark.qemu

# The seed scenario: which disks each checkpoint covers (vdX checkpoint='no' otherwise).
SEED = [
    ("chk1.1", ("vda", "vdb")),
    ("chk2.1", ("vdb", "vdc")),
    ("chk1.2", ("vda", "vdb")),
    ("chk2.2", ("vdb", "vdc")),
]


def cp_xml(name: str, disks: tuple[str, ...]) -> str:
    body = "".join(
        f"<disk name='{t}'/>" if t in disks else f"<disk name='{t}' checkpoint='no'/>"
        for t in ("vda", "vdb", "vdc")
    )
    return f"<domaincheckpoint><name>{name}</name><disks>{body}</disks></domaincheckpoint>"


def parent_of(xml: str) -> str | None:
    return ET.fromstring(xml).findtext("parent/name")


def bitmap_names(observed: dict[str, list[dict[str, Any]]]) -> dict[str, set[str]]:
    return {disk: {b["name"] for b in bms} for disk, bms in observed.items()}


def create_seed(hv: Any, guest: QemuGuest, upto: int = len(SEED)) -> None:
    for name, disks in SEED[:upto]:
        hv.create_checkpoint(guest.name, cp_xml(name, disks))


def test_domain_info(qemu_adapter: Any, clean_guest: QemuGuest) -> None:
    info = qemu_adapter.domain_info(clean_guest.name)
    assert info.running and info.policy == "independent"
    assert [(d.name, d.format, d.source) for d in info.disks] == [
        (t, "qcow2", clean_guest.image(t)) for t in ("vda", "vdb", "vdc")
    ]
    assert clean_guest.name in qemu_adapter.list_domains()


def test_seed_scenario_independent_bitmaps(qemu_adapter: Any, clean_guest: QemuGuest) -> None:
    create_seed(qemu_adapter, clean_guest)
    dom = clean_guest.name
    assert qemu_adapter.list_checkpoints(dom) == [n for n, _ in SEED]
    parents = [parent_of(qemu_adapter.checkpoint_xml(dom, n)) for n, _ in SEED]
    assert parents == [None, "chk1.1", "chk2.1", "chk1.2"]  # linear, whatever the disks
    observed = qemu_adapter.observed_bitmaps(dom)
    assert bitmap_names(observed) == {
        "vda": {"chk1.1", "chk1.2"},
        "vdb": {"chk1.1", "chk2.1", "chk1.2", "chk2.2"},
        "vdc": {"chk2.1", "chk2.2"},
    }
    for bms in observed.values():
        for b in bms:
            assert b["recording"] and b["persistent"] and not b["inconsistent"], b
            assert not b["in_use"]
            assert b["count"] == 0 and b["granularity"] == 65536


def test_unsupported_on_qemu(qemu_adapter: Any, clean_guest: QemuGuest) -> None:
    dom = clean_guest.name
    with pytest.raises(LedgerError) as ei:  # qemu never implemented QUIESCE
        qemu_adapter.create_checkpoint(dom, cp_xml("q", ("vda",)), quiesce=True)
    assert ei.value.code == "INVALID_ARG"
    bad = "<domaincheckpoint><name>c</name><disks><disk name='vda' bitmap='other'/></disks>"
    with pytest.raises(LedgerError) as ei:
        qemu_adapter.create_checkpoint(dom, bad + "</domaincheckpoint>")
    assert ei.value.code == "CONFIG_UNSUPPORTED"


def test_write_shows_in_the_backup_map(qemu_adapter: Any, clean_guest: QemuGuest) -> None:
    create_seed(qemu_adapter, clean_guest, upto=1)
    guest_write(clean_guest.dom, 1, "1M", "64k", 0x11)
    assert dirty_extents(clean_guest.dom, "chk1.1", "vdb", clean_guest.workdir) == [
        [1048576, 65536]
    ]
    assert dirty_extents(clean_guest.dom, "chk1.1", "vda", clean_guest.workdir) == []
    counts = {
        d: [b["count"] for b in bms]
        for d, bms in qemu_adapter.observed_bitmaps(clean_guest.name).items()
    }
    assert counts == {"vda": [0], "vdb": [65536], "vdc": []}


def test_metadata_loss_and_redefine(qemu_adapter: Any, clean_guest: QemuGuest) -> None:
    dom = clean_guest.name
    create_seed(qemu_adapter, clean_guest)
    saved = qemu_adapter.checkpoint_xmls(dom)
    names = qemu_adapter.list_checkpoints(dom)
    before = bitmap_names(qemu_adapter.observed_bitmaps(dom))
    for name in reversed(names):  # leaf first
        qemu_adapter.delete_checkpoint(dom, name, metadata_only=True)
    assert qemu_adapter.list_checkpoints(dom) == []
    assert bitmap_names(qemu_adapter.observed_bitmaps(dom)) == before  # bitmaps untouched
    for xml in saved:  # parents first
        qemu_adapter.redefine_checkpoint(dom, xml, validate=True)
    assert qemu_adapter.list_checkpoints(dom) == names
    assert qemu_adapter.checkpoint_xmls(dom) == saved  # byte for byte
    # current is the last redefined: a new checkpoint hangs below chk2.2
    assert parent_of(qemu_adapter.create_checkpoint(dom, cp_xml("chk3", ("vda",)))) == "chk2.2"


def test_qemu_img_bitmap_remove_is_observed_offline(
    qemu_adapter: Any, clean_guest: QemuGuest
) -> None:
    dom = clean_guest.name
    create_seed(qemu_adapter, clean_guest, upto=2)
    clean_guest.stop_clean()
    assert not qemu_adapter.domain_info(dom).running
    offline = qemu_adapter.observed_bitmaps(dom)
    assert bitmap_names(offline) == {
        "vda": {"chk1.1"},
        "vdb": {"chk1.1", "chk2.1"},
        "vdc": {"chk2.1"},
    }
    assert all(
        b["recording"] and not b["inconsistent"] and not b["in_use"]
        for bms in offline.values()
        for b in bms
    )
    qemu_img.remove_bitmap(clean_guest.image("vdb"), "chk1.1")
    assert bitmap_names(qemu_adapter.observed_bitmaps(dom))["vdb"] == {"chk2.1"}
    assert [b["name"] for b in qemu_img.image_bitmaps(clean_guest.image("vdb"))] == ["chk2.1"]


def test_crash_leaves_bitmaps_inconsistent(qemu_adapter: Any, clean_guest: QemuGuest) -> None:
    dom = clean_guest.name
    create_seed(qemu_adapter, clean_guest, upto=1)
    # a bitmap created by a running QEMU reaches the image only when QEMU closes it:
    # a crash before any clean stop loses it altogether
    clean_guest.crash()
    assert bitmap_names(qemu_adapter.observed_bitmaps(dom))["vda"] == set()
    clean_guest.start()
    clean_guest.reset()
    create_seed(qemu_adapter, clean_guest, upto=1)
    clean_guest.stop_clean()
    assert [b["flags"] for b in qemu_img.image_bitmaps(clean_guest.image("vda"))] == [["auto"]]
    clean_guest.start()
    clean_guest.crash()  # now the images hold the bitmap, flagged in-use by the running QEMU
    offline = qemu_adapter.observed_bitmaps(dom)
    assert [(b["name"], b["in_use"], b["inconsistent"]) for b in offline["vda"]] == [
        ("chk1.1", True, True)
    ]
    clean_guest.start()
    live = qemu_adapter.observed_bitmaps(dom)["vda"]
    assert [(b["name"], b["recording"], b["inconsistent"]) for b in live] == [
        ("chk1.1", False, True)
    ]
    xml = qemu_adapter.checkpoint_xml(dom, "chk1.1")
    qemu_adapter.delete_checkpoint(dom, "chk1.1", metadata_only=True)
    with pytest.raises(LedgerError) as ei:
        qemu_adapter.redefine_checkpoint(dom, xml, validate=True)
    assert ei.value.code == "CHECKPOINT_INCONSISTENT"


def test_delete_with_missing_bitmap(qemu_adapter: Any, clean_guest: QemuGuest) -> None:
    """docs/libvirt-checkpoints.md §5.2 item 3: qemu reparents the children before it removes
    the bitmaps, so a delete whose bitmap is gone fails half-way (PartialDelete)."""
    dom = clean_guest.name
    create_seed(qemu_adapter, clean_guest, upto=3)  # chk1.1 <- chk2.1 <- chk1.2
    clean_guest.stop_clean()
    qemu_img.remove_bitmap(clean_guest.image("vdb"), "chk2.1")
    clean_guest.start()
    with pytest.raises(PartialDelete) as pe:
        qemu_adapter.delete_checkpoint(dom, "chk2.1")
    assert pe.value.reparented == {"chk1.2": "chk1.1"}
    assert isinstance(pe.value.error, LedgerError)
    assert pe.value.error.code == "INTERNAL_ERROR"
    assert "not found in backing chain" in str(pe.value.error)
    # chk2.1 survives, childless; nothing was removed from the other disk (vdc)
    assert sorted(qemu_adapter.list_checkpoints(dom)) == ["chk1.1", "chk1.2", "chk2.1"]
    assert parent_of(qemu_adapter.checkpoint_xml(dom, "chk1.2")) == "chk1.1"
    assert parent_of(qemu_adapter.checkpoint_xml(dom, "chk2.1")) == "chk1.1"
    assert "chk2.1" in bitmap_names(qemu_adapter.observed_bitmaps(dom))["vdc"]
    # the documented way out: drop the metadata only
    qemu_adapter.delete_checkpoint(dom, "chk2.1", metadata_only=True)
    assert qemu_adapter.list_checkpoints(dom) == ["chk1.1", "chk1.2"]
