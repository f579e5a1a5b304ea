"""Host loss and recovery through ``ckpt-ledger`` on a real libvirtd + QEMU guest.

The issue's end-to-end story: the seed's scenario is created through the CLI, the ledger's
bitmaps equal what QEMU reports, the host's checkpoint metadata is lost, ``replay`` puts it
back, and an incremental backup started from the ledger's plan copies exactly the blocks
written since the reference checkpoint (``nbdinfo --map``). A bitmap removed behind libvirt's
back with ``qemu-img bitmap --remove`` is then caught by ``verify``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from qemu_guest import QemuGuest, dirty_extents, guest_write, query_block
from typer.testing import CliRunner

from cli.app import app

pytestmark = pytest.mark.qemu
BLOCK = 64 * 1024
MIB = 1 << 20
SCENARIO = [
    ("chk1.1", ["vda", "vdb"]),
    ("chk2.1", ["vdb", "vdc"]),
    ("chk1.2", ["vda", "vdb"]),
    ("chk2.2", ["vdb", "vdc"]),
]


class Cli:
    """ckpt-ledger in-process against qemu:///system and a SQLite ledger."""

    def __init__(self, store: Path) -> None:
        self.base = ["--store", f"sqlite:///{store}", "--hypervisor", "qemu:///system"]
        self.runner = CliRunner()

    def __call__(self, *args: str, code: int = 0) -> str:
        result = self.runner.invoke(app, [*self.base, *args])
        assert result.exit_code == code, (args, result.output)
        return result.output

    def json(self, *args: str, code: int = 0) -> Any:
        return json.loads(self(*args, "--json", code=code))


def qemu_bitmaps(guest: QemuGuest) -> dict[str, list[tuple[str, bool]]]:
    """Per disk target, (bitmap, recording) as QEMU's query-block reports them."""
    targets = {f"/machine/peripheral/virtio-disk{i}/virtio-backend": t
               for i, t in enumerate(["vda", "vdb", "vdc"])}
    out: dict[str, list[tuple[str, bool]]] = {}
    for dev in query_block(guest.dom):
        target = targets.get(dev.get("qdev", ""))
        if target is None:
            continue
        bms = (dev.get("inserted") or {}).get("dirty-bitmaps") or []
        out[target] = sorted((b["name"], bool(b["recording"])) for b in bms)
    return out


def lose_host_metadata(guest: QemuGuest) -> None:
    """A new host with the same storage: stop cleanly, undefine with the checkpoint
    metadata, define the same domain XML again (same UUID), start."""
    import libvirt

    xml = guest.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    guest.stop_clean()
    guest.dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
    guest.dom = guest.conn.defineXML(xml)
    guest.start()
    assert guest.checkpoint_names() == []


def test_seed_scenario_host_loss_replay_and_backup_from_the_plan(
    clean_guest: QemuGuest, tmp_path: Path
) -> None:
    guest, dom = clean_guest, clean_guest.name
    cli = Cli(tmp_path / "ledger.db")
    written: list[tuple[str | None, int]] = []
    last = None
    for step, (name, covered) in enumerate([(None, []), *SCENARIO]):
        if name is not None:
            specs = [d if d in covered else f"{d},checkpoint=no" for d in ("vda", "vdb", "vdc")]
            cli("create", dom, name, *[a for s in specs for a in ("--disk", s)])
            last = name
        offset = (step + 1) * MIB
        for i in range(3):
            guest_write(guest.dom, i, offset, BLOCK, 0x11 + step)
        written.append((last, offset))

    # the ledger's bitmaps are QEMU's (libvirt 9: independent policy, all recording)
    ledger_bitmaps = cli.json("bitmaps", dom)
    assert ledger_bitmaps["policy"] == "independent"
    mine = {d: sorted((b["bitmap"], b["active"]) for b in bms)
            for d, bms in ledger_bitmaps["disks"].items()}
    assert mine == qemu_bitmaps(guest)
    before = cli.json("list", dom, "--topological")
    assert [c["name"] for c in before] == ["chk1.1", "chk2.1", "chk1.2", "chk2.2"]

    # the host loses its checkpoint metadata; the bitmaps stay in the images
    lose_host_metadata(guest)
    assert cli("verify", dom, code=3).count("missing-on-host") == 4
    plan = cli.json("replay", dom, "--dry-run")
    assert [s["action"] for s in plan[0]["steps"]] == ["redefine"] * 4
    assert guest.checkpoint_names() == []  # --dry-run touched nothing
    cli("replay", dom, "--validate")
    assert guest.checkpoint_names() == [c["name"] for c in before]
    import libvirt

    parents = {}
    for cp in guest.dom.listAllCheckpoints(0):
        try:
            parents[cp.getName()] = cp.getParent().getName()
        except libvirt.libvirtError:
            parents[cp.getName()] = None
    assert parents == {c["name"]: c["parent"] for c in before}
    again = cli.json("replay", dom)
    assert {s["action"] for s in again[0]["steps"]} == {"skip"}  # twice changes nothing
    cli("verify", dom)

    # libvirt's current is the ledger's again: a new checkpoint's parent is chk2.2
    cli("create", dom, "after", "--disk", "vdb")
    assert cli.json("show", dom, "after")["parent"] == "chk2.2"
    cli("delete", dom, "after")

    # a backup from the ledger's plan copies exactly the blocks written since chk1.2
    order = [n for n, _ in SCENARIO]
    for since in ("chk1.2", "chk1.1"):
        p = cli.json("plan", dom, "--since", since)
        after = order[order.index(since):]
        expected = [[off, BLOCK] for cp, off in written if cp in after]
        for disk, disk_plan in p["disks"].items():
            if disk_plan["mode"] == "full":
                continue
            assert disk_plan["bitmaps"] == [since]
            assert dirty_extents(guest.dom, since, disk, guest.workdir) == expected, (since, disk)


def test_bitmap_removed_offline_is_caught_by_verify(clean_guest: QemuGuest, tmp_path: Path) -> None:
    guest, dom = clean_guest, clean_guest.name
    cli = Cli(tmp_path / "ledger.db")
    for name, covered in SCENARIO:
        specs = [d if d in covered else f"{d},checkpoint=no" for d in ("vda", "vdb", "vdc")]
        cli("create", dom, name, *[a for s in specs for a in ("--disk", s)])
    guest.stop_clean()
    cli("verify", dom)  # shut off, cleanly closed: qemu-img sees every bitmap
    subprocess.run(["qemu-img", "bitmap", "--remove", guest.image("vdb"), "chk2.1"], check=True)
    out = cli.json("verify", dom, "--record", code=3)
    kinds = {(f["kind"], f["disk"], f["bitmap"]) for f in out[0]["findings"]}
    assert kinds == {("bitmap-missing", "vdb", "chk2.1")}
    assert out[0]["unusable_plans"] == {"chk2.1": {"vdb": "bitmap 'chk2.1' is missing on vdb"}}
    plan = cli.json("plan", dom, "--since", "chk2.1")
    assert plan["disks"]["vdb"]["mode"] == "full"
    assert plan["disks"]["vdc"]["mode"] == "incremental"
    guest.start()
