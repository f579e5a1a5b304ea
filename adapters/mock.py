"""A simulated hypervisor: domains, disks, persistent bitmaps and guest writes, in a file.

``mock:///abs/path/state.json`` names the state file as a libvirt URI names a path (an
absolute path; ``mock:state.json``, without slashes, is relative to the working directory;
``mock:////abs/state.json`` is read as ``mock:///abs/state.json``). It is a journal
of the mock's operations (adapters/mock_journal.py), each one line, appended and fsynced
under an exclusive lock on ``state.json.lock``; reads fold what others appended since and
write nothing. So one operation costs O(1) in the number of checkpoints, and several
processes can share one "host" without losing an update or corrupting the file.

Like libvirt's QEMU driver it keeps its own checkpoint metadata (folded with the same pure
rules as the ledger, with the QEMU checks on), enforces a running domain for create and for a
non-metadata delete, qcow2 for bitmap disks, and applies the domain's bitmap policy to real
bitmaps: sets of dirty 64 KiB clusters that guest writes fill.

The journal's operations (``op``): ``define`` (a domain), ``run`` (started or stopped),
``write`` (clusters ``first``..``last`` of a disk dirtied), ``events`` (checkpoint metadata
events of ledger/domain/events.py, applied to the domain's DomainState and its bitmaps, as the
ledger applies them; a checkpoint's ``xml`` is left out, being derived, and its
``domain_xml``, when it is the domain's own definition, is the marker ``@domain``),
``remove-bitmap``, ``recording`` (a bitmap enabled or disabled behind the metadata's back),
``forget`` (the metadata lost) and ``job`` (a backup job that ended, with the events of the
checkpoint it created).
"""

from __future__ import annotations

import json
import os
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ledger.domain import rules
from ledger.domain.checkpoint_xml import format_checkpoint_xml, parse_checkpoint_xml
from ledger.domain.domain_xml import parse_domain_xml
from ledger.domain.errors import LedgerError, no_checkpoint, no_domain
from ledger.domain.events import (
    BitmapDisabled,
    BitmapEnabled,
    BitmapMerged,
    BitmapRemoved,
    CheckpointCreated,
    Event,
    event_data,
    parse_event,
)
from ledger.domain.hypervisor import PartialDelete
from ledger.domain.model import BackupDisk, DomainDisk, DomainInfo, HostJob, JobResult, Policy
from ledger.domain.names import check_checkpoint_name, check_disk_name, is_uuid
from ledger.domain.policies import plan
from ledger.domain.state import DomainState

from .mock_journal import Journal, Transaction, state_error

CLUSTER = 64 * 1024
DISK_SIZE = 1 << 30
SAME_DOMAIN = "@domain"  # in the journal: "the domain's own definition"


def _number(n: int) -> str:
    """``n`` for a message (a huge one by its size: Python will not print 10**5000)."""
    return str(n) if abs(n) < 1 << 64 else f"a {n.bit_length()}-bit number"


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


@dataclass(slots=True)
class _Bitmap:
    """A real bitmap on a disk: recording or not, and its dirty clusters."""

    enabled: bool
    dirty: set[int] = field(default_factory=set)


@dataclass(slots=True)
class _Domain:
    """One domain of the host, as folded from the journal."""

    name: str
    uuid: str
    running: bool
    policy: Policy
    disks: tuple[DomainDisk, ...]
    xml: str  # its definition (what a checkpoint embeds)
    meta: DomainState  # its checkpoint metadata: tree, current, bitmap beliefs
    bitmaps: dict[str, dict[str, _Bitmap]]  # disk -> bitmap name -> bitmap
    written: dict[str, set[int]] = field(default_factory=dict)  # disk -> clusters with data
    jobs: list[HostJob] = field(default_factory=list)  # finished backup jobs, oldest first


@dataclass(slots=True)
class _Host:
    """Every domain of one state file."""

    folder: str
    domains: dict[str, _Domain] = field(default_factory=dict)


def _fresh_meta(dom: _Domain) -> DomainState:
    return DomainState(stream_id=dom.uuid, name=dom.name, uuid=dom.uuid, policy=dom.policy,
                       disks=dom.disks)


