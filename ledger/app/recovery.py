"""Learning from and restoring to a hypervisor: import, import-xml, replay and verify.

* import: append what the hypervisor has and the ledger does not (actor ``import``).
* import-xml: the same from a directory of checkpoint XML files, ordered by parent links.
* replay: redefine every live checkpoint of the ledger into the hypervisor, parents first.
* verify: compare the ledger, the hypervisor's metadata and the bitmaps really in the images
  (the ledger's side folded from each domain's events, not taken from a snapshot).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ledger.app import commands, sync
from ledger.app.sync import same_definition
from ledger.app.views import Finding, ImportReport, ReplayReport, ReplayStep, VerifyReport
from ledger.app.watch import Watcher
from ledger.app.writer import Writer
from ledger.domain import rules
from ledger.domain.checkpoint_xml import (
    MAX_XML_BYTES,
    format_checkpoint_xml,
    parse_checkpoint_xml,
)
from ledger.domain.domain_xml import parse_domain_xml
from ledger.domain.errors import LedgerError
from ledger.domain.events import BackupStarted, Event
from ledger.domain.model import CheckpointDef, DomainInfo
from ledger.domain.policies import plan as plan_disks
from ledger.domain.state import DomainState, drift_key
from ledger.log.fold import fold_rows
from ledger.log.store import EventStore, ScanRow

MAX_FILES = 100_000
SNAPSHOT_MISMATCH = "snapshot-mismatch"  # a finding about the ledger itself, never drift


def _learn(
    state: DomainState, defs: Sequence[tuple[CheckpointDef, str]], report: ImportReport
) -> list[Event]:
    """Redefine events for definitions the ledger lacks or has otherwise (folded on ``state``)."""
    events: list[Event] = []
    for d, xml in defs:
        assert d.name is not None
        known = state.get(d.name)
        if known is not None and same_definition(known.definition(), d):
            report.unchanged.append(d.name)
            continue
        (report.changed if known is not None else report.added).append(d.name)
        for ev in rules.redefined_events(state, d, xml):
            state.apply(ev)
            events.append(ev)
    return events


def import_domains(w: Writer, domains: Sequence[str],
                   progress: Callable[[int, int], None] | None = None) -> list[ImportReport]:
    """Bring the ledger up to what the host shows for ``domains`` (all the hypervisor's when
    empty): :func:`ledger.app.sync.reconcile` comparing every checkpoint's XML.
    ``progress(done, total)`` is told after each domain."""
    names = list(domains) or w.hypervisor.list_domains()
    reports = []
    for i, name in enumerate(names):
        if progress is not None:
            progress(i, len(names))
        with w.locked(name) as info:
            report = sync.reconcile(w, info, "import", full=True, actor="import")
            jobs = Watcher(w).job_events(info, None, [*report.added, *report.replaced])
            if jobs:
                w.append(info, jobs, f"observed on {w.hypervisor.uri} by import", actor="import")
                report.backups = [ev.job for ev in jobs if isinstance(ev, BackupStarted)]
            reports.append(report)
    if progress is not None:
        progress(len(names), len(names))
    return reports


def _read_dir(folder: Path) -> list[tuple[Path, CheckpointDef, str]]:
    if not folder.is_dir():
        raise LedgerError("INVALID_ARG", f"{folder} is not a directory")
    files = sorted(folder.glob("*.xml"))
    if not files:
        raise LedgerError("INVALID_ARG", f"no checkpoint XML files (*.xml) in {folder}")
    if len(files) > MAX_FILES:
        raise LedgerError("INVALID_ARG", f"more than {MAX_FILES} files in {folder}")
    out = []
    for f in files:
        try:  # never more than the cap is read: a huge (or sparse) file costs nothing
            with open(f, "rb") as fh:
                raw = fh.read(MAX_XML_BYTES + 1)
        except OSError as err:
            raise LedgerError("INVALID_ARG", f"cannot read {f}: {err.strerror}") from None
        if len(raw) > MAX_XML_BYTES:
            raise LedgerError("XML_ERROR", f"{f.name}: document is larger than "
                              f"{MAX_XML_BYTES} bytes", prefixed=False)
        try:
            d = parse_checkpoint_xml(raw, redefine=True)
        except LedgerError as err:
            raise LedgerError(err.code, f"{f.name}: {err.message}", prefixed=False,
                              hint=err.hint) from None
        out.append((f, d, raw.decode()))
    return out


def order_by_parents(
    items: list[tuple[Path, CheckpointDef, str]], known: set[str]
) -> list[tuple[Path, CheckpointDef, str]]:
    """Parents before children, by the parent links (never by file name or time): in rounds,
    each the checkpoints whose parent came in an earlier round (or is in the ledger, or none),
    sorted by (creation time, name). Linear in the number of files (plus the sorts)."""
    by_name: dict[str, tuple[Path, CheckpointDef, str]] = {}
    for item in items:
        name = item[1].name or ""
        if name in by_name:
            raise LedgerError(
                "INVALID_ARG",
                f"checkpoint {name} is defined twice: {by_name[name][0].name} and {item[0].name}",
            )
        by_name[name] = item
    children: dict[str, list[str]] = {}
    ready: list[str] = []
    for n, (_, d, _) in by_name.items():
        if d.parent is None or (d.parent in known and d.parent not in by_name):
            ready.append(n)
        else:
            children.setdefault(d.parent, []).append(n)

    def when(n: str) -> tuple[int, str]:
        return (by_name[n][1].creation_time or 0, n)

    ordered: list[tuple[Path, CheckpointDef, str]] = []
    while ready:
        ready.sort(key=when)
        ordered.extend(by_name[n] for n in ready)
        ready = [k for n in ready for k in children.pop(n, ())]
    if len(ordered) < len(items):
        placed = {d.name for _, d, _ in ordered}
        waiting = sorted(n for n in by_name if n not in placed)
        missing = sorted({by_name[n][1].parent or "" for n in waiting} - set(by_name) - known)
        if missing:
            raise LedgerError(
                "INVALID_ARG",
                f"parent {missing[0]} of checkpoint "
                f"{next(n for n in waiting if by_name[n][1].parent == missing[0])} "
                "is neither in the directory nor in the ledger",
            )
        raise LedgerError(
            "INVALID_ARG", f"the parent links of {', '.join(waiting)} form a cycle"
        )
    return ordered


def import_xml_dir(w: Writer, domain: str, folder: Path,
                   progress: Callable[[int, int], None] | None = None) -> ImportReport:
    """Import a directory of checkpoint XML (libvirt's or virtnbdbackup's) into the ledger;
    ``progress(done, total)`` is told as the files are checked."""
    items = _read_dir(folder)
    uuid = next((parse_domain_xml(d.domain_xml).uuid for _, d, _ in items if d.domain_xml), None)
    info = _info_for(w, domain, uuid)
    with w.model.store.lock(info.uuid):
        w.model.catch_up()
        state, pre = w.enrollment(info)
        trial = state.clone()
        ordered = order_by_parents(items, set(trial.checkpoints))
        defs = []
        for i, (path, d, _) in enumerate(ordered):
            if progress is not None:
                progress(i, len(ordered))
            try:
                embedded = None
                if d.domain_xml is not None:
                    dom = parse_domain_xml(d.domain_xml)
                    embedded = (dom.uuid, dom.disks)
                checked = rules.decide_redefine(trial, d, embedded)
            except LedgerError as err:
                raise LedgerError(err.code, f"{path.name}: {err.message}", prefixed=False,
                                  hint=err.hint) from None
            defs.append((checked, format_checkpoint_xml(checked)))
            trial.apply(rules.redefined_events(trial, checked, defs[-1][1])[0])
        report = ImportReport(domain=domain)
        events = _learn(state.clone(), defs, report)
        if pre or events:
            w.append(info, [*pre, *events], f"imported from {folder}", actor="import")
    if progress is not None:
        progress(len(ordered), len(ordered))
    return report


def _info_for(w: Writer, domain: str, uuid: str | None) -> DomainInfo:
    """The domain as the ledger, the hypervisor or the XML's <domain> knows it."""
    if domain in w.model.by_name:
        st = w.model.state(domain)
        if uuid and uuid.lower() != st.uuid.lower():
            raise LedgerError(
                "INVALID_ARG", f"the files are for domain uuid {uuid}, the ledger's {domain} "
                f"is {st.uuid}")
        return DomainInfo(name=st.name, uuid=st.uuid, running=False, policy=st.policy,
                          disks=st.disks)
    if w.has_hypervisor():
        return w.hypervisor.domain_info(domain)
    if uuid:
        return DomainInfo(name=domain, uuid=uuid, running=False, policy="independent")
    raise LedgerError(
        "NO_DOMAIN", f"domain {domain} is not in the ledger, the XML files carry no <domain>, "
        "and no hypervisor was given to look it up", hint="pass --hypervisor URI")


