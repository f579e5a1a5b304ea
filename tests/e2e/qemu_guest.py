"""A real QEMU guest under a real libvirtd, for end-to-end tests (docs/real-qemu.md).

The guest is a TCG (``type='qemu'``) domain with no OS and three 16 MiB qcow2 disks
``vda``/``vdb``/``vdc`` (virtio, aliases ``virtio-disk0/1/2``) in a private directory under
``/var/tmp``. Helpers here make the "guest" write (HMP ``qemu-io``), read back which blocks
a checkpoint's bitmap says changed (a pull-mode incremental backup read with
``nbdinfo --map``), stop QEMU cleanly or crash it, and reset the guest between tests.

Everything talks to libvirt directly (libvirt-python), never through the code under test,
so these helpers can check the adapter and the CLI.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SYSTEM_URI = "qemu:///system"
DISK_SIZE = "16M"
TARGETS = ("vda", "vdb", "vdc")
EMULATOR = "/usr/bin/qemu-system-x86_64"
HMP = 1  # libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP


def unavailable_reason() -> str | None:
    """Why real-QEMU tests cannot run here, or None when they can.

    Checks libvirt-python, the qemu-img / nbdinfo / QEMU binaries, and that
    ``qemu:///system`` answers (ci/setup-libvirt.sh starts the daemons).
    """
    try:
        import libvirt
    except ImportError:
        return "libvirt-python is not installed (pip install 'ckpt-ledger[libvirt]')"
    for tool in ("qemu-img", "nbdinfo", EMULATOR):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (run ci/setup-libvirt.sh)"
    libvirt.registerErrorHandler(lambda _c, _e: None, None)
    try:
        conn = libvirt.open(SYSTEM_URI)
    except libvirt.libvirtError as e:
        msg = " ".join(str(e).split())
        return f"{SYSTEM_URI} is unreachable ({msg}); run ci/setup-libvirt.sh as root"
    conn.close()
    return None


def domain_xml(name: str, images: list[Path]) -> str:
    """The guest definition: TCG, 64 MiB, no OS, one qcow2 virtio disk per image."""
    disks = "".join(
        f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file='{img}'/><target dev='{t}' bus='virtio'/></disk>"
        for t, img in zip(TARGETS, images, strict=True)
    )
    return (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        f"<os><type arch='x86_64' machine='pc'>hvm</type></os>"
        f"<devices><emulator>{EMULATOR}</emulator>{disks}"
        f"<memballoon model='none'/></devices></domain>"
    )


@dataclass
class QemuGuest:
    """A defined domain with three qcow2 images; ``dom`` is its libvirt ``virDomain``."""

    name: str
    workdir: Path
    images: dict[str, Path]
    conn: Any
    dom: Any = field(repr=False)

    @classmethod
    def create(cls, prefix: str = "ckpt-ledger-e2e") -> QemuGuest:
        """Make the images in a new /var/tmp directory, define the domain and start it."""
        import libvirt

        name = f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir="/var/tmp"))
        images = {t: workdir / f"{t}.qcow2" for t in TARGETS}
        for img in images.values():
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", str(img), DISK_SIZE], check=True
            )
        conn = libvirt.open(SYSTEM_URI)
        try:
            dom = conn.defineXML(domain_xml(name, list(images.values())))
        except Exception:
            conn.close()
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        guest = cls(name=name, workdir=workdir, images=images, conn=conn, dom=dom)
        try:
            guest.start()
        except Exception:
            guest.destroy()
            raise
        return guest

    @property
    def running(self) -> bool:
        """True while QEMU runs."""
        return bool(self.dom.isActive())

    def start(self) -> None:
        """Start the guest if it is shut off."""
        if not self.running:
            self.dom.create()

    def stop_clean(self, timeout: float = 30.0) -> None:
        """Make QEMU quit by itself (QMP ``quit``), so it writes the bitmaps into the images
        and they are flagged ``auto`` only, then wait until libvirt sees it shut off."""
        import libvirt_qemu

        if not self.running:
            return
        with contextlib.suppress(Exception):  # the monitor may close before it answers
            libvirt_qemu.qemuMonitorCommand(self.dom, '{"execute":"quit"}', 0)
        deadline = time.monotonic() + timeout
        while self.running:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not stop within {timeout} s")
            time.sleep(0.1)

    def crash(self) -> None:
        """SIGKILL QEMU: every bitmap is left flagged ``in-use`` (inconsistent)."""
        pid = int(Path(f"/run/libvirt/qemu/{self.name}.pid").read_text().strip())
        os.kill(pid, 9)
        deadline = time.monotonic() + 30
        while self.running and time.monotonic() < deadline:
            time.sleep(0.1)

    def image(self, target: str) -> str:
        """The qcow2 path of disk ``target`` (``vda``...)."""
        return str(self.images[target])

    def checkpoint_names(self) -> list[str]:
        """libvirt's checkpoint names, parents first."""
        import libvirt

        flags = libvirt.VIR_DOMAIN_CHECKPOINT_LIST_TOPOLOGICAL
        return [c.getName() for c in self.dom.listAllCheckpoints(flags)]

    def reset(self) -> None:
        """Back to a running guest with no checkpoints and no bitmaps.

        Drops the checkpoint metadata leaf-first (METADATA_ONLY, so a broken bitmap cannot
        block it), starts the guest if needed, then removes every bitmap over QMP.
        """
        import libvirt

        flags = libvirt.VIR_DOMAIN_CHECKPOINT_LIST_TOPOLOGICAL
        for cp in reversed(self.dom.listAllCheckpoints(flags)):
            cp.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
        self.start()
        for dev in query_block(self.dom):
            inserted = dev.get("inserted") or {}
            for bm in inserted.get("dirty-bitmaps") or []:
                qmp(
                    self.dom,
                    "block-dirty-bitmap-remove",
                    {"node": inserted["node-name"], "name": bm["name"]},
                )

    def destroy(self) -> None:
        """Stop QEMU, undefine the domain with its checkpoint metadata, remove the files."""
        import libvirt

        try:
            try:
                self.dom.isActive()
            except libvirt.libvirtError:  # libvirtd restarted under the connection
                with contextlib.suppress(libvirt.libvirtError):
                    self.conn.close()
                self.conn = libvirt.open(SYSTEM_URI)
                self.dom = self.conn.lookupByName(self.name)
            if self.running:
                self.dom.destroy()
            self.dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
        finally:
            with contextlib.suppress(Exception):
                self.conn.close()
            shutil.rmtree(self.workdir, ignore_errors=True)


