"""The two bitmap policies libvirt's QEMU driver has had (docs/libvirt-checkpoints.md §4.3).

* ``chained`` (libvirt 5.6 to 6.4): one recording bitmap per disk; creating C disables the
  bitmap of the nearest ancestor (from the old current) on each of C's disks; deleting C merges
  its bitmap into the nearest ancestor's; a backup from X merges every bitmap from X to current.
* ``independent`` (libvirt >= 6.5): every checkpoint's bitmap records; delete removes only
  its own bitmaps; a backup from X uses X's bitmap alone.

Everything here is pure: it reads a :class:`DomainState` and returns events or a plan.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from ledger.domain.events import BitmapDisabled, BitmapEnabled, BitmapMerged, BitmapRemoved, Event
from ledger.domain.model import CheckpointDef
from ledger.domain.state import DomainState

PlanMode = Literal["incremental", "differential", "full"]


class DiskPlan(BaseModel):
    """How to back up one disk from a reference checkpoint."""

    mode: PlanMode
    bitmaps: list[str]
    reason: str | None = None



def nearest_with_bitmap(
    state: DomainState, start: str | None, disk: str, skip: frozenset[str] = frozenset()
) -> tuple[str, str] | None:
    """The first checkpoint from ``start`` up (inclusive) with a bitmap on ``disk``.

    Returns ``(checkpoint, bitmap)``; checkpoints in ``skip`` are walked through.
    """
    for cp in state.ancestors(start):
        if cp.name in skip:
            continue
        bitmap = cp.bitmap_on(disk)
        if bitmap is not None:
            return cp.name, bitmap
    return None


def on_create(state: DomainState, new: CheckpointDef) -> list[Event]:
    """Bitmap events that creating ``new`` causes besides adding its own bitmaps."""
    if state.policy != "chained" or new.name is None:
        return []
    events: list[Event] = []
    for disk in new.bitmap_disks():
        found = nearest_with_bitmap(state, state.current, disk.name)
        if found is None:
            continue
        _, bitmap = found
        bm = state.bitmaps.get(disk.name, {}).get(bitmap)
        if bm is not None and bm.active:
            events.append(
                BitmapDisabled(disk=disk.name, bitmap=bitmap, checkpoint=new.name)
            )
    return events


def on_delete(state: DomainState, victims: list[str]) -> list[Event]:
    """Bitmap events for deleting ``victims`` (deepest first), as the policy does them."""
    events: list[Event] = []
    active = {
        (disk, name): bm.active for disk, bms in state.bitmaps.items() for name, bm in bms.items()
    }
    gone: set[str] = set()
    for victim in victims:
        cp = state.checkpoints[victim]
        gone.add(victim)
        for disk in cp.disks:
            if disk.checkpoint != "bitmap":
                continue
            bitmap = disk.bitmap_of(victim)
            if (disk.name, bitmap) not in active:
                continue  # the ledger believes it is gone already
            if state.policy == "chained":
                found = nearest_with_bitmap(state, cp.parent, disk.name, frozenset(gone))
                if found is not None:
                    anc, anc_bitmap = found
                    if active[(disk.name, bitmap)] and not active.get((disk.name, anc_bitmap)):
                        events.append(
                            BitmapEnabled(disk=disk.name, bitmap=anc_bitmap, checkpoint=victim)
                        )
                        active[(disk.name, anc_bitmap)] = True
                    events.append(
                        BitmapMerged(
                            disk=disk.name, bitmap=bitmap, checkpoint=victim, into=anc_bitmap
                        )
                    )
            events.append(BitmapRemoved(disk=disk.name, bitmap=bitmap, checkpoint=victim))
            del active[(disk.name, bitmap)]
    return events


def plan(state: DomainState, since: str) -> dict[str, DiskPlan]:
    """Per disk, the bitmaps that hold every block written since checkpoint ``since``.

    The caller has checked that ``since`` exists.
    """
    ref = state.checkpoints[since]
    out: dict[str, DiskPlan] = {}
    if state.policy == "chained":
        path = [cp.name for cp in state.ancestors(state.current)]
        if since not in path:
            reason = (
                f"checkpoint '{since}' is not on the path from the current checkpoint "
                f"'{state.current}' to a root"
            )
            return {d: DiskPlan(mode="full", bitmaps=[], reason=reason) for d in state.disk_names()}
        chain = list(reversed(path[: path.index(since) + 1]))  # oldest (since) first
    else:
        chain = [since]
    for disk in state.disk_names():
        if ref.bitmap_on(disk) is None:
            why = "has checkpoint='no' on" if ref.disk(disk) else "does not cover"
            out[disk] = DiskPlan(
                mode="full", bitmaps=[], reason=f"checkpoint '{since}' {why} disk {disk}"
            )
            continue
        bitmaps = [b for b in (state.checkpoints[n].bitmap_on(disk) for n in chain) if b]
        missing = [b for b in bitmaps if b not in state.bitmaps.get(disk, {})]
        if missing:
            out[disk] = DiskPlan(
                mode="full", bitmaps=[], reason=f"bitmap '{missing[0]}' is missing on {disk}"
            )
            continue
        broken = [b for b in bitmaps if state.bitmaps[disk][b].problem]
        if broken:
            problem = state.bitmaps[disk][broken[0]].problem
            out[disk] = DiskPlan(
                mode="full", bitmaps=[], reason=f"bitmap '{broken[0]}' on {disk}: {problem}"
            )
            continue
        if state.policy == "independent" and not state.bitmaps[disk][bitmaps[0]].active:
            out[disk] = DiskPlan(
                mode="full", bitmaps=[], reason=f"bitmap '{bitmaps[0]}' is not recording"
            )
            continue
        mode: PlanMode = "incremental" if len(bitmaps) == 1 else "differential"
        out[disk] = DiskPlan(mode=mode, bitmaps=bitmaps)
    return out