def replay(
    w: Writer,
    domains: Sequence[str],
    *,
    dry_run: bool = False,
    validate: bool = False,
    overwrite: bool = False,
    as_of: Any = None,
    progress: Callable[[int, int], None] | None = None,
    jobs: int = 1,
) -> list[ReplayReport]:
    """Redefine the ledger's live checkpoints into the hypervisor, parents first.

    First the ledger learns what the host shows (:func:`ledger.app.sync.reconcile`; not on a
    dry run): a checkpoint deleted outside is recorded gone, not restored. Never redefined:
    one whose bitmaps are gone from the images, an orphan (its parent unknown), and the
    descendants of either; each is reported with the reason. A dry run plans from what the
    ledger would learn, recording nothing.

    ``jobs`` domains are replayed at once (each in its own thread, its checkpoints in
    order), holding the ledger's locks of every domain replayed until the last ends. With
    one domain an error is raised; with several, each domain's error is its report's
    ``error`` and the others go on. ``progress(done, total)`` counts redefinitions over
    every domain."""
    names = list(dict.fromkeys(domains)) or w.model.domains()
    if jobs < 1:
        raise LedgerError("INVALID_ARG", f"jobs must be at least 1, not {jobs}")
    w.model.catch_up()
    counted = _Progress(progress)
    if len(names) == 1:
        return [_replay_domain(w, names[0], dry_run, validate, overwrite, as_of, counted)]
    infos: dict[str, DomainInfo] = {}
    reports: dict[str, ReplayReport] = {}
    for name in names:
        try:
            infos[name] = w.hypervisor.domain_info(name)
            w.model.state(name)  # decoded here, not in a worker
        except LedgerError as err:
            reports[name] = ReplayReport(domain=name, dry_run=dry_run, error=err.one_line())
    uuids = [info.uuid for info in infos.values()]
    with (w.model.store.lock_all(uuids) if not dry_run and as_of is None
          else contextlib.nullcontext()):
        w.model.catch_up()  # what other writers appended before the locks were taken

        def one(name: str) -> ReplayReport:
            try:
                return _replay_domain(w, name, dry_run, validate, overwrite, as_of, counted,
                                      info=infos[name], locked=True)
            except LedgerError as err:
                return ReplayReport(domain=name, dry_run=dry_run, error=err.one_line())

        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="replay") as pool:
            for report in pool.map(one, list(infos)):
                reports[report.domain] = report
    return [reports[n] for n in names]


