"""libvirt's checkpoint rules as pure functions: state + command -> definition or events.

Each ``decide_*`` raises :class:`LedgerError` with libvirt's error code when the command
breaks a rule, and then nothing is appended. The order of the checks follows libvirt's, so
the first error a user sees is the one virsh would show (docs/libvirt-checkpoints.md §2.3, §3.3,
§5 and the checklist in §9).
"""

from __future__ import annotations

from ledger.domain.errors import LedgerError, no_checkpoint
from ledger.domain.events import CheckpointCreated, CheckpointDeleted, CheckpointRedefined, Event
from ledger.domain.model import CheckpointDef, CheckpointDisk, DomainDisk, DomainInfo
from ledger.domain.names import check_checkpoint_name, check_disk_name
from ledger.domain.policies import on_create, on_delete
from ledger.domain.state import DomainState


def _unsupported(detail: str) -> LedgerError:
    return LedgerError("CONFIG_UNSUPPORTED", detail)


def _find_disk(disks: tuple[DomainDisk, ...], name: str) -> DomainDisk | None:
    for d in disks:
        if d.name == name:
            return d
    by_path = [d for d in disks if d.source is not None and d.source == name]
    return by_path[0] if len(by_path) == 1 else None


def align_disks(
    requested: tuple[CheckpointDisk, ...] | None,
    domain_disks: tuple[DomainDisk, ...],
    checkpoint_name: str,
) -> tuple[CheckpointDisk, ...]:
    """``virDomainCheckpointAlignDisks``: validate the requested disks and fill in defaults.

    The result lists every domain disk in the domain's order.
    """
    listed = requested or ()
    if len(listed) > len(domain_disks):
        raise _unsupported("too many disk checkpoint requests for domain")
    if not domain_disks:
        raise _unsupported("domain must have at least one disk to perform checkpoints")
    chosen: dict[str, CheckpointDisk] = {}
    for req in listed:
        check_disk_name(req.name)
        disk = _find_disk(domain_disks, req.name)
        if disk is None:
            raise _unsupported(f"no disk named '{req.name}'")
        if disk.name in chosen:
            raise _unsupported(f"disk '{req.name}' specified twice")
        if (disk.empty or disk.readonly) and req.checkpoint != "no":
            raise _unsupported(f"disk '{req.name}' is empty or readonly")
        if req.checkpoint == "no" and req.bitmap is not None:
            raise LedgerError(
                "XML_INVALID_SCHEMA", f"disk '{req.name}' has checkpoint='no' and a bitmap"
            )
        chosen[disk.name] = req.model_copy(update={"name": disk.name})
    out: list[CheckpointDisk] = []
    for disk in domain_disks:
        if disk.name in chosen:
            entry = chosen[disk.name]
        elif requested is None and not (disk.empty or disk.readonly):
            entry = CheckpointDisk(name=disk.name, checkpoint="bitmap")
        else:
            entry = CheckpointDisk(name=disk.name, checkpoint="no")
        out.append(entry)
    return assign_bitmap_names(tuple(out), checkpoint_name)


def assign_bitmap_names(
    disks: tuple[CheckpointDisk, ...], checkpoint_name: str
) -> tuple[CheckpointDisk, ...]:
    """Every bitmap disk without a bitmap name gets the checkpoint's name."""
    return tuple(
        d.model_copy(update={"bitmap": checkpoint_name})
        if d.checkpoint == "bitmap" and not d.bitmap
        else d
        for d in disks
    )


def qemu_create_checks(definition: CheckpointDef, info: DomainInfo) -> None:
    """The QEMU driver's extra create checks (qemuCheckpointPrepare, §3.4)."""
    for disk in definition.bitmap_disks():
        if disk.bitmap != definition.name:
            raise _unsupported(
                f"bitmap for disk '{disk.name}' must match checkpoint name '{definition.name}'"
            )
        dom_disk = _find_disk(info.disks, disk.name)
        fmt = dom_disk.format if dom_disk else "none"
        if fmt != "qcow2":
            raise _unsupported(
                f"checkpoint for disk {disk.name} unsupported for storage type {fmt}"
            )


def decide_create(
    state: DomainState,
    info: DomainInfo,
    request: CheckpointDef,
    now: int,
    *,
    qemu_rules: bool = False,
) -> CheckpointDef:
    """Validate a create (not a redefine) and return the checkpoint libvirt would make.

    ``request.parent`` and ``request.creation_time`` are ignored, as libvirt ignores them.
    """
    if not info.running:
        raise LedgerError(
            "OPERATION_UNSUPPORTED", "cannot create checkpoint for inactive domain"
        )
    name = check_checkpoint_name(request.name if request.name is not None else str(now))
    disks = align_disks(request.disks, info.disks, name)
    definition = CheckpointDef(
        name=name,
        description=request.description,
        parent=state.current,
        creation_time=now,
        disks=disks,
        domain_xml=info.domain_xml,
    )
    if qemu_rules:
        qemu_create_checks(definition, info)
    if name in state.checkpoints:
        raise LedgerError("OPERATION_FAILED", f"domain moment {name} already exists")
    return definition


