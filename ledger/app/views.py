"""What the library's read methods return: pydantic models with a stable JSON shape."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from ledger.domain.events import EPOCH_FIELDS, DriftObserved, Event, parse_event
from ledger.domain.model import BackupDisk, CheckpointDisk, Policy
from ledger.domain.policies import DiskPlan
from ledger.domain.state import DomainState


class CheckpointView(BaseModel):
    """One live checkpoint (``list``/``show``). JSON keys are the CLI's."""

    name: str
    parent: str | None
    creation_time: int
    description: str | None
    current: bool
    disks: list[CheckpointDisk]
    children: list[str] = Field(default_factory=list)
    orphan: bool = False  # its parent is not known to the ledger (``verify`` flags it)


class BitmapView(BaseModel):
    """One bitmap on one disk, as the ledger believes the hypervisor holds it."""

    bitmap: str
    checkpoint: str
    active: bool


class BitmapsView(BaseModel):
    """``bitmaps``: per disk, every bitmap in creation order."""

    domain: str
    policy: Policy
    disks: dict[str, list[BitmapView]]


class PlanView(BaseModel):
    """``plan``: for reference checkpoint ``since``, per disk, the bitmaps to merge."""

    domain: str
    since: str
    policy: Policy
    disks: dict[str, DiskPlan]


# the JSON Schema of a time field: ISO 8601 in UTC, as iso() writes it
ISO_8601: dict[str, Any] = {
    "format": "date-time",
    "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z$"}
POSITIVE: dict[str, Any] = {"minimum": 1}
EVENT_SCHEMA: Literal["ckpt-ledger/event/1"] = "ckpt-ledger/event/1"


class EventView(BaseModel):
    """One event as ``log`` and ``follow`` show it (the JSON Schema of its JSON form is
    ``ledger/schemas/event.schema.json``; ``schema`` names its version)."""

    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True)

    event_schema: Literal["ckpt-ledger/event/1"] = Field(default=EVENT_SCHEMA, alias="schema")
    position: int = Field(json_schema_extra=POSITIVE)  # global, gapless, from 1
    stream_version: int = Field(json_schema_extra=POSITIVE)  # the domain's own, from 1
    domain: str  # its name when the event was recorded
    stream_id: str  # its UUID
    type: str
    recorded_at: str = Field(json_schema_extra=ISO_8601)  # ISO 8601, UTC
    actor: str
    host: str
    reason: str | None = None
    correlation_id: str | None = None
    tool: str = ""
    tool_version: str = ""
    data: dict[str, Any]  # the event's fields but ``type`` (ledger/domain/events.py)
    _event: Event | None = PrivateAttr(default=None)

    @classmethod
    def of(cls, event: Event, **fields: Any) -> EventView:
        """The view of ``event`` (its data without the type tag, its times in ISO 8601),
        with the other fields."""
        data = event.model_dump(mode="json")
        del data["type"]
        for name in EPOCH_FIELDS.get(event.type, ()):
            if data[name] is not None:
                data[name] = iso(data[name])
        view = cls(type=event.type, data=data, **fields)
        view._event = event
        return view

    @property
    def event(self) -> Event:
        """The typed event this view shows."""
        if self._event is None:
            data: dict[str, Any] = {**self.data, "type": self.type}
            for name in EPOCH_FIELDS.get(self.type, ()):
                if isinstance(data.get(name), str):
                    data[name] = epoch(data[name])
            self._event = parse_event(data)
        return self._event


