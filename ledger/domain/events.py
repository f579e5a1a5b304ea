"""Every event the ledger records: immutable facts about a domain's checkpoints.

Each event type is a pydantic model with a ``type`` tag. :data:`EVENT_TYPES` maps the tag to
the class and :func:`parse_event` turns a stored payload back into a model. ``SCHEMA_VERSION``
is stored with every event; a reader refuses a version newer than its own.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from ledger.domain.model import BackupDisk, CheckpointDisk, DomainDisk, Policy

# 1: the payload's provenance ("meta") is a msgpack map; 2: it is a msgpack bin holding that
# map (ledger/log/records.py). Readers take both; a reader refuses a version newer than its own.
SCHEMA_VERSION = 2


class EpochMark:
    """Marks a field holding a time as seconds since the epoch (views show it as ISO 8601)."""


EPOCH_MARK = EpochMark()
Epoch = Annotated[float, EPOCH_MARK]
"""A point in time, in seconds since the epoch (UTC)."""


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DomainEnrolled(_Event):
    """The ledger saw a domain for the first time (or its disks or policy changed)."""

    type: Literal["DomainEnrolled"] = "DomainEnrolled"
    name: str
    uuid: str
    disks: tuple[DomainDisk, ...]
    policy: Policy
    hypervisor: str | None = None


class CheckpointCreated(_Event):
    """A checkpoint was created (not a redefine): what the hypervisor really made."""

    type: Literal["CheckpointCreated"] = "CheckpointCreated"
    name: str
    parent: str | None
    creation_time: int
    description: str | None = None
    disks: tuple[CheckpointDisk, ...]
    domain_xml: str | None = None
    xml: str


class CheckpointRedefined(_Event):
    """A checkpoint's metadata was redefined: a new entry or an in-place update."""

    type: Literal["CheckpointRedefined"] = "CheckpointRedefined"
    name: str
    parent: str | None
    creation_time: int
    description: str | None = None
    disks: tuple[CheckpointDisk, ...]
    domain_xml: str | None = None
    xml: str
    update: bool = False  # True when the name already existed (children are kept)
    validate_bitmaps: bool = False


class CheckpointDeleted(_Event):
    """A checkpoint (and with CHILDREN, its descendants) was deleted."""

    type: Literal["CheckpointDeleted"] = "CheckpointDeleted"
    name: str
    children: bool = False
    children_only: bool = False
    metadata_only: bool = False
    deleted: tuple[str, ...]  # every checkpoint that went, deepest first
    reparented: dict[str, str | None] = Field(default_factory=dict)  # child -> new parent


class BitmapEvent(_Event):
    """What every bitmap event holds: the disk, the bitmap, and the checkpoint whose create
    or delete caused it."""

    disk: str
    bitmap: str
    checkpoint: str  # the checkpoint whose create/delete caused it


class BitmapDisabled(BitmapEvent):
    """A bitmap stopped recording (chained policy: a newer checkpoint took over the disk)."""

    type: Literal["BitmapDisabled"] = "BitmapDisabled"


class BitmapEnabled(BitmapEvent):
    """A bitmap started recording again (chained: the leaf on that disk was deleted)."""

    type: Literal["BitmapEnabled"] = "BitmapEnabled"


class BitmapMerged(BitmapEvent):
    """``bitmap`` was merged into ``into`` on ``disk`` (chained delete)."""

    type: Literal["BitmapMerged"] = "BitmapMerged"
    into: str


class BitmapRemoved(BitmapEvent):
    """A bitmap was removed from the disk (a non-metadata delete)."""

    type: Literal["BitmapRemoved"] = "BitmapRemoved"


class DriftObserved(_Event):
    """Something observed on the hypervisor that the ledger did not cause (verify --record)."""

    type: Literal["DriftObserved"] = "DriftObserved"
    kind: str
    checkpoint: str | None = None
    disk: str | None = None
    bitmap: str | None = None
    detail: str = ""


class CheckpointObserved(_Event):
    """A checkpoint the hypervisor has and the ledger did not record (made by another tool,
    or by an operation whose own record was lost), as the hypervisor's XML describes it.
    ``source`` names what noticed it (a command, ``import``, a settled intent)."""

    type: Literal["CheckpointObserved"] = "CheckpointObserved"
    name: str
    parent: str | None
    creation_time: int
    description: str | None = None
    disks: tuple[CheckpointDisk, ...]
    domain_xml: str | None = None
    xml: str
    source: str = ""


