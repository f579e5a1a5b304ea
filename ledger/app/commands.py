"""The write commands: create, redefine and delete a checkpoint, and record what happened.

Each runs check -> apply -> append under the domain's lock: libvirt's rules decide
(ledger/domain/rules.py) before the hypervisor is asked, and the events are derived from the
hypervisor's answer, then appended through the :class:`~ledger.app.writer.Writer`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from ledger.app import faults, sync
from ledger.app.views import CheckpointView, DeleteResult, checkpoint_view
from ledger.app.writer import Writer
from ledger.domain import rules
from ledger.domain.checkpoint_xml import (
    create_request_xml,
    format_checkpoint_xml,
    parse_checkpoint_xml,
    parse_diskspec,
)
from ledger.domain.domain_xml import parse_domain_xml
from ledger.domain.errors import LedgerError, no_checkpoint
from ledger.domain.events import CheckpointGone, Event
from ledger.domain.hypervisor import PartialDelete
from ledger.domain.model import CheckpointDef, CheckpointDisk, DomainInfo
from ledger.domain.state import DomainState
from ledger.log.intents import Intent, save_intent


def create(
    w: Writer,
    domain: str,
    name: str | None = None,
    disks: Sequence[str | CheckpointDisk] | None = None,
    description: str | None = None,
    reason: str | None = None,
    correlation_id: str | None = None,
) -> CheckpointView:
    """Create a checkpoint (``virsh checkpoint-create-as``) and record what was made."""
    request, text = _request(name, disks, description)
    with w.correlated(correlation_id), w.locked(domain) as info:
        sync.reconcile(w, info, "create")
        state, pre = w.enrollment(info)
        rules.decide_create(state, info, request, int(time.time()))
        xml = _applied(w, info, "create", request.name or "", reason,
                       lambda: w.hypervisor.create_checkpoint(info.uuid, text))
        actual = parse_checkpoint_xml(xml, redefine=True,
                                      known_domain=state.newest_domain_xml or info.domain_xml)
        w.record(info, lambda st: [*_unknown_parents(w, info.uuid, st, actual.parent, "create"),
                                   *rules.created_events(st, actual, xml)], reason)
        _done(w, info)
        assert actual.name is not None
        return _made(w, info, actual.name)

def _applied(w: Writer, info: DomainInfo, op: str, checkpoint: str, reason: str | None,
             call: Any, flags: dict[str, Any] | None = None) -> Any:
    """``call()`` (the hypervisor's change) with its :class:`Intent` (``op`` on
    ``checkpoint``, by the writer's actor, why) open around it: saved before (at the
    domain's stream version: the append of the operation's events closes it), cleared when
    the hypervisor refuses. Crash points before and after the call (ledger/app/faults.py)."""
    state = w.model.states.get(info.uuid)
    intent = Intent(op, checkpoint, time.time(), w.actor, reason or w.reason, flags or {},
                    state.version if state is not None else 0)
    save_intent(w.model.store, info.uuid, intent)
    faults.point("before-hypervisor")
    try:
        out = call()
    except LedgerError:
        save_intent(w.model.store, info.uuid, None)  # refused: nothing to settle
        raise
    faults.point("after-hypervisor")
    return out


def _done(w: Writer, info: DomainInfo) -> None:
    """The operation's events are appended (which closed its intent)."""
    faults.point("after-append")


def _made(w: Writer, info: DomainInfo, name: str) -> CheckpointView:
    """The view of checkpoint ``name`` as the command left it: read under the domain's lock,
    from the state its append just folded (no other writer can have changed it since)."""
    return checkpoint_view(w.model.states[info.uuid], name)


def _unknown_parents(
    w: Writer, domain: str, state: DomainState, parent: str | None, source: str
) -> list[Event]:
    """Observed events for the ancestors the hypervisor's answer names and the ledger has
    not recorded (another tool made them meanwhile), oldest first."""
    chain: list[Event] = []
    seen: set[str] = set()
    while parent is not None and parent not in state.checkpoints and parent not in seen:
        seen.add(parent)
        try:
            xml = w.hypervisor.checkpoint_xml(domain, parent)
        except LedgerError:
            break  # gone again meanwhile: the checkpoint stays an orphan, shown as one
        d = parse_checkpoint_xml(xml, redefine=True)
        chain.append(sync.observed(d, xml, source))
        parent = d.parent
    return chain[::-1]


def _request(
    name: str | None,
    disks: Sequence[str | CheckpointDisk] | None,
    description: str | None,
) -> tuple[CheckpointDef, str]:
    """The request and the document sent for it, checked against the schema as libvirt
    checks it."""
    parsed = None
    if disks:
        parsed = tuple(d if isinstance(d, CheckpointDisk) else parse_diskspec(d) for d in disks)
    request = CheckpointDef(name=name, description=description, disks=parsed)
    text = create_request_xml(request.name, request.description, request.disks)
    parse_checkpoint_xml(text)
    return request, text