def qmp(dom: Any, command: str, arguments: dict[str, Any] | None = None) -> Any:
    """Run a QMP command on the guest's monitor; return its ``return`` value."""
    import libvirt_qemu

    msg: dict[str, Any] = {"execute": command}
    if arguments is not None:
        msg["arguments"] = arguments
    reply = json.loads(libvirt_qemu.qemuMonitorCommand(dom, json.dumps(msg), 0))
    if "error" in reply:
        raise RuntimeError(f"QMP {command}: {reply['error']}")
    return reply.get("return")


def query_block(dom: Any) -> list[dict[str, Any]]:
    """QMP ``query-block``: one entry per block device, with ``inserted.dirty-bitmaps``."""
    result: list[dict[str, Any]] = qmp(dom, "query-block")
    return result


def guest_write(
    dom: Any, disk_index: int, offset: str | int, length: str | int, pattern: int
) -> str:
    """Make the guest write ``length`` bytes of byte ``pattern`` at ``offset`` of disk
    number ``disk_index`` (0 = vda, 1 = vdb, 2 = vdc), through the device's block backend,
    so every recording bitmap on that disk is dirtied (docs/real-qemu.md section 5).

    ``offset``/``length`` are ints or qemu-io sizes such as ``"1M"`` / ``"64k"``. Returns
    qemu-io's output (QEMU 7.2 returns nothing on success); raises RuntimeError when the
    monitor answers with anything but a "wrote ..." line.
    """
    import libvirt_qemu

    device = f"/machine/peripheral/virtio-disk{disk_index}/virtio-backend"
    cmd = f'qemu-io -d {device} "write -P {pattern:#x} {offset} {length}"'
    out: str = libvirt_qemu.qemuMonitorCommand(dom, cmd, HMP)
    if out.strip() and "wrote" not in out:
        raise RuntimeError(f"qemu-io write on {device} failed: {out.strip()}")
    return out


def _disk_targets(dom: Any) -> list[str]:
    root = ET.fromstring(dom.XMLDesc(0))
    return [str(t.get("dev")) for t in root.findall("devices/disk/target")]


def parse_nbdinfo_map(text: str) -> list[list[int]]:
    """The dirty ``[offset, length]`` extents (type bit 0 set) from ``nbdinfo --map``
    output, adjacent extents merged."""
    extents: list[list[int]] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        off, length, typ = int(parts[0]), int(parts[1]), int(parts[2])
        if typ & 1:
            if extents and extents[-1][0] + extents[-1][1] == off:
                extents[-1][1] += length
            else:
                extents.append([off, length])
    return extents


def dirty_extents(dom: Any, checkpoint: str, disk: str, workdir: str | Path) -> list[list[int]]:
    """The ``[offset, length]`` ranges of ``disk`` written since ``checkpoint``, as QEMU
    reports them to a backup (docs/real-qemu.md section 6).

    Starts a pull-mode incremental backup of ``disk`` alone from ``checkpoint`` with a
    scratch file and an NBD unix socket in ``workdir``, reads the export's dirty bitmap
    with ``nbdinfo --map=qemu:dirty-bitmap:...`` and aborts the job. This proves what a
    backup from that checkpoint would copy, independently of any bitmap bookkeeping.
    """
    workdir = Path(workdir)
    tag = uuid.uuid4().hex[:6]
    sock = workdir / f"nbd-{tag}.sock"
    scratch = workdir / f"scratch-{disk}-{tag}.qcow2"
    disks = "".join(
        (
            f"<disk name='{t}' backup='yes' type='file'><scratch file='{scratch}'/></disk>"
            if t == disk
            else f"<disk name='{t}' backup='no'/>"
        )
        for t in _disk_targets(dom)
    )
    backup = (
        f"<domainbackup mode='pull'><incremental>{checkpoint}</incremental>"
        f"<server transport='unix' socket='{sock}'/><disks>{disks}</disks></domainbackup>"
    )
    dom.backupBegin(backup, None, 0)
    try:
        job = ET.fromstring(dom.backupGetXMLDesc(0))
        entry = next(d for d in job.findall("disks/disk") if d.get("name") == disk)
        export = entry.get("exportname") or disk
        bitmap = entry.get("exportbitmap") or f"backup-{disk}"
        proc = subprocess.run(
            ["nbdinfo", f"--map=qemu:dirty-bitmap:{bitmap}", f"nbd+unix:///{export}?socket={sock}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    finally:
        with contextlib.suppress(Exception):
            dom.abortJob()
        _wait_no_job(dom)
        for path in (sock, scratch):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return parse_nbdinfo_map(proc.stdout)


def _wait_no_job(dom: Any, timeout: float = 30.0) -> None:
    """Wait until the domain has no job (so the next backup can start)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if dom.jobInfo()[0] == 0:  # VIR_DOMAIN_JOB_NONE
                return
        except Exception:
            return
        time.sleep(0.1)
