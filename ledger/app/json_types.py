"""The plain-dict JSON of the reports that are not models (``to_dict`` of verify-log, export,
import-log, copy and rebuild; the mock's own outputs), as ``TypedDict`` s."""

from __future__ import annotations

from typing import NotRequired

from typing_extensions import TypedDict  # pydantic reads only this one on Python < 3.12


class HeadJSON(TypedDict):
    """A position in the log and its chain hash (``head``)."""

    position: int
    hash: str


class FirstBadJSON(TypedDict):
    """Where a hash chain breaks, and why."""

    position: int
    reason: str | None


class AnchorJSON(TypedDict):
    """An anchor ``POSITION:HASH`` checked by ``verify-log``."""

    position: int
    hash: str
    ok: bool | None


class SnapshotCheckJSON(TypedDict):
    """``verify-log``'s verdict on the store's snapshot."""

    status: str
    position: int | None
    detail: str
    differing: list[str]


class ChainReportJSON(TypedDict):
    """``verify-log``: whether the hash chain holds, up to where, and the snapshot."""

    ok: bool
    events: int
    head: HeadJSON
    first_bad: FirstBadJSON | None
    anchor: AnchorJSON | None
    snapshot: SnapshotCheckJSON | None
    torn_tail: str | None


class ExportJSON(TypedDict):
    """``export``: the file written and the head it ends at."""

    path: str
    format: str
    events: int
    head: HeadJSON
    domain: str | None


class ImportLogJSON(TypedDict):
    """``import-log``: the events in the file, those already present, those appended."""

    path: str
    events: int
    present: int
    imported: int
    head: HeadJSON


class CopyJSON(TypedDict):
    """``copy``: what was copied, and with ``--verify`` whether the copy is identical."""

    source: str
    target: str
    events: int
    streams: int
    batches: int
    verified: NotRequired[bool]
    source_digest: NotRequired[str]
    target_digest: NotRequired[str]
    fields: NotRequired[list[str]]
    mismatch: NotRequired[str | None]


class RebuildJSON(TypedDict):
    """``rebuild``: the events folded and what the old snapshot was worth."""

    position: int
    events: int
    domains: int
    snapshot: str
    detail: str
    differing: list[str]
    written: bool


class MockExtentsJSON(TypedDict):
    """``mock extents``: the dirty byte ranges ``[offset, length]`` of merged bitmaps."""

    disk: str
    bitmaps: list[str]
    extents: list[list[int]]


class MockCheckpointsJSON(TypedDict):
    """``mock checkpoints``: the mock's own checkpoint metadata."""

    domain: str
    checkpoints: list[str]
    current: str | None