def print_xml(
    name: str | None = None,
    disks: Sequence[str | CheckpointDisk] | None = None,
    description: str | None = None,
) -> str:
    """The XML ``create`` would send (``--print-xml``); creates nothing."""
    return _request(name, disks, description)[1]

def redefine(
    w: Writer,
    domain: str,
    xml: str | bytes,
    validate: bool = False,
    reason: str | None = None,
    correlation_id: str | None = None,
) -> CheckpointView:
    """Redefine a checkpoint from its XML (``checkpoint-create --redefine``)."""
    request = parse_checkpoint_xml(xml, redefine=True)  # bad input: refused before the lock
    if request.domain_xml is not None:
        parse_domain_xml(request.domain_xml)
    with w.correlated(correlation_id), w.locked(domain) as info:
        sync.reconcile(w, info, "redefine")
        return redefine_locked(w, info, xml, validate, reason)


def redefine_locked(
    w: Writer, info: DomainInfo, xml: str | bytes, validate: bool, reason: str | None
) -> CheckpointView:
    """:func:`redefine` under the domain's lock already taken (``replay`` holds it across
    many)."""
    request = parse_checkpoint_xml(xml, redefine=True)
    embedded = None
    if request.domain_xml is not None:
        dom = parse_domain_xml(request.domain_xml)
        embedded = (dom.uuid, dom.disks)
    state, pre = w.enrollment(info)
    rules.decide_redefine(state, request, embedded)
    text = xml.decode() if isinstance(xml, bytes) else xml
    assert request.name is not None
    out = _applied(w, info, "redefine", request.name, reason,
                   lambda: w.hypervisor.redefine_checkpoint(info.uuid, text, validate=validate))
    actual = parse_checkpoint_xml(out, redefine=True)
    w.record(info, lambda st: rules.redefined_events(st, actual, out, validate), reason)
    _done(w, info)
    assert actual.name is not None
    return _made(w, info, actual.name)


REPLAY_BATCH = 200  # redefinitions per intent and per append


def redefine_all_locked(
    w: Writer,
    info: DomainInfo,
    definitions: Sequence[CheckpointDef],
    validate: bool,
    reason: str | None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Redefine ``definitions`` (checkpoints the ledger holds, parents first) under the
    domain's lock already taken, and record each as :func:`redefine_locked` does.

    In batches of :data:`REPLAY_BATCH`: one intent (``replay``, naming the batch) before
    the hypervisor's calls and one append after them, so the store costs two writes a
    batch. Each is recorded with the text libvirt holds: the last of a batch is read back,
    and when it is not the text sent, every one of the batch is. A refusal records the ones
    before it, then raises. Returns how many were redefined; ``progress`` is called after
    each."""
    embedded_of: dict[str, tuple[str | None, tuple[Any, ...]]] = {}
    done = 0
    for start in range(0, len(definitions), REPLAY_BATCH):
        batch = definitions[start:start + REPLAY_BATCH]
        state, _ = w.enrollment(info)
        texts = []
        for d in batch:
            if d.domain_xml is None and info.domain_xml is not None:
                d = d.model_copy(update={"domain_xml": info.domain_xml})
            embedded = None
            if d.domain_xml is not None:
                if d.domain_xml not in embedded_of:
                    dom = parse_domain_xml(d.domain_xml)
                    embedded_of[d.domain_xml] = (dom.uuid, dom.disks)
                embedded = embedded_of[d.domain_xml]
            rules.decide_redefine(state, d, embedded)
            texts.append(format_checkpoint_xml(d))
        done += _redefine_batch(w, info, [d.name or "" for d in batch], texts, validate,
                                reason, None if progress is None else
                                lambda i, base=done: progress(base + i))  # type: ignore[misc]
    return done


def _redefine_batch(
    w: Writer,
    info: DomainInfo,
    names: list[str],
    texts: list[str],
    validate: bool,
    reason: str | None,
    progress: Callable[[int], None] | None,
) -> int:
    taken: list[str] = []

    def run() -> None:
        for text in texts:
            w.hypervisor.redefine_checkpoint(info.uuid, text, validate, read_back=False)
            taken.append(text)
            if progress:
                progress(len(taken))

    try:
        _applied(w, info, "replay", names[0], reason, run, {"names": names})
    except LedgerError as refused:
        if taken:  # the ones the hypervisor took before refusing are recorded
            try:
                held = _held(w, info, names, taken)
            except LedgerError:  # unreadable now: the next command observes them
                raise refused from None
            _record_redefined(w, info, held, validate, reason)
        raise
    _record_redefined(w, info, _held(w, info, names, taken), validate, reason)
    _done(w, info)
    return len(taken)


def _held(w: Writer, info: DomainInfo, names: list[str], sent: list[str]) -> list[str]:
    """What the hypervisor holds for the checkpoints redefined from ``sent``: the texts sent,
    when libvirt's text of the last one is the text sent (libvirt formats what it parsed, and
    the ledger formats as libvirt does); otherwise each one's text, read back."""
    if w.hypervisor.checkpoint_xml(info.uuid, names[len(sent) - 1]) == sent[-1]:
        return sent
    return [w.hypervisor.checkpoint_xml(info.uuid, n) for n in names[:len(sent)]]