def iso(ts: float) -> str:
    """Epoch seconds as ISO 8601 UTC to the second (``2026-11-29T18:00:00Z``)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def epoch(text: str) -> float:
    """An ISO 8601 time (``Z`` or an offset; naive is UTC) as epoch seconds."""
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


class BackupView(BaseModel):
    """One backup job (``backups``): number, what it backed up and from where, who ran it,
    what it created, and how it ended (``running`` until it has)."""

    number: int
    job: str
    mode: Literal["push", "pull"]
    # mixed: some disks full, some incremental; unknown: a job seen only once it had ended
    # (libvirt's job events do not say what it backed up)
    kind: Literal["full", "incremental", "mixed", "unknown"]
    since: list[str]  # the checkpoints it is incremental from
    checkpoint: str | None  # the checkpoint the job created
    disks: list[BackupDisk]
    tool: str | None
    target: str | None
    source: Literal["recorded", "observed"]
    started_at: str = Field(json_schema_extra=ISO_8601)
    actor: str
    host: str
    reason: str | None = None
    outcome: Literal["running", "completed", "failed", "aborted"] = "running"
    ended_at: str | None = Field(default=None, json_schema_extra=ISO_8601)
    bytes: int | None = None
    seconds: float | None = None
    error: str | None = None
    started_position: int
    ended_position: int | None = None


class HistoryEntry(BaseModel):
    """One fact in a checkpoint's life (``history``), with who recorded it and why."""

    position: int
    recorded_at: str = Field(json_schema_extra=ISO_8601)
    actor: str
    host: str
    tool: str = ""
    reason: str | None = None
    correlation_id: str | None = None
    what: str  # created, redefined, bitmap disabled, ..., reparented, deleted
    detail: str


class DeleteResult(BaseModel):
    """What a delete did."""

    name: str
    deleted: list[str]
    reparented: dict[str, str | None]
    children_only: bool = False


class ImportReport(BaseModel):
    """What ``import`` / ``import-xml`` learned for one domain."""

    domain: str
    # on the host, not in the ledger: recorded as observed
    added: list[str] = Field(default_factory=list)
    changed: list[str] = Field(default_factory=list)  # redefined on the host: recorded as observed
    unchanged: list[str] = Field(default_factory=list)
    # metadata gone, bitmaps still there: replay restores
    missing_on_host: list[str] = Field(default_factory=list)
    # metadata and bitmaps gone: recorded as gone
    deleted_outside: list[str] = Field(default_factory=list)
    replaced: list[str] = Field(default_factory=list)  # the name now belongs to another checkpoint
    # removed by an interrupted delete, settled from the host
    deleted: list[str] = Field(default_factory=list)
    # interrupted operations settled ("create c2: done")
    settled: list[str] = Field(default_factory=list)
    # backup jobs the host remembers, recorded as observed
    backups: list[str] = Field(default_factory=list)


class ReplayStep(BaseModel):
    """One checkpoint in a replay plan."""

    name: str
    action: Literal["redefine", "skip", "conflict"]
    why: str | None = None


class ReplayReport(BaseModel):
    """What ``replay`` did (or, with ``dry_run``, would do) for one domain."""

    domain: str
    dry_run: bool = False
    steps: list[ReplayStep] = Field(default_factory=list)
    unknown_on_host: list[str] = Field(default_factory=list)
    error: str | None = None  # why this domain failed (replays of several domains go on)


class Finding(BaseModel):
    """One disagreement between the ledger, the hypervisor and the images."""

    kind: str
    checkpoint: str | None = None
    disk: str | None = None
    bitmap: str | None = None
    detail: str = ""

    def to_event(self) -> DriftObserved:
        """The event that records this finding."""
        return DriftObserved(kind=self.kind, checkpoint=self.checkpoint, disk=self.disk,
                             bitmap=self.bitmap, detail=self.detail)


class VerifyReport(BaseModel):
    """``verify`` for one domain: findings and the backup plans they make unusable."""

    domain: str
    ok: bool
    findings: list[Finding] = Field(default_factory=list)
    unusable_plans: dict[str, dict[str, str]] = {}  # reference checkpoint -> disk -> reason
    recorded: int = 0


def checkpoint_view(state: DomainState, name: str) -> CheckpointView:
    """The view of checkpoint ``name`` of ``state`` (which must hold it)."""
    cp = state.checkpoints[name]
    return CheckpointView(
        name=cp.name,
        parent=cp.parent,
        creation_time=cp.creation_time,
        description=cp.description,
        current=state.current == cp.name,
        disks=list(cp.disks),
        children=list(cp.children),
        orphan=cp.parent is not None and cp.parent not in state.checkpoints,
    )