class _Progress:
    """Redefinitions done over every domain, told to ``progress(done, total)``."""

    def __init__(self, progress: Callable[[int, int], None] | None) -> None:
        self.progress = progress
        self.done = 0
        self.total = 0
        self._lock = threading.Lock()

    def planned(self, count: int) -> None:
        with self._lock:
            self.total += count

    def one(self, _: int) -> None:
        with self._lock:
            self.done += 1
            if self.progress is not None:
                self.progress(self.done, self.total)


def _replay_domain(
    w: Writer,
    name: str,
    dry_run: bool,
    validate: bool,
    overwrite: bool,
    as_of: Any,
    counted: _Progress,
    *,
    info: DomainInfo | None = None,
    locked: bool = False,
) -> ReplayReport:
    """Replay one domain (``locked``: its lock is held already)."""
    if info is None:
        info = w.hypervisor.domain_info(name)
    _same_domain(w, name, info)
    if as_of is not None:
        state = w.model.state_at(name, as_of)
    elif dry_run:  # what a replay would learn first, without recording it
        learned, state = sync.learn(w, info, "replay", full=True, record=False)
    else:
        with _domain_lock(w, info.uuid, locked) as info:
            learned = sync.reconcile(w, info, "replay", full=True)
        state = w.model.state(name)
    host = {}
    for x in w.hypervisor.checkpoint_xmls(info.uuid):
        d = parse_checkpoint_xml(x, redefine=True)
        host[d.name or ""] = d
    report = ReplayReport(domain=name, dry_run=dry_run)
    report.unknown_on_host = sorted(n for n in host if n not in state.checkpoints)
    blocked = _unrestorable(w, info.uuid, state, host)
    todo = []
    for n in replay_order(state):
        mine = state.checkpoints[n].definition()
        theirs = host.get(n)
        if theirs is not None and same_definition(mine, theirs):
            report.steps.append(ReplayStep(name=n, action="skip", why="already defined"))
        elif n in blocked:
            report.steps.append(ReplayStep(name=n, action="skip", why=blocked[n]))
        elif theirs is not None and not overwrite:
            report.steps.append(ReplayStep(
                name=n, action="conflict", why="defined differently on the host "
                "(overwrite replaces it)"))
        else:
            todo.append(n)
            report.steps.append(ReplayStep(name=n, action="redefine"))
    if as_of is None:
        for n in learned.deleted_outside:
            report.steps.append(ReplayStep(
                name=n, action="skip", why="deleted outside the ledger, its bitmaps gone "
                "from the images: recorded gone, not restored"))
    logging.getLogger(__name__).info(
        "%s: %s %d checkpoint(s), %d skipped", name, "would redefine" if dry_run else
        "redefining", len(todo), len(report.steps) - len(todo))
    if not dry_run and todo:
        counted.planned(len(todo))
        with _domain_lock(w, info.uuid, locked) as info:
            commands.redefine_all_locked(
                w, info, [state.checkpoints[n].definition() for n in todo], validate,
                "replay", counted.one)
    return report