def created_events(state: DomainState, actual: CheckpointDef, xml: str) -> list[Event]:
    """The events for a checkpoint the hypervisor really created (``actual`` is its XML)."""
    assert actual.name is not None and actual.creation_time is not None
    created = CheckpointCreated(
        name=actual.name,
        parent=actual.parent,
        creation_time=actual.creation_time,
        description=actual.description,
        disks=actual.disks or (),
        domain_xml=actual.domain_xml,
        xml=xml,
    )
    return [*on_create(state, actual), created]


def check_parent(state: DomainState, name: str, parent: str | None) -> None:
    """``virDomainMomentCheckCycles``: the parent exists, is not ``name``, makes no cycle."""
    if parent is None:
        return
    check_checkpoint_name(parent, "parent name")
    if parent == name:
        raise LedgerError("INVALID_ARG", f"cannot set moment {name} as its own parent")
    if parent not in state.checkpoints:
        raise LedgerError("INVALID_ARG", f"parent {parent} for moment {name} not found")
    known = state.checkpoints.get(name)
    if known is not None and known.parent == parent:
        return  # the tree is acyclic and keeps its shape
    if known is not None and any(cp.name == name for cp in state.ancestors(parent)):
        raise LedgerError("INVALID_ARG", f"parent {parent} would create cycle to {name}")


def decide_redefine(
    state: DomainState,
    request: CheckpointDef,
    embedded: tuple[str | None, tuple[DomainDisk, ...]] | None,
) -> CheckpointDef:
    """Validate a REDEFINE and return the definition to store (§3.3, §9 rules 9-11).

    ``embedded`` is ``(uuid, disks)`` of the request's ``<domain>``, if it had one.
    """
    if request.name is None:
        raise LedgerError("XML_ERROR", "a redefined checkpoint must have a name")
    name = check_checkpoint_name(request.name)
    if request.creation_time is None:
        raise LedgerError("INTERNAL_ERROR", "missing creationTime from existing checkpoint")
    check_parent(state, name, request.parent)
    if embedded is not None:
        uuid, disks = embedded
        if state.uuid and uuid and uuid.lower() != state.uuid.lower():
            raise LedgerError(
                "INVALID_ARG", f"definition for checkpoint {name} must use uuid {state.uuid}"
            )
        aligned = align_disks(request.disks, disks, name)
    else:
        for d in request.disks or ():
            check_disk_name(d.name)
        aligned = assign_bitmap_names(request.disks or (), name)
    return request.model_copy(update={"name": name, "disks": aligned})


def redefined_events(
    state: DomainState, actual: CheckpointDef, xml: str, validate: bool = False
) -> list[Event]:
    """The event for a redefine the hypervisor accepted."""
    assert actual.name is not None and actual.creation_time is not None
    return [
        CheckpointRedefined(
            name=actual.name,
            parent=actual.parent,
            creation_time=actual.creation_time,
            description=actual.description,
            disks=actual.disks or (),
            domain_xml=actual.domain_xml,
            xml=xml,
            update=actual.name in state.checkpoints,
            validate_bitmaps=validate,
        )
    ]


def check_delete_flags(children: bool, children_only: bool) -> None:
    """CHILDREN and CHILDREN_ONLY are mutually exclusive (public API check)."""
    if children and children_only:
        raise LedgerError(
            "INVALID_ARG",
            "Flags 'VIR_DOMAIN_CHECKPOINT_DELETE_CHILDREN' and "
            "'VIR_DOMAIN_CHECKPOINT_DELETE_CHILDREN_ONLY' are mutually exclusive",
        )


def decide_delete(
    state: DomainState,
    name: str,
    *,
    children: bool = False,
    children_only: bool = False,
    metadata_only: bool = False,
) -> list[Event]:
    """The events of deleting ``name`` (§5.2 items 3-6, §9 rules 14-17)."""
    check_delete_flags(children, children_only)
    target = state.get(name)
    if target is None:
        raise no_checkpoint(name)
    victims: list[str] = []
    reparented: dict[str, str | None] = {}
    if children or children_only:
        victims = list(reversed(state.descendants(name)))  # deepest first
    if not children_only:
        victims.append(name)
        if not children:
            reparented = {child: target.parent for child in target.children}
    bitmap_events = [] if metadata_only else on_delete(state, victims)
    deleted = CheckpointDeleted(
        name=name,
        children=children,
        children_only=children_only,
        metadata_only=metadata_only,
        deleted=tuple(victims),
        reparented=reparented,
    )
    return [*bitmap_events, deleted]


def current_after_reload(state: DomainState) -> str | None:
    """§5.2 item 7: the unique leaf of a strictly linear forest, else None."""
    roots = state.roots()
    if len(roots) != 1:
        return None
    node = state.checkpoints[roots[0]]
    while node.children:
        if len(node.children) > 1:
            return None
        node = state.checkpoints[node.children[0]]
    return node.name
