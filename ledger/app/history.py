"""The life of one checkpoint, told from its domain's events (``ckpt-ledger history``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ledger.app.views import EventView, HistoryEntry
from ledger.domain.errors import no_checkpoint
from ledger.domain.events import (
    BitmapDisabled,
    BitmapEnabled,
    BitmapEvent,
    BitmapMerged,
    CheckpointCreated,
    CheckpointDeleted,
    CheckpointGone,
    CheckpointObserved,
    CheckpointRedefined,
    DriftObserved,
    OperationSettled,
)

Fact = Callable[[EventView, str, str], None]


def history(events: Iterable[EventView], name: str) -> list[HistoryEntry]:
    """Every fact in the life of checkpoint ``name``, from one domain's events in order.

    Created/redefined, its bitmaps disabled, enabled, merged (into another, or another into
    one of its own), removed, its reparenting, its children's, its deletion and how.
    NO_DOMAIN_CHECKPOINT when no event ever created or redefined ``name``.
    """
    out: list[HistoryEntry] = []
    owned: set[tuple[str, str]] = set()  # (disk, bitmap) of the checkpoint
    parent: str | None = None
    existed = False

    def fact(ev: EventView, what: str, detail: str) -> None:
        out.append(HistoryEntry(
            position=ev.position, recorded_at=ev.recorded_at, actor=ev.actor, host=ev.host,
            tool=f"{ev.tool} {ev.tool_version}".strip(), reason=ev.reason,
            correlation_id=ev.correlation_id, what=what, detail=detail,
        ))

    for ev in events:
        e = ev.event
        match e:
            case CheckpointCreated() | CheckpointRedefined() | CheckpointObserved() \
                    if e.name == name:
                bitmaps = [(d.name, d.bitmap_of(name)) for d in e.disks
                           if d.checkpoint == "bitmap"]
                fresh = not existed or isinstance(e, CheckpointCreated)
                owned = set(bitmaps) if fresh else owned | set(bitmaps)
                existed, parent = True, e.parent
                what = ("created" if isinstance(e, CheckpointCreated) else
                        "observed" if isinstance(e, CheckpointObserved) else "redefined")
                extra = ""
                if isinstance(e, CheckpointRedefined):
                    extra = " (update)" if e.update else ""
                    extra += " (bitmaps validated)" if e.validate_bitmaps else ""
                bms = ", ".join(f"{k}/{b}" for k, b in bitmaps) or "none"
                fact(ev, what, f"parent {parent or '(none)'}; bitmaps {bms}{extra}")
            case BitmapEvent() if (e.disk, e.bitmap) in owned:
                bm = f"{e.disk}/{e.bitmap}"
                if isinstance(e, BitmapDisabled):
                    fact(ev, "bitmap disabled", f"{bm} stopped recording ({e.checkpoint} created)")
                elif isinstance(e, BitmapEnabled):
                    fact(ev, "bitmap enabled", f"{bm} recording again ({e.checkpoint} deleted)")
                elif isinstance(e, BitmapMerged):
                    fact(ev, "bitmap merged", f"{bm} into {e.disk}/{e.into}")
                else:
                    owned.discard((e.disk, e.bitmap))
                    fact(ev, "bitmap removed", f"{bm} removed from the disk")
            case BitmapMerged() if (e.disk, e.into) in owned:
                fact(ev, "bitmap merged from",
                     f"{e.disk}/{e.bitmap} ({e.checkpoint} deleted) merged into "
                     f"{e.disk}/{e.into}")
            case CheckpointDeleted() if existed:
                parent = _deleted_facts(ev, e, name, parent, fact)
            case CheckpointGone() if existed and e.name == name:
                fact(ev, "gone", f"{e.why}: {e.detail}".strip(": "))
            case CheckpointGone() if existed and name in e.reparented:
                new = e.reparented[name]
                fact(ev, "reparented",
                     f"parent {parent or '(none)'} -> {new or '(none)'} ({e.name} gone)")
                parent = new
            case OperationSettled() if e.checkpoint == name:
                fact(ev, "settled", f"an interrupted {e.op} by {e.attempted_by}: "
                     f"{e.outcome} ({e.detail})")
            case DriftObserved() if e.checkpoint == name or (e.disk, e.bitmap) in owned:
                fact(ev, "drift observed", f"{e.kind}: {e.detail}".strip(": "))
    if not existed:
        raise no_checkpoint(name)
    return out


def _deleted_facts(ev: EventView, e: CheckpointDeleted, name: str, parent: str | None,
                   fact: Fact) -> str | None:
    """The facts a CheckpointDeleted holds about ``name``; returns its parent afterwards."""
    if name in e.reparented:
        new = e.reparented[name]
        fact(ev, "reparented",
             f"parent {parent or '(none)'} -> {new or '(none)'} ({e.name} deleted)")
        parent = new
    for child, new in e.reparented.items():
        if new == name:
            fact(ev, "adopted child", f"{child} now a child of {name} ({e.name} deleted)")
    if e.name == name:
        for child, new in e.reparented.items():
            if new != name:
                fact(ev, "child reparented", f"{child} moved to {new or '(no parent)'}")
    if name in e.deleted:
        how = [f for f, on in (("children", e.children), ("children_only", e.children_only),
                               ("metadata_only", e.metadata_only)) if on]
        flags = ", ".join("--" + f.replace("_", "-") for f in how) or "no flags"
        via = "" if e.name == name else f" along with {e.name}"
        left = "; bitmaps left on the disks" if e.metadata_only else ""
        fact(ev, "deleted", f"deleted{via} ({flags}){left}")
    elif e.name == name and e.children_only:
        fact(ev, "children deleted", ", ".join(e.deleted) + " (--children-only)")
    return parent
