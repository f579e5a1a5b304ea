"""A simulated hypervisor: domains, disks, persistent bitmaps and guest writes, in a file.

``mock:///path/state.json`` (or ``mock:////abs/state.json``) names the state file. Every
operation takes an exclusive lock on ``state.json.lock``, reads the file, changes it and
writes it back atomically (temporary file, fsync, rename), so several processes can share one
"host" without losing an update or corrupting the file.

Like libvirt's QEMU driver it keeps its own checkpoint metadata (folded with the same pure
rules as the ledger, with the QEMU checks on), enforces a running domain for create and for a
non-metadata delete, qcow2 for bitmap disks, and applies the domain's bitmap policy to real
bitmaps: sets of dirty 64 KiB clusters that guest writes fill.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid as uuidlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ledger import rules
from ledger.domain_xml import parse_domain_xml
from ledger.errors import LedgerError, no_checkpoint, no_domain
from ledger.events import (
    BitmapDisabled,
    BitmapEnabled,
    BitmapMerged,
    BitmapRemoved,
    CheckpointCreated,
    Event,
)
from ledger.files import replacing
from ledger.model import DomainDisk, DomainInfo, Policy
from ledger.names import check_disk_name
from ledger.plugins import path_of
from ledger.ports import PartialDelete
from ledger.projections import DomainState
from ledger.xml import format_checkpoint_xml, parse_checkpoint_xml

CLUSTER = 64 * 1024
DISK_SIZE = 1 << 30
STATE_VERSION = 2
MAX_STATE = 256 * 1024 * 1024
SAME_DOMAIN = "@domain"  # in the state file: "the domain's own definition"
# (state path, domain uuid) -> (generation, parsed metadata); see MockHypervisor._meta
_META_CACHE: dict[tuple[str, str], tuple[Any, DomainState]] = {}


def _state_error(path: str, why: str) -> LedgerError:
    return LedgerError("STATE_ERROR", f"mock state file {path} is unusable: {why}")


def parse_disk_spec(spec: str) -> DomainDisk:
    """``NAME[:qcow2|raw][:ro|empty]`` -> a 1 GiB disk (qcow2 by default)."""
    parts = spec.split(":")
    name, opts = parts[0], parts[1:]
    check_disk_name(name)
    fmt, readonly, empty = "qcow2", False, False
    for opt in opts:
        if opt in ("qcow2", "raw"):
            fmt = opt
        elif opt == "ro":
            readonly = True
        elif opt == "empty":
            empty = True
        else:
            raise LedgerError(
                "INVALID_ARG",
                f"bad disk spec {spec!r}: expected NAME[:qcow2|raw][:ro|empty]",
            )
    return DomainDisk(name=name, format=fmt, readonly=readonly, empty=empty, size=DISK_SIZE)


def domain_xml(name: str, uuid: str, disks: tuple[DomainDisk, ...], folder: str) -> str:
    """A libvirt-style inactive ``<domain>`` definition of a mock domain."""
    lines = [
        "<domain type='mock'>",
        f"  <name>{name}</name>",
        f"  <uuid>{uuid}</uuid>",
        "  <devices>",
    ]
    for d in disks:
        device = "cdrom" if d.empty else "disk"
        lines.append(f"    <disk type='file' device='{device}'>")
        lines.append(f"      <driver name='qemu' type='{d.format}'/>")
        if not d.empty:
            lines.append(f"      <source file='{folder}/{name}-{d.name}.{d.format}'/>")
        lines.append(f"      <target dev='{d.name}' bus='virtio'/>")
        if d.readonly:
            lines.append("      <readonly/>")
        lines.append("    </disk>")
    lines += ["  </devices>", "</domain>"]
    return "\n".join(lines)


class MockHypervisor:
    """The mock hypervisor; implements :class:`ledger.ports.Hypervisor` and more."""

    def __init__(self, path: str, uri: str | None = None) -> None:
        self.path = os.path.abspath(path)
        self.uri = uri or f"mock:///{path}"
        folder = os.path.dirname(self.path)
        if os.path.isdir(self.path):
            raise _state_error(self.path, "it is a directory")
        if not os.path.isdir(folder):
            raise _state_error(self.path, f"directory {folder} does not exist")
        with self._locked(write=False):
            pass  # reading once proves the file is usable

    # ------------------------------------------------------------ state file
    def _read(self) -> dict[str, Any]:
        try:
            with open(self.path, "rb") as f:
                raw = f.read(MAX_STATE + 1)
        except FileNotFoundError:
            return {"version": STATE_VERSION, "domains": {}}
        except OSError as err:
            raise _state_error(self.path, err.strerror or str(err)) from None
        if len(raw) > MAX_STATE:
            raise _state_error(self.path, "larger than 256 MiB")
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            raise _state_error(self.path, f"not JSON ({str(err).splitlines()[0]})") from None
        if not isinstance(data, dict) or not isinstance(data.get("domains"), dict):
            raise _state_error(self.path, "not a mock hypervisor state")
        if data.get("version") != STATE_VERSION:
            raise _state_error(self.path, f"unknown state version {data.get('version')!r}")
        return data

    def _write(self, data: dict[str, Any]) -> None:
        with replacing(self.path, "w") as f:
            f.write(json.dumps(data, separators=(",", ":")))  # the C encoder: dump() is not

    @contextmanager
    def _locked(self, write: bool = True) -> Iterator[dict[str, Any]]:
        try:
            fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise _state_error(self.path, err.strerror or str(err)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = self._read()
            try:
                yield data
            except BaseException:
                raise
            else:
                if write:
                    self._write(data)
        finally:
            os.close(fd)

    def _dom(self, data: dict[str, Any], name: str) -> dict[str, Any]:
        dom = data["domains"].get(name)
        if dom is None:
            raise no_domain(name)
        return dom

    def _info(self, dom: dict[str, Any]) -> DomainInfo:
        disks = tuple(DomainDisk.model_validate(d) for d in dom["disks"])
        folder = os.path.dirname(self.path)
        return DomainInfo(
            name=dom["name"],
            uuid=dom["uuid"],
            running=dom["running"],
            policy=dom["policy"],
            disks=disks,
            domain_xml=domain_xml(dom["name"], dom["uuid"], disks, folder),
        )

    def _meta(self, dom: dict[str, Any]) -> DomainState:
        """The domain's checkpoint metadata (its own tree, current and bitmap beliefs).

        Parsed once per generation: ``dom["gen"]`` changes with every metadata write, so a
        process reuses its parsed tree until another one changes it.
        """
        key = (self.path, str(dom.get("uuid")))
        cached = _META_CACHE.get(key)
        if cached is not None and cached[0] == dom.get("gen"):
            return cached[1]
        try:
            meta = DomainState.from_dict(json.loads(dom["meta"]))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise _state_error(
                self.path, f"the metadata of domain {dom.get('name')!r} is damaged ({e!r})"
            ) from None
        own = self._info(dom).domain_xml
        for cp in meta.checkpoints.values():
            if cp.domain_xml == SAME_DOMAIN:
                cp.domain_xml = own
        _META_CACHE[key] = (dom.get("gen"), meta)
        return meta

    def _store_meta(self, dom: dict[str, Any], meta: DomainState) -> None:
        """Save the metadata compactly: a checkpoint taken against the domain's own
        definition stores a marker, not another copy of the domain XML."""
        data = meta.to_dict()
        own = self._info(dom).domain_xml
        for c in data["checkpoints"]:
            c["xml"] = ""  # derived: format_checkpoint_xml(definition)
            if c["domain_xml"] == own:
                c["domain_xml"] = SAME_DOMAIN
        dom["meta"] = json.dumps(data, separators=(",", ":"))
        dom["gen"] = uuidlib.uuid4().hex
        # the write happens when the lock is released; until then nobody else reads
        _META_CACHE[(self.path, str(dom.get("uuid")))] = (dom["gen"], meta)

    # --------------------------------------------------------- mock commands
    def define(
        self,
        name: str,
        disks: list[str],
        policy: Policy = "independent",
        running: bool = True,
        uuid: str | None = None,
    ) -> DomainInfo:
        """Define a domain with disks given as ``NAME[:qcow2|raw][:ro|empty]``."""
        if not name or len(name) > 255 or "/" in name or not name.isprintable():
            raise LedgerError("INVALID_ARG", f"invalid domain name {name!r}")
        if policy not in ("chained", "independent"):
            raise LedgerError("INVALID_ARG", f"unknown bitmap policy {policy!r}")
        specs = tuple(parse_disk_spec(s) for s in disks)
        if len({d.name for d in specs}) != len(specs):
            raise LedgerError("INVALID_ARG", "a disk is listed twice")
        with self._locked() as data:
            if name in data["domains"]:
                raise LedgerError("OPERATION_FAILED", f"domain '{name}' already exists")
            uid = uuid or str(uuidlib.uuid4())
            meta = DomainState(stream_id=uid, name=name, uuid=uid, policy=policy, disks=specs)
            data["domains"][name] = {
                "name": name,
                "uuid": uid,
                "running": running,
                "policy": policy,
                "disks": [d.model_dump() for d in specs],
                "meta": json.dumps(meta.to_dict()),
                "gen": uuidlib.uuid4().hex,
                "bitmaps": {d.name: {} for d in specs},
            }
            return self._info(data["domains"][name])

    def set_running(self, name: str, running: bool) -> None:
        """Start or stop (cleanly) a domain."""
        with self._locked() as data:
            dom = self._dom(data, name)
            if dom["running"] == running:
                state = "running" if running else "not running"
                raise LedgerError("OPERATION_INVALID", f"domain is already {state}")
            dom["running"] = running

    def write(self, name: str, disk: str, offset: int, length: int) -> int:
        """A guest write: dirty every enabled bitmap on ``disk``; return clusters touched."""
        with self._locked() as data:
            dom = self._dom(data, name)
            dd = self._disk(dom, disk)
            if not dom["running"]:
                raise LedgerError("OPERATION_INVALID", "domain is not running")
            if dd["readonly"] or dd["empty"]:
                raise LedgerError("OPERATION_INVALID", f"disk {disk} is empty or readonly")
            if offset < 0 or length <= 0 or offset + length > dd["size"]:
                raise LedgerError(
                    "INVALID_ARG",
                    f"write of {length} bytes at {offset} is outside disk {disk} "
                    f"({dd['size']} bytes)",
                )
            clusters = set(range(offset // CLUSTER, (offset + length - 1) // CLUSTER + 1))
            for bm in dom["bitmaps"][disk].values():
                if bm["enabled"]:
                    bm["dirty"] = sorted(set(bm["dirty"]) | clusters)
            return len(clusters)

    def _disk(self, dom: dict[str, Any], disk: str) -> dict[str, Any]:
        for d in dom["disks"]:
            if d["name"] == disk:
                return d
        raise LedgerError("CONFIG_UNSUPPORTED", f"no disk named '{disk}'")

    def extents(self, name: str, disk: str, bitmaps: list[str]) -> list[tuple[int, int]]:
        """Dirty byte ranges of the merged ``bitmaps`` on ``disk``, adjacent ranges joined."""
        with self._locked(write=False) as data:
            dom = self._dom(data, name)
            self._disk(dom, disk)
            clusters: set[int] = set()
            for b in bitmaps:
                bm = dom["bitmaps"][disk].get(b)
                if bm is None:
                    raise LedgerError(
                        "CHECKPOINT_INCONSISTENT",
                        f"missing or broken bitmap '{b}' for disk '{disk}'",
                    )
                clusters.update(bm["dirty"])
        out: list[tuple[int, int]] = []
        for c in sorted(clusters):
            if out and out[-1][0] + out[-1][1] == c * CLUSTER:
                out[-1] = (out[-1][0], out[-1][1] + CLUSTER)
            else:
                out.append((c * CLUSTER, CLUSTER))
        return out

    def remove_bitmap(self, name: str, disk: str, bitmap: str) -> None:
        """Remove a bitmap behind the metadata's back (like ``qemu-img bitmap --remove``)."""
        with self._locked() as data:
            dom = self._dom(data, name)
            self._disk(dom, disk)
            if dom["bitmaps"][disk].pop(bitmap, None) is None:
                raise LedgerError("OPERATION_FAILED", f"no bitmap '{bitmap}' on disk {disk}")

    def forget_checkpoints(self, name: str) -> None:
        """Lose all checkpoint metadata, keep the bitmaps (a new host, the same images)."""
        with self._locked() as data:
            dom = self._dom(data, name)
            meta = self._meta(dom)
            fresh = DomainState(
                stream_id=meta.stream_id, name=meta.name, uuid=meta.uuid,
                policy=meta.policy, disks=meta.disks,
            )
            self._store_meta(dom, fresh)

    def observed_bitmaps(self, name: str) -> dict[str, list[dict[str, Any]]]:
        """Per disk, every bitmap really present: name, recording, dirty byte count."""
        with self._locked(write=False) as data:
            dom = self._dom(data, name)
            return {
                disk: [
                    {"name": b, "recording": bm["enabled"], "persistent": True,
                     "inconsistent": False, "count": len(bm["dirty"]) * CLUSTER}
                    for b, bm in bms.items()
                ]
                for disk, bms in dom["bitmaps"].items()
            }

    # ------------------------------------------------------ Hypervisor port
    def domain_info(self, domain: str) -> DomainInfo:
        """Name, UUID, state, policy and disks of ``domain``."""
        with self._locked(write=False) as data:
            return self._info(self._dom(data, domain))

    def list_domains(self) -> list[str]:
        """Every defined domain, sorted."""
        with self._locked(write=False) as data:
            return sorted(data["domains"])

    def _apply(self, dom: dict[str, Any], meta: DomainState, events: list[Event]) -> None:
        bitmaps = dom["bitmaps"]
        for ev in events:
            meta.apply(ev)
            if isinstance(ev, CheckpointCreated):
                for d in ev.disks:
                    if d.checkpoint == "bitmap":
                        bitmaps.setdefault(d.name, {})[d.bitmap or ev.name] = {
                            "enabled": True, "dirty": []}
            elif isinstance(ev, BitmapDisabled | BitmapEnabled):
                bm = bitmaps.get(ev.disk, {}).get(ev.bitmap)
                if bm is not None:
                    bm["enabled"] = isinstance(ev, BitmapEnabled)
            elif isinstance(ev, BitmapMerged):
                src = bitmaps.get(ev.disk, {}).get(ev.bitmap)
                dst = bitmaps.get(ev.disk, {}).get(ev.into)
                if src is not None and dst is not None:
                    dst["dirty"] = sorted(set(dst["dirty"]) | set(src["dirty"]))
            elif isinstance(ev, BitmapRemoved):
                bitmaps.get(ev.disk, {}).pop(ev.bitmap, None)
        self._store_meta(dom, meta)

    def create_checkpoint(self, domain: str, xml: str, quiesce: bool = False) -> str:
        """Create a checkpoint as libvirt's QEMU driver would; return its XML."""
        if quiesce:
            raise LedgerError("INVALID_ARG", "unsupported flags (0x2) in function mockCreateXML")
        request = parse_checkpoint_xml(xml)
        with self._locked() as data:
            dom = self._dom(data, domain)
            meta = self._meta(dom)
            info = self._info(dom)
            definition = rules.decide_create(
                meta, info, request, int(time.time()), qemu_rules=True
            )
            for disk in definition.bitmap_disks():
                if disk.bitmap in dom["bitmaps"].get(disk.name, {}):
                    raise LedgerError(  # QEMU's block-dirty-bitmap-add refuses, as here
                        "INTERNAL_ERROR",
                        "unable to execute QEMU command 'transaction': "
                        f"Bitmap already exists: {disk.bitmap}",
                    )
            out = format_checkpoint_xml(definition)
            self._apply(dom, meta, rules.created_events(meta, definition, out))
            return out

    def redefine_checkpoint(self, domain: str, xml: str, validate: bool = False) -> str:
        """REDEFINE (metadata only); with ``validate``, check the bitmaps exist and record."""
        request = parse_checkpoint_xml(xml, redefine=True)
        embedded = None
        if request.domain_xml is not None:
            parsed = parse_domain_xml(request.domain_xml)
            embedded = (parsed.uuid, parsed.disks)
        with self._locked() as data:
            dom = self._dom(data, domain)
            meta = self._meta(dom)
            definition = rules.decide_redefine(meta, request, embedded)
            if validate:
                self._validate(dom, definition.name or "", definition.bitmap_disks())
            out = format_checkpoint_xml(definition)
            self._apply(dom, meta, rules.redefined_events(meta, definition, out, validate))
            return out

    def _validate(self, dom: dict[str, Any], name: str, disks: tuple[Any, ...]) -> None:
        if not dom["running"]:
            raise LedgerError("OPERATION_INVALID", "domain is not running")
        for d in disks:
            bm = dom["bitmaps"].get(d.name, {}).get(name)
            recording_ok = bm is not None and (bm["enabled"] or dom["policy"] == "chained")
            if not recording_ok:
                raise LedgerError(
                    "CHECKPOINT_INCONSISTENT",
                    f"missing or broken bitmap '{name}' for disk '{d.name}'",
                )

    def delete_checkpoint(
        self,
        domain: str,
        name: str,
        *,
        children: bool = False,
        children_only: bool = False,
        metadata_only: bool = False,
    ) -> None:
        """Delete with libvirt's flags and the domain's bitmap policy.

        Like libvirt's QEMU driver (libvirt-checkpoints.md §5.2 item 3), a plain delete
        reparents the children *before* it removes the bitmaps; when a bitmap is missing
        the call fails with the children already moved, reported as :class:`PartialDelete`.
        """
        rules.check_delete_flags(children, children_only)
        partial: PartialDelete | None = None
        with self._locked() as data:
            dom = self._dom(data, domain)
            meta = self._meta(dom)
            if meta.get(name) is None:
                raise no_checkpoint(name)
            if not metadata_only and not dom["running"]:
                raise LedgerError(
                    "OPERATION_UNSUPPORTED", "cannot delete checkpoint for inactive domain"
                )
            events = rules.decide_delete(
                meta, name, children=children, children_only=children_only,
                metadata_only=metadata_only,
            )
            if not metadata_only and dom["policy"] == "independent":
                for ev in events:
                    if isinstance(ev, BitmapRemoved) and ev.bitmap not in dom["bitmaps"].get(
                        ev.disk, {}
                    ):
                        err = LedgerError(
                            "INTERNAL_ERROR",
                            f"bitmap '{ev.bitmap}' not found in backing chain of '{ev.disk}'",
                        )
                        partial = self._reparent_first(dom, meta, name, err, children,
                                                       children_only)
                        break
                else:
                    self._apply(dom, meta, events)
            else:
                self._apply(dom, meta, events)
        if partial is not None:
            raise partial

    def _reparent_first(
        self, dom: dict[str, Any], meta: DomainState, name: str, err: LedgerError,
        children: bool, children_only: bool,
    ) -> PartialDelete:
        """What qemuCheckpointDelete has done when the bitmap removal fails."""
        target = meta.checkpoints[name]
        if children or children_only or not target.children:
            raise err
        moved: dict[str, str | None] = {}
        for child in list(target.children):
            d = meta.checkpoints[child].definition().model_copy(update={"parent": target.parent})
            self._apply(dom, meta, rules.redefined_events(meta, d, format_checkpoint_xml(d)))
            moved[child] = target.parent
        return PartialDelete(err, moved)

    def checkpoint_xml(self, domain: str, name: str, no_domain: bool = False) -> str:
        """The checkpoint's XML as stored in the mock's metadata."""
        with self._locked(write=False) as data:
            meta = self._meta(self._dom(data, domain))
            cp = meta.get(name)
            if cp is None:
                raise no_checkpoint(name)
            return format_checkpoint_xml(cp.definition(), no_domain=no_domain)

    def list_checkpoints(self, domain: str) -> list[str]:
        """Every checkpoint name, parents first."""
        with self._locked(write=False) as data:
            return self._meta(self._dom(data, domain)).topological()

    def checkpoint_xmls(self, domain: str) -> list[str]:
        """Every checkpoint's XML, parents first."""
        with self._locked(write=False) as data:
            meta = self._meta(self._dom(data, domain))
            return [
                format_checkpoint_xml(meta.checkpoints[n].definition())
                for n in meta.topological()
            ]

    def current(self, domain: str) -> str | None:
        """The mock's internal current checkpoint (libvirt exposes none; for tests)."""
        with self._locked(write=False) as data:
            return self._meta(self._dom(data, domain)).current

    def close(self) -> None:
        """Nothing to release: every call opens and closes the state file."""


def open_url(uri: str) -> MockHypervisor:
    """``mock:///relative/state.json`` or ``mock:////abs/state.json``."""
    return MockHypervisor(path_of(uri), uri)
