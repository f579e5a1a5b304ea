"""The ledger keeps up with a real backup tool: virtnbdbackup (Debian's package) on a real QEMU
guest, through ``ckpt-ledger``'s CLI.

virtnbdbackup makes its checkpoints inside libvirt backup jobs, and a full backup into a new
folder deletes every ``virtnbdbackup.*`` checkpoint (bitmaps too) and starts again at
``virtnbdbackup.0``. The ledger records that as it happened (gone, replaced, observed), and
after the host loses its checkpoint metadata, ``replay`` restores the live chain only, so the
tool's next incremental works, and ``virtnbdrestore`` gives back exactly the bytes written.
The second test loses virtnbdbackup's own ``checkpoints/`` folder as well: the ledger alone
brings the chain back.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qemu_guest import SYSTEM_URI, TARGETS, QemuGuest, guest_write
from typer.testing import CliRunner

from cli.app import app

pytestmark = pytest.mark.qemu
MIB = 1 << 20
SIZE = 16 * MIB
VNB = "virtnbdbackup"


@pytest.fixture
def guest(qemu_system: str) -> Iterator[QemuGuest]:
    """A fresh guest of its own (blank images: the restored bytes are known exactly)."""
    for tool in (VNB, "virtnbdrestore"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (ci/setup-libvirt.sh installs it)")
    g = QemuGuest.create(prefix="ckpt-ledger-vnb")
    try:
        yield g
    finally:
        g.destroy()


class Cli:
    """ckpt-ledger in-process on qemu:///system and a SQLite ledger."""

    def __init__(self, store: Path) -> None:
        self.base = ["--store", f"sqlite:///{store}", "--hypervisor", SYSTEM_URI,
                     "--actor", "e2e"]
        self.runner = CliRunner()

    def __call__(self, *args: str) -> str:
        result = self.runner.invoke(app, [*self.base, *args])
        assert result.exit_code == 0, (args, result.output)
        print(f"$ ckpt-ledger {' '.join(args)}\n{result.output}")
        return result.output

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json"))

    def names(self, domain: str) -> list[str]:
        return [c["name"] for c in self.json("list", domain, "--topological")]


class Disks:
    """What the guest wrote, to compare a restore against."""

    def __init__(self) -> None:
        self.content = {t: bytearray(SIZE) for t in TARGETS}

    def write(self, guest: QemuGuest, target: str, offset: int, length: int, byte: int) -> None:
        guest_write(guest.dom, TARGETS.index(target), offset, length, byte)
        self.content[target][offset:offset + length] = bytes([byte]) * length


def backup(guest: QemuGuest, level: str, folder: Path, code: int = 0) -> str:
    """``virtnbdbackup -l LEVEL -o FOLDER``; its log, after checking the exit status."""
    run = subprocess.run([VNB, "-U", SYSTEM_URI, "-d", guest.name, "-l", level, "-o",
                          str(folder), "-n"], capture_output=True, text=True, timeout=300)
    print(f"$ {VNB} -l {level} -o {folder.name}: exit {run.returncode}")
    assert run.returncode == code, run.stderr[-3000:]
    return run.stderr


def lose_host_metadata(guest: QemuGuest) -> None:
    """The host is rebuilt: QEMU stops cleanly (bitmaps stay in the images), the domain is
    undefined with its checkpoint metadata and defined again from its saved XML."""
    import libvirt

    xml = guest.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
    guest.stop_clean()
    guest.dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
    guest.dom = guest.conn.defineXML(xml)
    guest.start()
    assert guest.checkpoint_names() == []


