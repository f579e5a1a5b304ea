"""The write commands: create, redefine and delete a checkpoint, and record what happened.

Each runs check -> apply -> append under the domain's lock: libvirt's rules decide
(ledger/domain/rules.py) before the hypervisor is asked, and the events are derived from the
hypervisor's answer, then appended through the :class:`~ledger.app.writer.Writer`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ledger.app.views import CheckpointView, DeleteResult, checkpoint_view
from ledger.app.writer import Writer
from ledger.domain import rules
from ledger.domain.checkpoint_xml import create_request_xml, parse_checkpoint_xml, parse_diskspec
from ledger.domain.domain_xml import parse_domain_xml
from ledger.domain.events import Event
from ledger.domain.hypervisor import PartialDelete
from ledger.domain.model import CheckpointDef, CheckpointDisk, DomainInfo
from ledger.domain.state import DomainState


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
    request = _request(name, disks, description)
    with w.correlated(correlation_id), w.locked(domain) as info:
        state, pre = w.enrollment(info)
        rules.decide_create(state, info, request, int(time.time()))
        xml = w.hypervisor.create_checkpoint(domain, request_xml(request))
        actual = parse_checkpoint_xml(xml, redefine=True)
        w.record(info, lambda st: rules.created_events(st, actual, xml), reason)
    assert actual.name is not None
    return checkpoint_view(w.model.state(domain), actual.name)

def _request(
    name: str | None,
    disks: Sequence[str | CheckpointDisk] | None,
    description: str | None,
) -> CheckpointDef:
    parsed = None
    if disks:
        parsed = tuple(d if isinstance(d, CheckpointDisk) else parse_diskspec(d) for d in disks)
    request = CheckpointDef(name=name, description=description, disks=parsed)
    parse_checkpoint_xml(request_xml(request))  # the schema checks, as libvirt's
    return request

def request_xml(request: CheckpointDef) -> str:
    return create_request_xml(request.name, request.description, request.disks)

def print_xml(
    name: str | None = None,
    disks: Sequence[str | CheckpointDisk] | None = None,
    description: str | None = None,
) -> str:
    """The XML ``create`` would send (``--print-xml``); creates nothing."""
    return request_xml(_request(name, disks, description))

def redefine(
    w: Writer,
    domain: str,
    xml: str | bytes,
    validate: bool = False,
    reason: str | None = None,
    correlation_id: str | None = None,
) -> CheckpointView:
    """Redefine a checkpoint from its XML (``checkpoint-create --redefine``)."""
    request = parse_checkpoint_xml(xml, redefine=True)
    embedded = None
    if request.domain_xml is not None:
        dom = parse_domain_xml(request.domain_xml)
        embedded = (dom.uuid, dom.disks)
    with w.correlated(correlation_id), w.locked(domain) as info:
        state, pre = w.enrollment(info)
        rules.decide_redefine(state, request, embedded)
        text = xml.decode() if isinstance(xml, bytes) else xml
        out = w.hypervisor.redefine_checkpoint(domain, text, validate=validate)
        actual = parse_checkpoint_xml(out, redefine=True)
        w.record(
            info, lambda st: rules.redefined_events(st, actual, out, validate), reason
        )
    assert actual.name is not None
    return checkpoint_view(w.model.state(domain), actual.name)

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
        state, pre = w.enrollment(info)
        flags: dict[str, Any] = dict(
            children=children, children_only=children_only, metadata_only=metadata_only
        )
        events = rules.decide_delete(state, name, **flags)
        try:
            w.hypervisor.delete_checkpoint(domain, name, **flags)
        except PartialDelete as partial:
            _record_partial(w, info, state, pre, name, partial, reason)
            raise partial.error from None
        w.record(info, lambda st: rules.decide_delete(st, name, **flags), reason)
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
        xml = w.hypervisor.checkpoint_xml(info.name, child)
        events.extend(rules.redefined_events(state, moved, xml))
    if len(events) > len(pre):
        w.append(info, events, reason or f"partial delete of {name}: {partial.error}")
