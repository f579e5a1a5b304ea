"""What the library's read methods return: pydantic models with a stable JSON shape."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from .model import CheckpointDisk, Policy

PlanMode = Literal["incremental", "differential", "full"]


class CheckpointView(BaseModel):
    """One live checkpoint (``list``/``show``). JSON keys are the CLI's."""

    name: str
    parent: str | None
    creation_time: int
    description: str | None
    current: bool
    disks: list[CheckpointDisk]
    children: list[str] = []


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


class DiskPlan(BaseModel):
    """How to back up one disk from a reference checkpoint."""

    mode: PlanMode
    bitmaps: list[str]
    reason: str | None = None


class PlanView(BaseModel):
    """``plan``: for reference checkpoint ``since``, per disk, the bitmaps to merge."""

    domain: str
    since: str
    policy: Policy
    disks: dict[str, DiskPlan]


class EventView(BaseModel):
    """One event as ``log`` shows it."""

    position: int
    stream_version: int
    domain: str
    stream_id: str
    type: str
    recorded_at: str  # ISO 8601, UTC
    actor: str
    host: str
    reason: str | None = None
    data: dict[str, Any]


class DeleteResult(BaseModel):
    """What a delete did."""

    name: str
    deleted: list[str]
    reparented: dict[str, str | None]
    children_only: bool = False