def _fold(host: _Host, rec: dict[str, Any]) -> None:
    """Apply one journal operation to ``host`` (any exception: not a valid operation)."""
    op = rec["op"]
    if op == "define":
        name, uuid, policy = rec["name"], rec["uuid"], rec["policy"]
        if not isinstance(name, str) or not isinstance(uuid, str) or name in host.domains:
            raise ValueError(f"domain {name!r} cannot be defined")
        if policy not in ("chained", "independent") or not isinstance(rec["running"], bool):
            raise ValueError("bad policy or state")
        disks = tuple(DomainDisk.model_validate(d) for d in rec["disks"])
        dom = _Domain(name, uuid, rec["running"], policy, disks,
                      domain_xml(name, uuid, disks, host.folder),
                      DomainState(stream_id=""), {d.name: {} for d in disks})
        dom.meta = _fresh_meta(dom)
        host.domains[name] = dom
        return
    dom = host.domains[rec["dom"]]
    if op == "run":
        if not isinstance(rec["running"], bool):
            raise ValueError("bad state")
        dom.running = rec["running"]
    elif op == "write":
        first, last = rec["first"], rec["last"]
        if type(first) is not int or type(last) is not int or not 0 <= first <= last:
            raise ValueError("bad cluster range")
        for bm in dom.bitmaps[rec["disk"]].values():
            if bm.enabled:
                bm.dirty.update(range(first, last + 1))
        dom.written.setdefault(rec["disk"], set()).update(range(first, last + 1))
    elif op == "job":  # a backup job; with the events of the checkpoint it created
        for data in rec.get("events", ()):
            if data.get("domain_xml") == SAME_DOMAIN:
                data = {**data, "domain_xml": dom.xml}
            _apply(dom, parse_event(data))
        dom.jobs.append(HostJob.model_validate(rec["job"]))
    elif op == "events":
        for data in rec["events"]:
            if data.get("domain_xml") == SAME_DOMAIN:
                data = {**data, "domain_xml": dom.xml}
            _apply(dom, parse_event(data))
    elif op == "remove-bitmap":
        del dom.bitmaps[rec["disk"]][rec["bitmap"]]
    elif op == "recording":
        if not isinstance(rec["enabled"], bool):
            raise ValueError("bad recording state")
        dom.bitmaps[rec["disk"]][rec["bitmap"]].enabled = rec["enabled"]
    elif op == "forget":
        dom.meta = _fresh_meta(dom)
    else:
        raise ValueError(f"unknown operation {op!r}")


def _apply(dom: _Domain, ev: Event) -> None:
    """One checkpoint event: the metadata and, as QEMU would, the real bitmaps."""
    dom.meta.apply(ev)
    bitmaps = dom.bitmaps
    if isinstance(ev, CheckpointCreated):
        for d in ev.disks:
            if d.checkpoint == "bitmap":
                bitmaps.setdefault(d.name, {})[d.bitmap_of(ev.name)] = _Bitmap(True)
    elif isinstance(ev, BitmapDisabled | BitmapEnabled):
        bm = bitmaps.get(ev.disk, {}).get(ev.bitmap)
        if bm is not None:
            bm.enabled = isinstance(ev, BitmapEnabled)
    elif isinstance(ev, BitmapMerged):
        src = bitmaps.get(ev.disk, {}).get(ev.bitmap)
        dst = bitmaps.get(ev.disk, {}).get(ev.into)
        if src is not None and dst is not None:
            dst.dirty |= src.dirty
    elif isinstance(ev, BitmapRemoved):
        bitmaps.get(ev.disk, {}).pop(ev.bitmap, None)


def _events_op(dom: _Domain, events: list[Event]) -> dict[str, Any]:
    """The journal operation of ``events``, compact (see the module docstring)."""
    out = []
    for ev in events:
        data = event_data(ev)
        if "xml" in data:
            data["xml"] = ""  # derived: format_checkpoint_xml(definition)
        if data.get("domain_xml") == dom.xml:
            data["domain_xml"] = SAME_DOMAIN
        out.append(data)
    return {"op": "events", "dom": dom.name, "events": out}


