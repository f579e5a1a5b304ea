"""Value objects shared by the rules, the XML codec, the events and the adapters."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Policy = Literal["chained", "independent"]
DiskFormat = Literal["qcow2", "raw"]
CheckpointType = Literal["bitmap", "no"]


class Frozen(BaseModel):
    """Immutable, strict-field base model."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class CheckpointDisk(Frozen):
    """One ``<disk>`` of a checkpoint: its target, ``checkpoint`` type and bitmap name."""

    name: str
    checkpoint: CheckpointType = "bitmap"
    bitmap: str | None = None
    size: int | None = None

    def bitmap_of(self, checkpoint: str) -> str:
        """The bitmap's name on this disk for ``checkpoint``: :func:`bitmap_name`."""
        return bitmap_name(self.bitmap, checkpoint)


def bitmap_name(bitmap: str | None, checkpoint: str) -> str:
    """A disk's bitmap name: the one its ``<disk bitmap=...>`` gives, else the checkpoint's
    own name (libvirt's rule, docs/libvirt-checkpoints.md section 2.3)."""
    return bitmap or checkpoint


class BoundedCache(dict[Any, Any]):
    """A dict holding at most ``limit`` entries: adding one past that drops the oldest
    (the first added), so a cache of shared instances never grows without bound."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: Any, value: Any) -> None:
        if len(self) >= self.limit and key not in self:
            del self[next(iter(self))]
        super().__setitem__(key, value)


# (name, checkpoint, bitmap, size) -> the one shared instance (see shared_disk)
SHARED_DISKS = BoundedCache(16384)


def shared_disk(name: str, checkpoint: str, bitmap: str | None, size: int | None
                ) -> CheckpointDisk:
    """The shared instance of the checkpoint disk entry with these values (they are
    frozen): most checkpoints of most domains list the same disks with the same bitmaps,
    so a ledger holds one copy of each (:data:`SHARED_DISKS`). The caller has checked the
    values as validation would (``checkpoint`` 'bitmap' or 'no', ``size`` an int, never a
    bool, or None): the entry is built without validating them."""
    key = (name, checkpoint, bitmap, size)
    disk = SHARED_DISKS.get(key)
    if disk is None:
        disk = SHARED_DISKS[key] = CheckpointDisk.model_construct(
            name=name, checkpoint=checkpoint, bitmap=bitmap, size=size)
    return disk


class CheckpointDef(Frozen):
    """A ``<domaincheckpoint>`` definition, as parsed from or formatted to XML.

    ``disks`` is ``None`` when the XML had no ``<disks>`` element (libvirt then picks
    the disks itself); ``domain_xml`` is the embedded ``<domain>`` element, verbatim
    and dedented, or ``None``.
    """

    name: str | None = None
    description: str | None = None
    parent: str | None = None
    creation_time: int | None = None
    disks: tuple[CheckpointDisk, ...] | None = None
    domain_xml: str | None = None

    def bitmap_disks(self) -> tuple[CheckpointDisk, ...]:
        """The disks with ``checkpoint='bitmap'``."""
        return tuple(d for d in (self.disks or ()) if d.checkpoint == "bitmap")

    def disk(self, name: str) -> CheckpointDisk | None:
        """The disk entry named ``name``, if any."""
        for d in self.disks or ():
            if d.name == name:
                return d
        return None


class DomainDisk(Frozen):
    """A disk of a domain, as the hypervisor reports it."""

    name: str  # target dev, e.g. vda
    format: DiskFormat | str = "qcow2"
    readonly: bool = False
    empty: bool = False
    source: str | None = None
    size: int = 1 << 30


class DomainInfo(Frozen):
    """What a hypervisor says about one domain at this moment."""

    name: str
    uuid: str
    running: bool
    policy: Policy
    disks: tuple[DomainDisk, ...] = Field(default_factory=tuple)
    domain_xml: str | None = None  # the inactive definition, as libvirt formats it

    def disk(self, name: str) -> DomainDisk | None:
        """The disk whose target or source path is ``name`` (libvirt's lookup)."""
        for d in self.disks:
            if d.name == name:
                return d
        matches = [d for d in self.disks if d.source is not None and d.source == name]
        return matches[0] if len(matches) == 1 else None


class BackupDisk(Frozen):
    """One disk of a backup job: incremental since ``incremental`` (a checkpoint name), or
    full when None; ``target`` is where its data went (a file, an NBD export), if known."""

    name: str
    incremental: str | None = None
    target: str | None = None


class HostJob(Frozen):
    """A backup job as the hypervisor shows it: running (``ended`` None) or ended; ``job``
    identifies it on that host and domain; times are epoch seconds."""

    job: str
    mode: Literal["push", "pull"] = "push"
    disks: tuple[BackupDisk, ...] = ()
    checkpoint: str | None = None
    started: float
    ended: float | None = None
    outcome: Literal["running", "completed", "failed", "aborted"] = "running"
    bytes: int | None = None
    error: str | None = None


class JobResult(Frozen):
    """How the hypervisor says a backup job ended (libvirt's completed-job statistics):
    completed, failed or aborted, bytes processed, milliseconds it ran; ``error`` if known."""

    outcome: Literal["completed", "failed", "aborted"]
    bytes: int | None = None
    elapsed_ms: int | None = None
    error: str | None = None