@contextmanager
def _domain_lock(w: Writer, name: str, held: bool) -> Iterator[DomainInfo]:
    """:meth:`Writer.locked`, or only the domain as the hypervisor shows it when ``held``."""
    if held:
        yield w.hypervisor.domain_info(name)
        return
    with w.locked(name) as info:
        yield info


def _same_domain(w: Writer, name: str, info: DomainInfo) -> None:
    state = w.model.state(name)
    if info.uuid.lower() != state.uuid.lower():
        raise LedgerError(
            "INVALID_ARG", f"domain {name} has uuid {info.uuid} on {w.hypervisor.uri} but "
            f"{state.uuid} in the ledger: refusing to replay into another domain")


def _unrestorable(
    w: Writer, domain: str, state: DomainState, host: dict[str, CheckpointDef]
) -> dict[str, str]:
    """The live checkpoints replay must not redefine, each with why: the host lacks it and
    its bitmaps are gone (from the images, or known gone to the ledger), its parent is
    unknown, or an ancestor is skipped."""
    out: dict[str, str] = {}
    absent = [n for n in state.checkpoints if n not in host]
    if not absent:
        return out
    try:
        images: dict[str, list[dict[str, Any]]] | None = w.hypervisor.observed_bitmaps(domain)
    except LedgerError:
        images = None
    in_images = {(disk, b["name"]) for disk, bms in (images or {}).items() for b in bms}
    for n in state.topological():
        cp = state.checkpoints[n]
        if n in host:
            continue
        if cp.parent is not None and cp.parent in out:
            out[n] = f"its parent {cp.parent} is skipped"
            continue
        if cp.parent is not None and cp.parent not in state.checkpoints:
            out[n] = f"orphan: its parent {cp.parent} is not known to the ledger"
            continue
        owned = [(d.name, b) for d in cp.disks if (b := cp.bitmap_on(d.name))]
        believed = [(d, b) for d, b in owned if b not in state.bitmaps.get(d, {})]
        if owned and believed:
            out[n] = ("bitmaps known gone: "
                      + ", ".join(f"{d}/{b}" for d, b in believed))
        elif owned and images is not None and not any(b in in_images for b in owned):
            out[n] = ("its bitmaps are gone from the images: "
                      + ", ".join(f"{d}/{b}" for d, b in owned))
    return out


def replay_order(state: DomainState) -> list[str]:
    """Parents first, the path to the current checkpoint before its siblings.

    libvirt makes a redefined checkpoint current when its parent is current (or there is
    none), so walking the current's branch first leaves it current at the end.
    """
    on_path = {cp.name for cp in state.ancestors(state.current)}

    def first(names: list[str]) -> list[str]:
        return sorted(names, key=lambda k: (k not in on_path, k))

    out: list[str] = []
    stack = first(state.roots())[::-1]  # pre-order without recursion: any chain length
    while stack:
        n = stack.pop()
        out.append(n)
        stack.extend(first(state.checkpoints[n].children)[::-1])
    return out


def verify(w: Writer, domains: Sequence[str], record: bool = False) -> list[VerifyReport]:
    """Compare ledger, hypervisor metadata and real bitmaps for each domain."""
    names = list(domains) or w.model.domains()
    return [_verify_one(w, n, record) for n in names]


def from_events(store: EventStore, stream_id: str) -> tuple[DomainState, set[str]]:
    """One domain's state folded afresh from its own stream (ledger/log/fold.py), and every
    name it has had (an empty state when the store holds no event of it)."""
    states: dict[str, DomainState] = {}
    names: dict[str, str] = {}
    page: list[ScanRow] = []
    for rec in store.read_stream(stream_id):
        page.append((rec.position, rec.stream_id, rec.stream_version, rec.schema_version,
                     rec.payload))
        if len(page) >= 1024:
            fold_rows(states, names, [page], _nothing)
            page = []
    fold_rows(states, names, [page], _nothing)
    return states.get(stream_id) or DomainState(stream_id=stream_id), set(names)