class MockHypervisor:
    """The mock hypervisor; implements :class:`ledger.domain.hypervisor.Hypervisor` and more."""

    def __init__(self, path: str, uri: str | None = None) -> None:
        self.path = os.path.abspath(path)
        self.uri = uri or f"mock://{self.path}"
        folder = os.path.dirname(self.path)
        if os.path.isdir(self.path):
            raise state_error(self.path, "it is a directory")
        if not os.path.isdir(folder):
            raise state_error(self.path, f"directory {folder} does not exist")
        self._journal = Journal(self.path, lambda: _Host(folder), _fold)
        with self._journal.reading():
            pass  # reading once proves the file is usable

    # ------------------------------------------------------------ state file
    def _dom(self, host: _Host, name: str) -> _Domain:
        """The domain by UUID (when ``name`` reads as one), else by name, as virsh finds
        one."""
        dom = None
        if is_uuid(name):
            key = name.replace("-", "").lower()
            dom = next((d for d in host.domains.values() if d.uuid.replace("-", "").lower() == key),
                       None)
        if dom is None:
            dom = host.domains.get(name)
        if dom is None:
            raise no_domain(name)
        return dom

    @staticmethod
    def _info(dom: _Domain) -> DomainInfo:
        return DomainInfo(name=dom.name, uuid=dom.uuid, running=dom.running,
                          policy=dom.policy, disks=dom.disks, domain_xml=dom.xml)

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
        with self._journal.writing() as tx:
            if name in tx.state.domains:
                raise LedgerError("OPERATION_FAILED", f"domain '{name}' already exists")
            tx.append({"op": "define", "name": name, "uuid": uuid or str(uuidlib.uuid4()),
                       "running": running, "policy": policy,
                       "disks": [d.model_dump() for d in specs]})
        with self._journal.reading() as host:
            return self._info(self._dom(host, name))

    def set_running(self, name: str, running: bool) -> None:
        """Start or stop (cleanly) a domain."""
        with self._journal.writing() as tx:
            dom = self._dom(tx.state, name)
            if dom.running == running:
                state = "running" if running else "not running"
                raise LedgerError("OPERATION_INVALID", f"domain is already {state}")
            tx.append({"op": "run", "dom": name, "running": running})

    def write(self, name: str, disk: str, offset: int, length: int) -> int:
        """A guest write: dirty every enabled bitmap on ``disk``; return clusters touched."""
        with self._journal.writing() as tx:
            dom = self._dom(tx.state, name)
            dd = self._disk(dom, disk)
            if not dom.running:
                raise LedgerError("OPERATION_INVALID", "domain is not running")
            if dd.readonly or dd.empty:
                raise LedgerError("OPERATION_INVALID", f"disk {disk} is empty or readonly")
            if offset < 0 or length <= 0 or offset + length > dd.size:
                raise LedgerError(
                    "INVALID_ARG",
                    f"write of {_number(length)} bytes at {_number(offset)} is outside disk {disk} "
                    f"({dd.size} bytes)",
                )
            first, last = offset // CLUSTER, (offset + length - 1) // CLUSTER
            tx.append({"op": "write", "dom": name, "disk": disk, "first": first, "last": last})
            return last - first + 1

    def _disk(self, dom: _Domain, disk: str) -> DomainDisk:
        for d in dom.disks:
            if d.name == disk:
                return d
        raise LedgerError("CONFIG_UNSUPPORTED", f"no disk named '{disk}'")

    def _bitmap(self, dom: _Domain, disk: str, bitmap: str) -> _Bitmap:
        self._disk(dom, disk)
        bm = dom.bitmaps[disk].get(bitmap)
        if bm is None:
            raise LedgerError("OPERATION_FAILED", f"no bitmap '{bitmap}' on disk {disk}")
        return bm

    def extents(self, name: str, disk: str, bitmaps: list[str]) -> list[tuple[int, int]]:
        """Dirty byte ranges of the merged ``bitmaps`` on ``disk``, adjacent ranges joined."""
        with self._journal.reading() as host:
            dom = self._dom(host, name)
            self._disk(dom, disk)
            clusters: set[int] = set()
            for b in bitmaps:
                bm = dom.bitmaps[disk].get(b)
                if bm is None:
                    raise LedgerError(
                        "CHECKPOINT_INCONSISTENT",
                        f"missing or broken bitmap '{b}' for disk '{disk}'",
                    )
                clusters.update(bm.dirty)
        out: list[tuple[int, int]] = []
        for c in sorted(clusters):
            if out and out[-1][0] + out[-1][1] == c * CLUSTER:
                out[-1] = (out[-1][0], out[-1][1] + CLUSTER)
            else:
                out.append((c * CLUSTER, CLUSTER))
        return out

    def backup(
        self,
        name: str,
        folder: str,
        *,
        incremental: str | None = None,
        checkpoint: str | None = None,
        disks: list[str] | None = None,
    ) -> HostJob:
        """A push-mode backup job, as ``virDomainBackupBegin`` runs one, to its end: each
        disk's data (full, or since checkpoint ``incremental``: the clusters its bitmaps
        hold) goes to ``folder/<disk>.<job>.json``; checkpoint ``checkpoint`` is created
        atomically with the job's start. The job is kept (:meth:`backup_jobs`); one whose
        folder is missing fails, creates nothing, and is kept as failed."""
        with self._journal.writing() as tx:
            dom = self._dom(tx.state, name)
            if not dom.running:
                raise LedgerError("OPERATION_INVALID", "domain is not running")
            targets = disks or [d.name for d in dom.disks if not d.readonly and not d.empty]
            for t in targets:
                self._disk(dom, t)
            if incremental is not None and incremental not in dom.meta.checkpoints:
                raise no_checkpoint(incremental)
            plans = plan(dom.meta, incremental) if incremental is not None else {}
            job_id = str(len(dom.jobs) + 1)
            now = time.time()
            out: list[BackupDisk] = []
            data: dict[str, list[int]] = {}
            for t in targets:
                p = plans.get(t)
                since = None
                clusters = dom.written.get(t, set())
                if p is not None and p.mode != "full":
                    since = incremental
                    clusters = set().union(*(dom.bitmaps[t][b].dirty for b in p.bitmaps
                                             if b in dom.bitmaps.get(t, {})))
                data[t] = sorted(clusters)
                out.append(BackupDisk(name=t, incremental=since,
                                      target=os.path.join(folder, f"{t}.{job_id}.json")))
            job = HostJob(job=job_id, disks=tuple(out), checkpoint=checkpoint, started=now,
                          ended=now, outcome="completed",
                          bytes=sum(len(c) for c in data.values()) * CLUSTER)
            if not os.path.isdir(folder):
                job = job.model_copy(update={
                    "checkpoint": None, "outcome": "failed", "bytes": 0,
                    "error": f"Cannot open backup target directory '{folder}': "
                    "No such file or directory"})
                tx.append({"op": "job", "dom": name, "job": job.model_dump(mode="json")})
                return job
            rec: dict[str, Any] = {"op": "job", "dom": name, "job": job.model_dump(mode="json")}
            if checkpoint is not None:
                check_checkpoint_name(checkpoint)
                request = parse_checkpoint_xml(
                    f"<domaincheckpoint><name>{checkpoint}</name></domaincheckpoint>")
                definition = rules.decide_create(dom.meta, self._info(dom), request, int(now),
                                                 qemu_rules=True)
                made = format_checkpoint_xml(definition)
                created = rules.created_events(dom.meta, definition, made)
                rec["events"] = _events_op(dom, created)["events"]
            for d in out:
                with open(os.path.join(folder, f"{d.name}.{job_id}.json"), "w") as f:
                    json.dump({"disk": d.name, "job": job_id, "since": d.incremental,
                               "clusters": data[d.name]}, f)
            tx.append(rec)
            return job

    def backup_jobs(self, domain: str) -> list[HostJob]:
        """Every backup job the mock ran for ``domain``, oldest first."""
        with self._journal.reading() as host:
            return list(self._dom(host, domain).jobs)

    def active_backup(self, domain: str) -> HostJob | None:
        """None: the mock runs a backup job to its end at once."""
        with self._journal.reading() as host:
            self._dom(host, domain)
        return None

    def last_backup_result(self, domain: str) -> JobResult | None:
        """None: every job the mock ran, with its result, is in :meth:`backup_jobs`."""
        with self._journal.reading() as host:
            self._dom(host, domain)
        return None

    def subscribe(self, wake: Callable[[str, JobResult | None], None]) -> Callable[[], None]:
        """No events: a recorder polls the state file."""
        return lambda: None

    def remove_bitmap(self, name: str, disk: str, bitmap: str) -> None:
        """Remove a bitmap behind the metadata's back (like ``qemu-img bitmap --remove``)."""
        with self._journal.writing() as tx:
            self._bitmap(self._dom(tx.state, name), disk, bitmap)
            tx.append({"op": "remove-bitmap", "dom": name, "disk": disk, "bitmap": bitmap})

    def set_bitmap_recording(self, name: str, disk: str, bitmap: str, recording: bool) -> None:
        """Enable or disable a bitmap behind the metadata's back (like ``qemu-img bitmap
        --enable`` / ``--disable``)."""
        with self._journal.writing() as tx:
            self._bitmap(self._dom(tx.state, name), disk, bitmap)
            tx.append({"op": "recording", "dom": name, "disk": disk, "bitmap": bitmap,
                       "enabled": recording})

    def forget_checkpoints(self, name: str) -> None:
        """Lose all checkpoint metadata, keep the bitmaps (a new host, the same images)."""
        with self._journal.writing() as tx:
            self._dom(tx.state, name)
            tx.append({"op": "forget", "dom": name})

    def observed_bitmaps(self, name: str) -> dict[str, list[dict[str, Any]]]:
        """Per disk, every bitmap really present: name, recording, dirty byte count."""
        with self._journal.reading() as host:
            dom = self._dom(host, name)
            return {
                disk: [
                    {"name": b, "recording": bm.enabled, "persistent": True,
                     "inconsistent": False, "count": len(bm.dirty) * CLUSTER}
                    for b, bm in bms.items()
                ]
                for disk, bms in dom.bitmaps.items()
            }

    # ------------------------------------------------------ Hypervisor port
    def domain_info(self, domain: str) -> DomainInfo:
        """Name, UUID, state, policy and disks of ``domain``."""
        with self._journal.reading() as host:
            return self._info(self._dom(host, domain))

    def describe(self) -> str:
        """``mock host (state file PATH)``."""
        return f"mock host (state file {self.path})"

    def list_domains(self) -> list[str]:
        """Every defined domain, sorted."""
        with self._journal.reading() as host:
            return sorted(host.domains)

    def create_checkpoint(self, domain: str, xml: str, quiesce: bool = False) -> str:
        """Create a checkpoint as libvirt's QEMU driver would; return its XML."""
        if quiesce:
            raise LedgerError("INVALID_ARG", "unsupported flags (0x2) in function mockCreateXML")
        request = parse_checkpoint_xml(xml)
        with self._journal.writing() as tx:
            dom = self._dom(tx.state, domain)
            definition = rules.decide_create(
                dom.meta, self._info(dom), request, int(time.time()), qemu_rules=True
            )
            for disk in definition.bitmap_disks():
                if disk.bitmap in dom.bitmaps.get(disk.name, {}):
                    raise LedgerError(  # QEMU's block-dirty-bitmap-add refuses, as here
                        "INTERNAL_ERROR",
                        "unable to execute QEMU command 'transaction': "
                        f"Bitmap already exists: {disk.bitmap}",
                    )
            out = format_checkpoint_xml(definition)
            tx.append(_events_op(dom, rules.created_events(dom.meta, definition, out)))
            return out

    def redefine_checkpoint(
        self, domain: str, xml: str, validate: bool = False, read_back: bool = True
    ) -> str | None:
        """REDEFINE (metadata only); with ``validate``, check the bitmaps exist and record;
        the resulting XML, or None when not ``read_back``."""
        request = parse_checkpoint_xml(xml, redefine=True)
        embedded = None
        if request.domain_xml is not None:
            parsed = parse_domain_xml(request.domain_xml)
            embedded = (parsed.uuid, parsed.disks)
        with self._journal.writing() as tx:
            dom = self._dom(tx.state, domain)
            definition = rules.decide_redefine(dom.meta, request, embedded)
            if validate:
                self._validate(dom, definition.name or "", definition.bitmap_disks())
            out = format_checkpoint_xml(definition)
            tx.append(_events_op(dom, rules.redefined_events(dom.meta, definition, out,
                                                             validate)))
            return out if read_back else None

    def _validate(self, dom: _Domain, name: str, disks: tuple[Any, ...]) -> None:
        if not dom.running:
            raise LedgerError("OPERATION_INVALID", "domain is not running")
        for d in disks:
            bm = dom.bitmaps.get(d.name, {}).get(name)
            recording_ok = bm is not None and (bm.enabled or dom.policy == "chained")
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

        Like libvirt's QEMU driver (docs/libvirt-checkpoints.md §5.2 item 3), a plain delete
        reparents the children *before* it removes the bitmaps; when a bitmap is missing
        the call fails with the children already moved, reported as :class:`PartialDelete`.
        """
        rules.check_delete_flags(children, children_only)
        partial: PartialDelete | None = None
        with self._journal.writing() as tx:
            dom = self._dom(tx.state, domain)
            meta = dom.meta
            if meta.get(name) is None:
                raise no_checkpoint(name)
            if not metadata_only and not dom.running:
                raise LedgerError(
                    "OPERATION_UNSUPPORTED", "cannot delete checkpoint for inactive domain"
                )
            events = rules.decide_delete(
                meta, name, children=children, children_only=children_only,
                metadata_only=metadata_only,
            )
            if not metadata_only and dom.policy == "independent":
                for ev in events:
                    if isinstance(ev, BitmapRemoved) and ev.bitmap not in dom.bitmaps.get(
                        ev.disk, {}
                    ):
                        err = LedgerError(
                            "INTERNAL_ERROR",
                            f"bitmap '{ev.bitmap}' not found in backing chain of '{ev.disk}'",
                        )
                        partial = self._reparent_first(tx, dom, name, err, children,
                                                       children_only)
                        break
                else:
                    tx.append(_events_op(dom, events))
            else:
                tx.append(_events_op(dom, events))
        if partial is not None:
            raise partial

    def _reparent_first(
        self, tx: Transaction[_Host], dom: _Domain, name: str, err: LedgerError,
        children: bool, children_only: bool,
    ) -> PartialDelete:
        """What qemuCheckpointDelete has done when the bitmap removal fails."""
        meta = dom.meta
        target = meta.checkpoints[name]
        if children or children_only or not target.children:
            raise err
        moved: dict[str, str | None] = {}
        events: list[Event] = []
        for child in target.children:
            d = meta.checkpoints[child].definition().model_copy(update={"parent": target.parent})
            events += rules.redefined_events(meta, d, format_checkpoint_xml(d))
            moved[child] = target.parent
        tx.append(_events_op(dom, events))
        return PartialDelete(err, moved)

    def checkpoint_xml(self, domain: str, name: str, no_domain: bool = False) -> str:
        """The checkpoint's XML as stored in the mock's metadata."""
        with self._journal.reading() as host:
            cp = self._dom(host, domain).meta.get(name)
            if cp is None:
                raise no_checkpoint(name)
            return format_checkpoint_xml(cp.definition(), no_domain=no_domain)

    def list_checkpoints(self, domain: str) -> list[str]:
        """Every checkpoint name, parents first."""
        with self._journal.reading() as host:
            return self._dom(host, domain).meta.topological()

    def checkpoint_xmls(self, domain: str) -> list[str]:
        """Every checkpoint's XML, parents first."""
        with self._journal.reading() as host:
            meta = self._dom(host, domain).meta
            return [
                format_checkpoint_xml(meta.checkpoints[n].definition())
                for n in meta.topological()
            ]

    def current(self, domain: str) -> str | None:
        """The mock's internal current checkpoint (libvirt exposes none; for tests)."""
        with self._journal.reading() as host:
            return self._dom(host, domain).meta.current

    def close(self) -> None:
        """Nothing to release: every call opens and closes the state file."""


def open_url(uri: str) -> MockHypervisor:
    """The mock whose state file ``uri`` names (:func:`state_path`)."""
    return MockHypervisor(state_path(uri), uri)


def state_path(uri: str) -> str:
    """The state file of a mock URI, read as libvirt reads a URI's path: ``mock:///a/b.json``
    is ``/a/b.json`` (so is ``mock:////a/b.json``); ``mock:b.json`` is ``b.json`` in the
    working directory. STORE_URL for a host part (``mock://host/...``) or no path."""
    if not uri.startswith("mock:"):
        raise LedgerError("STORE_URL", f"'{uri}' is not a mock hypervisor URI")
    rest = uri[len("mock:"):]
    if rest.startswith("//"):
        rest = rest[2:]
        if not rest.startswith("/"):
            raise LedgerError("STORE_URL", f"'{uri}' has a host part; a mock URI is "
                              "mock:///absolute/path/state.json or mock:relative/state.json")
        rest = "/" + rest.lstrip("/")
    if rest in ("", "/"):
        raise LedgerError("STORE_URL", f"'{uri}' names no state file")
    return rest
