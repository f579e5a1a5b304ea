"""The life of one checkpoint, told from its domain's events (``ckpt-ledger history``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ledger.app.audit import BITMAP_TYPES, CHECKPOINT_TYPES
from ledger.app.views import EventView, HistoryEntry
from ledger.domain.errors import no_checkpoint
from ledger.domain.model import bitmap_name

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
        d, t = ev.data, ev.type
        if t in CHECKPOINT_TYPES and d.get("name") == name:
            bitmaps = [(x["name"], bitmap_name(x.get("bitmap"), name)) for x in d.get("disks", ())
                       if x.get("checkpoint", "bitmap") == "bitmap"]
            fresh = not existed or t == "CheckpointCreated"
            owned = set(bitmaps) if fresh else owned | set(bitmaps)
            existed, parent = True, d.get("parent")
            what = {"CheckpointCreated": "created", "CheckpointObserved": "observed"}.get(
                t, "redefined")
            extra = " (update)" if d.get("update") else ""
            extra += " (bitmaps validated)" if d.get("validate_bitmaps") else ""
            bms = ", ".join(f"{k}/{b}" for k, b in bitmaps) or "none"
            fact(ev, what, f"parent {parent or '(none)'}; bitmaps {bms}{extra}")
        elif t in BITMAP_TYPES and (d["disk"], d["bitmap"]) in owned:
            bm, cause = f"{d['disk']}/{d['bitmap']}", d["checkpoint"]
            if t == "BitmapDisabled":
                fact(ev, "bitmap disabled", f"{bm} stopped recording ({cause} created)")
            elif t == "BitmapEnabled":
                fact(ev, "bitmap enabled", f"{bm} recording again ({cause} deleted)")
            elif t == "BitmapMerged":
                fact(ev, "bitmap merged", f"{bm} into {d['disk']}/{d['into']}")
            else:
                owned.discard((d["disk"], d["bitmap"]))
                fact(ev, "bitmap removed", f"{bm} removed from the disk")
        elif t == "BitmapMerged" and (d["disk"], d["into"]) in owned:
            fact(ev, "bitmap merged from",
                 f"{d['disk']}/{d['bitmap']} ({d['checkpoint']} deleted) merged into "
                 f"{d['disk']}/{d['into']}")
        elif t == "CheckpointDeleted" and existed:
            parent = _deleted_facts(ev, name, parent, fact)
        elif t == "CheckpointGone" and existed and d.get("name") == name:
            fact(ev, "gone", f"{d.get('why', '')}: {d.get('detail', '')}".strip(": "))
        elif t == "CheckpointGone" and existed and name in (d.get("reparented") or {}):
            new = d["reparented"][name]
            fact(ev, "reparented",
                 f"parent {parent or '(none)'} -> {new or '(none)'} ({d['name']} gone)")
            parent = new
        elif t == "OperationSettled" and d.get("checkpoint") == name:
            fact(ev, "settled", f"an interrupted {d.get('op')} by {d.get('attempted_by')}: "
                 f"{d.get('outcome')} ({d.get('detail', '')})")
        elif t == "DriftObserved" and (d.get("checkpoint") == name or (
                (d.get("disk"), d.get("bitmap")) in owned)):
            fact(ev, "drift observed", f"{d.get('kind', '')}: {d.get('detail', '')}".strip(": "))
    if not existed:
        raise no_checkpoint(name)
    return out


def _deleted_facts(ev: EventView, name: str, parent: str | None, fact: Fact) -> str | None:
    """The facts a CheckpointDeleted holds about ``name``; returns its parent afterwards."""
    d = ev.data
    reparented: dict[str, str | None] = d.get("reparented") or {}
    if name in reparented:
        new = reparented[name]
        fact(ev, "reparented",
             f"parent {parent or '(none)'} -> {new or '(none)'} ({d['name']} deleted)")
        parent = new
    for child, new in reparented.items():
        if new == name:
            fact(ev, "adopted child", f"{child} now a child of {name} ({d['name']} deleted)")
    if d["name"] == name:
        for child, new in reparented.items():
            if new != name:
                fact(ev, "child reparented", f"{child} moved to {new or '(no parent)'}")
    if name in d.get("deleted", ()):
        how = [f for f in ("children", "children_only", "metadata_only") if d.get(f)]
        flags = ", ".join("--" + f.replace("_", "-") for f in how) or "no flags"
        via = "" if d["name"] == name else f" along with {d['name']}"
        left = "; bitmaps left on the disks" if d.get("metadata_only") else ""
        fact(ev, "deleted", f"deleted{via} ({flags}){left}")
    elif d["name"] == name and d.get("children_only"):
        fact(ev, "children deleted",
             ", ".join(str(n) for n in d.get("deleted", ())) + " (--children-only)")
    return parent
