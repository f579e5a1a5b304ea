"""Keeping the ledger equal to the host: what another tool (or a lost record) changed.

:func:`reconcile` runs under the domain's lock before every command that changes the host,
and as ``import``. It compares the hypervisor's checkpoints with the ledger's live ones and
records what it learns, each event observed from the hypervisor (never as done by the ledger):

* a checkpoint the host has and the ledger does not: ``CheckpointObserved``, parents first;
* one the ledger has and the host does not: its bitmaps decide. Bitmaps still in the images
  means the host lost its metadata (nothing recorded: ``replay`` restores it); bitmaps gone
  means it was deleted outside (``CheckpointGone``, why ``deleted-outside``);
* the same name with another creation time or disks: the old one ``CheckpointGone`` (why
  ``replaced``), the new one observed;
* an open write-ahead intent (:mod:`ledger.log.intents`) is settled from what the host shows
  (``OperationSettled``: done or not-done, with who attempted it and why).

A command's own reconcile compares names (cheap); when a name is missing, or for ``import``
(``full``), every checkpoint's XML is compared too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

from ledger.app.views import ImportReport
from ledger.app.writer import Writer
from ledger.domain.checkpoint_xml import parse_checkpoint_xml
from ledger.domain.errors import LedgerError
from ledger.domain.events import (
    CheckpointGone,
    CheckpointObserved,
    Event,
    GoneWhy,
    OperationSettled,
)
from ledger.domain.model import CheckpointDef, DomainInfo
from ledger.domain.state import DomainState
from ledger.log.intents import Intent, load_intent, save_intent


def same_definition(a: CheckpointDef, b: CheckpointDef) -> bool:
    """Whether two definitions agree on everything but the embedded <domain> text."""
    keys = ("name", "parent", "creation_time", "description")
    return all(getattr(a, k) == getattr(b, k) for k in keys) and _disks(a) == _disks(b)


def _disks(d: CheckpointDef) -> tuple[tuple[str, str, str | None], ...]:
    return tuple((x.name, x.checkpoint, x.bitmap) for x in d.disks or ())


def same_checkpoint(a: CheckpointDef, b: CheckpointDef) -> bool:
    """Whether ``b`` is the checkpoint ``a`` was (same creation time and bitmaps), even if
    its metadata (parent, description) changed since."""
    return a.creation_time == b.creation_time and _disks(a) == _disks(b)


def observed(d: CheckpointDef, xml: str, source: str) -> CheckpointObserved:
    """The event for a checkpoint seen on the host (``d`` parsed from ``xml``)."""
    assert d.name is not None and d.creation_time is not None
    return CheckpointObserved(name=d.name, parent=d.parent, creation_time=d.creation_time,
                              description=d.description, disks=d.disks or (),
                              domain_xml=d.domain_xml, xml=xml, source=source)


def _parsed(xml: str) -> CheckpointDef:
    return parse_checkpoint_xml(xml, redefine=True)


def reconcile(
    w: Writer, info: DomainInfo, source: str, *, full: bool = False, actor: str | None = None
) -> ImportReport:
    """Record what the host shows and the ledger lacks for one domain (under its lock, the
    read model caught up), appended in one batch; the report says what and why."""
    return learn(w, info, source, full=full, actor=actor)[0]


def learn(
    w: Writer,
    info: DomainInfo,
    source: str,
    *,
    full: bool = False,
    actor: str | None = None,
    record: bool = True,
) -> tuple[ImportReport, DomainState]:
    """:func:`reconcile`, also returning the domain's state with what was learned folded in;
    with ``record`` False nothing is appended nor settled (a dry run)."""
    hv, store = w.hypervisor, w.model.store
    report = ImportReport(domain=info.name)
    state = w.model.states.get(info.uuid) or DomainState(stream_id=info.uuid)
    intent = load_intent(store, info.uuid, state.version)
    names = hv.list_checkpoints(info.uuid)
    on_host = set(names)
    missing: list[str] = []
    unknown: list[str] = []
    if state.checkpoints.keys() != on_host:
        missing = [n for n in state.checkpoints if n not in on_host]
        unknown = [n for n in names if n not in state.checkpoints]
    if not (intent or unknown or missing or full):
        return report, state
    if full or missing:
        defs = {d.name or "": (d, x) for d, x in ((_parsed(x), x)
                                                  for x in hv.checkpoint_xmls(info.uuid))}
    else:
        defs = {n: (_parsed(x), x) for n, x in
                ((n, hv.checkpoint_xml(info.uuid, n)) for n in unknown)}
    if intent is not None and intent.op == "redefine" and intent.checkpoint in on_host \
            and intent.checkpoint not in defs:
        x = hv.checkpoint_xml(info.uuid, intent.checkpoint)
        defs[intent.checkpoint] = (_parsed(x), x)
    trial, pre = w.enrollment(info)
    trial = trial.clone()
    events: list[Event] = []

    def add(ev: Event) -> None:
        trial.apply(ev)
        events.append(ev)

    _gone(w, info, trial, state, missing, defs, intent, report, add)
    for n in names:  # parents first, as the hypervisor lists them
        entry = defs.get(n)
        if entry is None:
            continue
        d, x = entry
        mine = trial.get(n)
        if mine is None:
            add(observed(d, x, source))
            report.added.append(n)
        elif same_definition(mine.definition(), d):
            report.unchanged.append(n)
        elif same_checkpoint(mine.definition(), d) or (intent and intent.checkpoint == n):
            add(observed(d, x, source))  # its metadata changed (an outside redefine)
            report.changed.append(n)
        else:
            add(CheckpointGone(name=n, why="replaced", detail=(
                f"the host's {n} was created at {d.creation_time}, the ledger's at "
                f"{mine.creation_time}: another checkpoint took the name")))
            add(observed(d, x, source))
            report.replaced.append(n)
    if intent is not None:
        settled = _settle(intent, state, trial, on_host, report)
        if settled is not None:
            add(settled)
    if not record:
        return report, trial
    if pre or events:  # (an open intent is closed by the append)
        w.append(info, [*pre, *events], f"observed on {hv.uri} by {source}", actor=actor)
        if events:
            logging.getLogger(__name__).info(
                "%s: recorded what the host shows: %s", info.name,
                ", ".join(f"{e.type} {getattr(e, 'name', '') or getattr(e, 'checkpoint', '')}"
                          .strip() for e in events))
    elif intent is not None:
        save_intent(store, info.uuid, None)
    return report, trial


def _gone(
    w: Writer,
    info: DomainInfo,
    trial: DomainState,
    state: DomainState,
    missing: Sequence[str],
    defs: dict[str, tuple[CheckpointDef, str]],
    intent: Intent | None,
    report: ImportReport,
    add: object,
) -> None:
    """Events for checkpoints the ledger holds and the host lacks, deepest first."""
    if not missing:
        return
    assert callable(add)
    deleting = _intended_deletes(intent, state)
    try:
        bitmaps = w.hypervisor.observed_bitmaps(info.uuid)
    except LedgerError:
        bitmaps = None  # unreadable images: nothing is known gone
    in_images = {(disk, b["name"]) for disk, bms in (bitmaps or {}).items() for b in bms}
    depth = {n: i for i, n in enumerate(state.topological())}
    for n in sorted(missing, key=lambda n: -depth.get(n, 0)):
        cp = trial.get(n)
        if cp is None:
            continue
        owned = [(d.name, cp.bitmap_on(d.name)) for d in cp.disks if cp.bitmap_on(d.name)]
        why: GoneWhy
        if n in deleting:
            why, detail = "deleted", "deleted by an interrupted delete (settled from the host)"
        elif bitmaps is not None and owned and not any(b in in_images for b in owned):
            why, detail = "deleted-outside", (
                "its metadata and its bitmaps (" + ", ".join(f"{d}/{b}" for d, b in owned)
                + ") are gone from the host")
        else:
            report.missing_on_host.append(n)  # host loss: replay restores it
            continue
        reparented = {}
        for c in cp.children:
            theirs = defs.get(c)
            reparented[c] = theirs[0].parent if theirs is not None else cp.parent
        add(CheckpointGone(name=n, why=why, detail=detail, reparented=reparented))
        (report.deleted if why == "deleted" else report.deleted_outside).append(n)
    report.missing_on_host.reverse()  # parents first


def _intended_deletes(intent: Intent | None, state: DomainState) -> set[str]:
    """The checkpoints an open delete intent would remove."""
    if intent is None or intent.op != "delete" or intent.checkpoint not in state.checkpoints:
        return set()
    out = set(state.descendants(intent.checkpoint))
    if intent.flags.get("children_only"):
        return out
    if intent.flags.get("children"):
        return out | {intent.checkpoint}
    return {intent.checkpoint}


def _settle(
    intent: Intent,
    before: DomainState,
    after: DomainState,
    on_host: set[str],
    report: ImportReport,
) -> OperationSettled | None:
    """How an open intent ended, from the host (None: its events were already recorded)."""
    n = intent.checkpoint
    if intent.op == "create":
        if n in before.checkpoints:
            return None  # appended before the process stopped
        if not n:  # a name the hypervisor chose: a checkpoint observed since it was made
            made = [c.name for c in after.checkpoints.values()
                    if c.name not in before.checkpoints and c.creation_time >= int(intent.at)]
            n = made[0] if made else ""
        done = bool(n) and n in on_host
    elif intent.op == "delete":
        targets = _intended_deletes(intent, before)
        if targets and not targets & set(after.checkpoints):
            done = True
        elif n not in before.checkpoints:
            return None
        else:
            done = False
    elif intent.op == "replay":  # a batch of the ledger's own checkpoints
        names = [x for x in intent.flags.get("names", ()) if isinstance(x, str)]
        back = [x for x in names if x in on_host]
        report.settled.append(f"replay of {len(names)} from {n}: {len(back)} redefined")
        return OperationSettled(
            op="replay", checkpoint=n, outcome="done" if back else "not-done",
            attempted_at=intent.at, attempted_by=intent.actor,
            attempted_reason=intent.reason,
            detail=f"the hypervisor shows {len(back)} of the {len(names)} checkpoints "
            "the interrupted replay was redefining" + (f" (up to {back[-1]})" if back else ""))
    else:  # redefine
        if n in report.added or n in report.changed:
            done = True
        elif n in before.checkpoints:
            return None  # recorded already, or nothing to change
        else:
            done = False
    outcome: Literal["done", "not-done"] = "done" if done else "not-done"
    report.settled.append(f"{intent.op} {n or '(unnamed)'}: {outcome}")
    return OperationSettled(
        op=intent.op, checkpoint=n, outcome=outcome, attempted_at=intent.at,
        attempted_by=intent.actor, attempted_reason=intent.reason,
        detail="the hypervisor shows it was done" if done else
        "the hypervisor shows it was not done")