def _nothing(position: int, count: int) -> None:
    pass


def _verify_one(w: Writer, name: str, record: bool) -> VerifyReport:
    projected = w.model.state(name)
    # answer from the events: the projection may come from a snapshot nobody verified
    state, names = from_events(w.model.store, projected.stream_id)
    hv = w.hypervisor
    info = hv.domain_info(name)
    report = VerifyReport(domain=name, ok=True)
    if name not in names or state.to_dict() != projected.to_dict():
        report.findings.append(Finding(
            kind=SNAPSHOT_MISMATCH,
            detail="the ledger's projection of this domain (from its snapshot) is not what "
            "its events say; this report is built from the events; a rebuild replaces "
            "the snapshot"))
    if info.uuid.lower() != state.uuid.lower():
        report.findings.append(Finding(kind="uuid-mismatch", detail=f"host {info.uuid}, "
                                       f"ledger {state.uuid}"))
    host = {}
    for x in hv.checkpoint_xmls(info.uuid):
        d = parse_checkpoint_xml(x, redefine=True)
        host[d.name or ""] = d
    for n in state.topological():
        if n not in host:
            report.findings.append(Finding(kind="missing-on-host", checkpoint=n,
                                           detail="in the ledger, not in the hypervisor"))
        elif host[n].parent != state.checkpoints[n].parent:
            report.findings.append(Finding(
                kind="parent-mismatch", checkpoint=n,
                detail=f"ledger parent {state.checkpoints[n].parent}, host {host[n].parent}"))
    for n in state.orphans():
        report.findings.append(Finding(
            kind="orphan", checkpoint=n,
            detail=f"its parent {state.checkpoints[n].parent} is not known to the ledger"))
    for n in sorted(set(host) - set(state.checkpoints)):
        report.findings.append(Finding(kind="extra-on-host", checkpoint=n,
                                       detail="in the hypervisor, not in the ledger"))
    report.findings.extend(_bitmap_findings(state, hv.observed_bitmaps(info.uuid), info.running))
    trial = state.clone()
    drift = [Finding.to_event(f) for f in report.findings if f.kind != SNAPSHOT_MISMATCH]
    for ev in drift:
        trial.apply(ev)
    for n in state.topological():
        before, after = plan_disks(state, n), plan_disks(trial, n)
        for disk, p in after.items():
            if p.mode == "full" and before.get(disk) and before[disk].mode != "full":
                report.unusable_plans.setdefault(n, {})[disk] = p.reason or "full"
    report.ok = not report.findings
    if record:
        new = [ev for ev in drift
               if drift_key(ev.kind, ev.checkpoint, ev.disk, ev.bitmap) not in state.drift]
        if new:
            w.append(info, new, "verify", actor="verify")
        report.recorded = len(new)
    return report


def _bitmap_findings(
    state: DomainState, observed: dict[str, list[dict[str, Any]]], running: bool
) -> list[Finding]:
    out: list[Finding] = []
    owned: dict[str, set[str]] = {}
    for cp in state.checkpoints.values():
        for disk in cp.disks:
            bitmap = cp.bitmap_on(disk.name)
            if bitmap is None:
                continue
            owned.setdefault(disk.name, set()).add(bitmap)
            seen = {b["name"]: b for b in observed.get(disk.name, [])}
            b = seen.get(bitmap)
            mine = state.bitmaps.get(disk.name, {}).get(bitmap)
            if b is None:
                out.append(Finding(kind="bitmap-missing", checkpoint=cp.name, disk=disk.name,
                                   bitmap=bitmap, detail=f"bitmap {bitmap} is not on {disk.name}"))
            elif b.get("inconsistent") or b.get("in_use"):
                why = "in-use on an image that is not open (not closed cleanly)" if not running \
                    else "inconsistent (QEMU did not close the image cleanly)"
                out.append(Finding(kind="bitmap-inconsistent", checkpoint=cp.name,
                                   disk=disk.name, bitmap=bitmap, detail=why))
            elif mine is not None and mine.active and not b.get("recording"):
                out.append(Finding(kind="bitmap-not-recording", checkpoint=cp.name,
                                   disk=disk.name, bitmap=bitmap,
                                   detail=f"bitmap {bitmap} on {disk.name} is not recording"))
    for target, bms in observed.items():
        for b in bms:
            if b["name"] not in owned.get(target, set()):
                out.append(Finding(
                    kind="orphan-bitmap", disk=target, bitmap=b["name"],
                    detail=f"no live checkpoint owns bitmap {b['name']} on {target}"))
    return out