def restored_bytes(folder: Path, out: Path) -> dict[str, bytes]:
    """``virtnbdrestore`` of ``folder`` into ``out``; each disk's bytes."""
    run = subprocess.run(["virtnbdrestore", "-i", str(folder), "-o", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    disks = {}
    for target in TARGETS:
        (image,) = [p for p in out.iterdir() if p.name.startswith(f"{target}.")
                    and not p.name.endswith((".json", ".xml"))]
        raw = out / f"{target}.raw"
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True)
        disks[target] = raw.read_bytes()
    return disks


def test_new_chains_host_loss_and_replay_with_virtnbdbackup(guest: QemuGuest) -> None:
    """full, inc, inc; import; a new chain (full into another folder), inc; import; host
    loss; replay: the host holds the new chain only, the next inc works, and a restore of
    the folder gives back exactly what the guest wrote."""
    work = guest.workdir
    cli, disks, dom = Cli(work / "ledger.db"), Disks(), guest.name
    first, second = work / "first", work / "second"
    disks.write(guest, "vda", 1 * MIB, 64 * 1024, 0x11)
    backup(guest, "full", first)
    disks.write(guest, "vdb", 2 * MIB, 128 * 1024, 0x22)
    backup(guest, "inc", first)
    disks.write(guest, "vdc", 3 * MIB, 64 * 1024, 0x33)
    backup(guest, "inc", first)
    chain = [f"{VNB}.0", f"{VNB}.1", f"{VNB}.2"]
    assert guest.checkpoint_names() == chain
    cli("import", dom)
    assert cli.names(dom) == chain
    old = {c["name"]: c["creation_time"] for c in cli.json("list", dom)}

    disks.write(guest, "vda", 4 * MIB, 64 * 1024, 0x44)
    backup(guest, "full", second)  # deletes .0 .1 .2 with their bitmaps, makes a new .0
    assert guest.checkpoint_names() == [f"{VNB}.0"]
    text = cli("import", dom)
    assert f"{VNB}.1: deleted outside the ledger" in text and f"{VNB}.2: deleted outside" in text
    assert f"{VNB}.0: the name now belongs to another checkpoint" in text
    assert cli.names(dom) == [f"{VNB}.0"]
    assert cli.json("show", dom, f"{VNB}.0")["creation_time"] >= old[f"{VNB}.0"]
    log = cli.json("log", "--domain", dom)
    gone = {e["data"]["name"]: e["data"]["why"] for e in log if e["type"] == "CheckpointGone"}
    assert gone == {f"{VNB}.1": "deleted-outside", f"{VNB}.2": "deleted-outside",
                    f"{VNB}.0": "replaced"}
    disks.write(guest, "vdb", 5 * MIB, 64 * 1024, 0x55)
    backup(guest, "inc", second)
    cli("import", dom)
    assert cli.names(dom) == [f"{VNB}.0", f"{VNB}.1"]

    lose_host_metadata(guest)
    cli("replay", dom)
    assert guest.checkpoint_names() == [f"{VNB}.0", f"{VNB}.1"]  # not the old .1 and .2
    assert cli.names(dom) == guest.checkpoint_names()
    disks.write(guest, "vdc", 6 * MIB, 64 * 1024, 0x66)
    log_text = backup(guest, "inc", second)
    assert "incremental" in log_text.lower() or "inc" in log_text
    assert list(second.glob(f"*.inc.{VNB}.2.data")), sorted(p.name for p in second.iterdir())
    assert guest.checkpoint_names() == [f"{VNB}.0", f"{VNB}.1", f"{VNB}.2"]
    cli("import", dom)
    assert cli.names(dom) == guest.checkpoint_names()

    restored = restored_bytes(second, work / "restore")
    for target in TARGETS:
        assert restored[target] == bytes(disks.content[target]), target


def test_the_ledger_alone_restores_the_chain_when_the_tools_folder_is_lost(
    guest: QemuGuest,
) -> None:
    """virtnbdbackup redefines lost checkpoints from its own checkpoints/ folder; without
    that folder and the host's metadata its next inc fails, and after `replay` from the
    ledger it succeeds as an incremental."""
    work = guest.workdir
    cli, disks, dom = Cli(work / "ledger.db"), Disks(), guest.name
    folder = work / "backups"
    disks.write(guest, "vda", 1 * MIB, 64 * 1024, 0x11)
    backup(guest, "full", folder)
    disks.write(guest, "vdb", 2 * MIB, 64 * 1024, 0x22)
    backup(guest, "inc", folder)
    cli("import", dom)
    shutil.rmtree(folder / "checkpoints")
    lose_host_metadata(guest)
    disks.write(guest, "vdc", 3 * MIB, 64 * 1024, 0x33)
    failed = backup(guest, "inc", folder, code=1)
    assert "not found" in failed, failed[-2000:]
    assert guest.checkpoint_names() == []
    cli("replay", dom)
    assert guest.checkpoint_names() == [f"{VNB}.0", f"{VNB}.1"]
    backup(guest, "inc", folder)
    assert list(folder.glob(f"*.inc.{VNB}.2.data"))
    cli("import", dom)
    assert cli.names(dom) == [f"{VNB}.0", f"{VNB}.1", f"{VNB}.2"]
    restored = restored_bytes(folder, work / "restore")
    for target in TARGETS:
        assert restored[target] == bytes(disks.content[target]), target