def _record_redefined(
    w: Writer, info: DomainInfo, outs: Sequence[str], validate: bool, reason: str | None
) -> None:
    state = w.model.states.get(info.uuid)
    # the domain XML the texts probably embed: the newest checkpoint's, else the domain's own
    # (which replay embeds in checkpoints recorded without one)
    known = (state.newest_domain_xml if state is not None else None) or \
        (info.domain_xml.strip() if info.domain_xml else None)
    actual = [(parse_checkpoint_xml(out, redefine=True, known_domain=known), out)
              for out in outs]
    w.record(info, lambda st: [ev for d, out in actual
                               for ev in rules.redefined_events(st, d, out, validate)], reason)


def delete(
    w: Writer,
    domain: str,
    name: str,
    *,
    children: bool = False,
    children_only: bool = False,
    metadata_only: bool = False,
    reason: str | None = None,
    correlation_id: str | None = None,
) -> DeleteResult:
    """Delete a checkpoint (``virsh checkpoint-delete``) and record what happened."""
    rules.check_delete_flags(children, children_only)
    with w.correlated(correlation_id), w.locked(domain) as info:
        sync.reconcile(w, info, "delete")
        state, pre = w.enrollment(info)
        flags: dict[str, Any] = dict(
            children=children, children_only=children_only, metadata_only=metadata_only
        )
        events = rules.decide_delete(state, name, **flags)
        try:
            _applied(w, info, "delete", name, reason,
                     lambda: w.hypervisor.delete_checkpoint(info.uuid, name, **flags), flags)
        except PartialDelete as partial:
            _record_partial(w, info, state, pre, name, partial, reason)
            save_intent(w.model.store, info.uuid, None)
            raise partial.error from None
        w.record(info, lambda st: rules.decide_delete(st, name, **flags), reason)
        _done(w, info)
    deleted = events[-1]
    return DeleteResult(
        name=name,
        deleted=list(getattr(deleted, "deleted", [])),
        reparented=dict(getattr(deleted, "reparented", {})),
        children_only=children_only,
    )

def _record_partial(
    w: Writer,
    info: DomainInfo,
    state: DomainState,
    pre: list[Event],
    name: str,
    partial: PartialDelete,
    reason: str | None,
) -> None:
    """Record the reparenting a failed qemu delete did before it failed (§5.2 item 3)."""
    events: list[Event] = list(pre)
    for child, new_parent in partial.reparented.items():
        cp = state.get(child)
        if cp is None:
            continue
        moved = cp.definition().model_copy(update={"parent": new_parent})
        xml = w.hypervisor.checkpoint_xml(info.uuid, child)
        events.extend(rules.redefined_events(state, moved, xml))
    if len(events) > len(pre):
        w.append(info, events, reason or f"partial delete of {name}: {partial.error}")


def _on_host(w: Writer, uuid: str) -> list[str]:
    """The checkpoints the hypervisor has for the domain with ``uuid``: none when it has no
    such domain (undefined, or replaced by another of the same name)."""
    try:
        return w.hypervisor.list_checkpoints(uuid)
    except LedgerError as err:
        if err.code == "NO_DOMAIN":
            return []
        raise


def forget(w: Writer, domain: str, name: str, reason: str) -> None:
    """Record by hand that checkpoint ``name`` is gone (a ``CheckpointGone``, why
    ``forgotten``, with who and ``reason``): the ledger stops showing and replaying it, its
    children move to its parent. Refused while the hypervisor (when given) still has it on
    the same domain (by UUID)."""
    if not reason or not reason.strip():
        raise LedgerError("INVALID_ARG", "forgetting a checkpoint needs a reason")
    state = w.model.state(domain)
    info = DomainInfo(name=state.name, uuid=state.uuid, running=False, policy=state.policy,
                      disks=state.disks)
    with w.model.store.lock(info.uuid):
        w.model.catch_up()
        state = w.model.state(domain)
        cp = state.get(name)
        if cp is None:
            raise no_checkpoint(name)
        if w.has_hypervisor() and name in _on_host(w, info.uuid):
            raise LedgerError(
                "OPERATION_INVALID", f"checkpoint {name} is still on {w.hypervisor.uri}",
                hint=f"`ckpt-ledger delete {domain} {name}` deletes it there and here")
        w.append(info, [CheckpointGone(name=name, why="forgotten", detail=reason.strip(),
                                       reparented={c: cp.parent for c in cp.children})],
                 reason.strip())