GoneWhy = Literal["deleted-outside", "replaced", "forgotten", "deleted"]


class CheckpointGone(_Event):
    """A checkpoint the ledger held is no longer live, learned rather than done by the
    ledger: deleted by another tool (its metadata and bitmaps gone from the host), replaced
    (the name now belongs to another checkpoint), forgotten by hand, or deleted by an
    operation whose own record was lost. Its bitmaps are gone with it; each child named in
    ``reparented`` moves to its new parent."""

    type: Literal["CheckpointGone"] = "CheckpointGone"
    name: str
    why: GoneWhy
    detail: str = ""
    reparented: dict[str, str | None] = Field(default_factory=dict)


class OperationSettled(_Event):
    """An operation that reached the hypervisor but whose outcome was never recorded (the
    process died, the store failed), settled from what the hypervisor shows: ``done`` or
    ``not-done``. Carries who attempted it, when and why."""

    type: Literal["OperationSettled"] = "OperationSettled"
    op: str
    checkpoint: str
    outcome: Literal["done", "not-done"]
    attempted_at: Epoch
    attempted_by: str | None = None
    attempted_reason: str | None = None
    detail: str = ""


class BackupStarted(_Event):
    """A backup job began (push mode: the hypervisor writes the data; pull: a client reads it
    over NBD). Each disk is full or incremental since a checkpoint; ``checkpoint`` is the one
    the job created, if any. ``job`` names the job within the domain (the tool's id, or one
    derived from what was observed); ``source`` says whether the tool recorded it or the
    ledger observed it on the host."""

    type: Literal["BackupStarted"] = "BackupStarted"
    job: str
    mode: Literal["push", "pull"] = "push"
    disks: tuple[BackupDisk, ...] = ()
    checkpoint: str | None = None
    tool: str | None = None
    target: str | None = None
    source: Literal["recorded", "observed"] = "recorded"
    at: Epoch | None = None  # when it started (epoch seconds) if not when recorded


class BackupEnded(_Event):
    """A backup job ended: completed, failed (with the hypervisor's or tool's error) or
    aborted; how many bytes it moved and how long it ran, when known."""

    type: Literal["BackupEnded"] = "BackupEnded"
    job: str
    outcome: Literal["completed", "failed", "aborted"]
    bytes: int | None = None
    seconds: float | None = None
    error: str | None = None
    at: Epoch | None = None  # when it ended (epoch seconds) if not when recorded


Event = Annotated[
    DomainEnrolled
    | CheckpointCreated
    | CheckpointRedefined
    | CheckpointDeleted
    | BitmapDisabled
    | BitmapEnabled
    | BitmapMerged
    | BitmapRemoved
    | DriftObserved
    | CheckpointObserved
    | CheckpointGone
    | OperationSettled
    | BackupStarted
    | BackupEnded,
    Field(discriminator="type"),
]

EVENT_TYPES: dict[str, type[_Event]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        DomainEnrolled,
        CheckpointCreated,
        CheckpointRedefined,
        CheckpointDeleted,
        BitmapDisabled,
        BitmapEnabled,
        BitmapMerged,
        BitmapRemoved,
        DriftObserved,
        CheckpointObserved,
        CheckpointGone,
        OperationSettled,
        BackupStarted,
        BackupEnded,
    )
}

_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def _epoch_fields(cls: type[_Event]) -> tuple[str, ...]:
    return tuple(name for name, f in cls.model_fields.items()
                 if EPOCH_MARK in f.metadata or any(
                     EPOCH_MARK in getattr(a, "__metadata__", ()) for a in get_args(f.annotation)))


EPOCH_FIELDS: dict[str, tuple[str, ...]] = {
    tag: fields for tag, cls in EVENT_TYPES.items() if (fields := _epoch_fields(cls))}
"""Event type -> its fields holding a time in seconds since the epoch (:data:`Epoch`)."""


def parse_event(data: dict[str, object]) -> Event:
    """Validate a decoded payload back into its event model."""
    return _ADAPTER.validate_python(data)


def event_data(event: _Event) -> dict[str, object]:
    """The event as plain data (what is encoded into the store)."""
    return event.model_dump(mode="json")
