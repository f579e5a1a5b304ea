"""Projections: the state of one domain, folded from its events one at a time.

:class:`DomainState` holds the checkpoint tree (parents, children in link order, libvirt's
internal *current* checkpoint) and what the ledger believes each disk's bitmaps are.
It changes only by folding events: :meth:`DomainState.apply` one event at a time, or the
bulk fold (ledger/log/fold.py) through the field-level folds ``add_created``, ``set_active``,
``remove_bitmap`` and ``delete``, each the fold of one event type. The rules read it, never
write it.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger.domain.checkpoint_xml import END, indented
from ledger.domain.events import (
    BackupEnded,
    BackupStarted,
    BitmapDisabled,
    BitmapEnabled,
    BitmapMerged,
    BitmapRemoved,
    CheckpointCreated,
    CheckpointDeleted,
    CheckpointGone,
    CheckpointObserved,
    CheckpointRedefined,
    DomainEnrolled,
    DriftObserved,
    Event,
    OperationSettled,
)
from ledger.domain.model import CheckpointDef, CheckpointDisk, DomainDisk, Policy, shared_disk

_intern = sys.intern
_new = object.__new__

PROJECTION_VERSION = 2  # 2: checkpoint disks as rows


def _disk_from_row(row: list[Any]) -> CheckpointDisk:
    """The (shared) checkpoint disk of a snapshot row, checked by hand: pydantic validated it
    when its event was folded, and re-validating thousands per snapshot is most of the load
    time."""
    name, checkpoint, bitmap, size = row
    if (
        not isinstance(name, str)
        or checkpoint not in ("bitmap", "no")
        or not isinstance(bitmap, str | None)
        or not isinstance(size, int | None)
        or isinstance(size, bool)
    ):
        raise ValueError(f"bad checkpoint disk row {row!r}")
    return shared_disk(name, checkpoint, bitmap, size)


def _intern_opt(text: Any) -> Any:
    return _intern(text) if type(text) is str else text


_END_LEN = len(END)


def _split_xml(
    xml: str, domain_xml: str | None, mid: str | None = None
) -> str | tuple[str, str, str]:
    """``xml`` as ``(before, domain, after)`` around its embedded ``domain_xml`` (indented
    by two spaces, as libvirt embeds it: ``mid`` when the caller has it), ``domain`` shared
    by every checkpoint of the domain; ``xml`` itself when it does not embed it so.
    ``"".join`` gives ``xml`` back."""
    if type(domain_xml) is not str or type(xml) is not str:
        return xml
    if mid is None:
        mid = indented(domain_xml)
    end = len(xml) - _END_LEN
    if xml.endswith(END) and xml.endswith(mid, 0, end):  # as format_checkpoint_xml lays out
        i = end - len(mid)
        return (xml[:i], mid, END)
    i = xml.find(mid[:40])  # a short needle finds it faster; then check all of it
    if i < 0 or not xml.startswith(mid, i):
        return xml
    return (xml[:i], mid, xml[i + len(mid):])


def _share_disks(disks: tuple[CheckpointDisk, ...]) -> tuple[CheckpointDisk, ...]:
    """``disks`` with each entry replaced by its :func:`shared_disk` (an equal instance)."""
    out = []
    for d in disks:
        dd = d.__dict__
        size = dd.get("size")
        if (type(d) is not CheckpointDisk or len(dd) != 4 or len(d.model_fields_set) != 4
                or type(size) is bool):
            return disks  # not as validated from a full entry: leave it alone
        out.append(shared_disk(dd["name"], dd["checkpoint"], dd["bitmap"], size))
    return tuple(out)


def drift_key(kind: str, checkpoint: str | None, disk: str | None, bitmap: str | None) -> str:
    """A stable key for one kind of drift on one thing."""
    return "|".join([kind, checkpoint or "", disk or "", bitmap or ""])


class Checkpoint:
    """A live checkpoint in the tree.

    ``xml`` (the hypervisor's XML, which embeds the domain definition) is kept as the text
    around that definition plus one shared copy of it: the same string, in less memory.
    """

    __slots__ = ("name", "parent", "creation_time", "description", "disks", "domain_xml",
                 "_xml", "children")

    name: str
    parent: str | None
    creation_time: int
    description: str | None
    disks: tuple[CheckpointDisk, ...]
    domain_xml: str | None
    children: list[str]

    def __init__(
        self,
        name: str,
        parent: str | None,
        creation_time: int,
        description: str | None,
        disks: tuple[CheckpointDisk, ...],
        domain_xml: str | None,
        xml: str,
        children: list[str] | None = None,
    ) -> None:
        self.name = name
        self.parent = parent
        self.creation_time = creation_time
        self.description = description
        self.disks = disks
        self.domain_xml = domain_xml
        self._xml = _split_xml(xml, domain_xml)
        self.children = [] if children is None else children

    @property
    def xml(self) -> str:
        """The checkpoint's XML as the hypervisor returned it."""
        x = self._xml
        return "".join(x) if isinstance(x, tuple) else x

    @xml.setter
    def xml(self, value: str) -> None:
        self._xml = _split_xml(value, self.domain_xml)

    def _fields(self) -> tuple[Any, ...]:
        return (self.name, self.parent, self.creation_time, self.description, self.disks,
                self.domain_xml, self.xml, self.children)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable: no hash

    def __repr__(self) -> str:
        return (f"Checkpoint(name={self.name!r}, parent={self.parent!r}, "
                f"creation_time={self.creation_time!r}, description={self.description!r}, "
                f"disks={self.disks!r}, domain_xml={self.domain_xml!r}, xml={self.xml!r}, "
                f"children={self.children!r})")

    def copy(self) -> Checkpoint:
        """An equal checkpoint with its own list of children (every other field is
        immutable, so shared)."""
        new = Checkpoint.__new__(Checkpoint)
        new.name, new.parent, new.creation_time = self.name, self.parent, self.creation_time
        new.description, new.disks, new.domain_xml = self.description, self.disks, self.domain_xml
        new._xml, new.children = self._xml, list(self.children)
        return new

    def bitmap_on(self, disk: str) -> str | None:
        """The bitmap name this checkpoint has on ``disk`` (None for checkpoint='no')."""
        for d in self.disks:
            if d.name == disk and d.checkpoint == "bitmap":
                return d.bitmap_of(self.name)
        return None

    def disk(self, name: str) -> CheckpointDisk | None:
        """This checkpoint's entry for disk ``name``, if it lists it."""
        for d in self.disks:
            if d.name == name:
                return d
        return None

    def definition(self) -> CheckpointDef:
        """This checkpoint as an XML definition."""
        return CheckpointDef(
            name=self.name,
            description=self.description,
            parent=self.parent,
            creation_time=self.creation_time,
            disks=self.disks,
            domain_xml=self.domain_xml,
        )


@dataclass(slots=True)
class Bitmap:
    """A bitmap the ledger believes exists on a disk."""

    name: str
    checkpoint: str
    active: bool
    problem: str | None = None  # observed drift that makes the bitmap unusable


@dataclass(slots=True)
class DomainState:
    """Everything the ledger knows about one domain (one stream)."""

    stream_id: str
    name: str = ""
    uuid: str = ""
    policy: Policy = "independent"
    disks: tuple[DomainDisk, ...] = ()
    checkpoints: dict[str, Checkpoint] = field(default_factory=dict)
    current: str | None = None
    bitmaps: dict[str, dict[str, Bitmap]] = field(default_factory=dict)  # disk -> name -> Bitmap
    drift: dict[str, str] = field(default_factory=dict)  # recorded drift key -> detail
    version: int = 0  # stream version of the last folded event
    position: int = 0  # global position of the last folded event
    # the domain XML its newest checkpoint embeds (interned), shared by the next ones
    _domain_xml: str | None = field(default=None, repr=False, compare=False)
    _indented: str | None = field(default=None, repr=False, compare=False)  # indented(it)
    # parent name -> live checkpoints whose parent is not (yet) known: adopted when it comes
    _waiting: dict[str, list[str]] = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------ queries
    @property
    def newest_domain_xml(self) -> str | None:
        """The domain XML the newest checkpoint folded embeds (None before any)."""
        return self._domain_xml

    def get(self, name: str) -> Checkpoint | None:
        """The live checkpoint called ``name``, if any."""
        return self.checkpoints.get(name)

    def roots(self) -> list[str]:
        """Checkpoints without a parent, or whose parent the ledger does not know (orphans),
        in creation order: every live checkpoint is under one of them."""
        if not self._waiting:
            return [c.name for c in self.checkpoints.values() if c.parent is None]
        checkpoints = self.checkpoints
        return [c.name for c in checkpoints.values()
                if c.parent is None or c.parent not in checkpoints]

    def orphans(self) -> list[str]:
        """Live checkpoints whose parent the ledger does not know, in creation order."""
        if not self._waiting:
            return []
        checkpoints = self.checkpoints
        return [c.name for c in checkpoints.values()
                if c.parent is not None and c.parent not in checkpoints]

    def ancestors(self, name: str | None) -> Iterator[Checkpoint]:
        """``name`` itself, then its parent, grandparent ... up to a root."""
        seen: set[str] = set()
        while name is not None and name not in seen:
            seen.add(name)
            cp = self.checkpoints.get(name)
            if cp is None:
                return
            yield cp
            name = cp.parent

    def descendants(self, name: str) -> list[str]:
        """Every descendant of ``name`` in pre-order (parents before children), without it."""
        out: list[str] = []
        stack = list(reversed(self.checkpoints[name].children))
        while stack:
            n = stack.pop()
            out.append(n)
            stack.extend(reversed(self.checkpoints[n].children))
        return out

    def topological(self) -> list[str]:
        """Every checkpoint, each parent before its children (pre-order from the roots)."""
        out: list[str] = []
        for root in self.roots():
            out.append(root)
            out.extend(self.descendants(root))
        return out

    def disk_names(self) -> list[str]:
        """The domain's disks, then any other disk a live checkpoint mentions."""
        names = [d.name for d in self.disks]
        for cp in self.checkpoints.values():
            for d in cp.disks:
                if d.name not in names:
                    names.append(d.name)
        return names

    # -------------------------------------------------------------------- fold
    def apply(self, event: Event, version: int = 0, position: int = 0) -> None:
        """Fold one event into the state."""
        handler = _APPLY.get(type(event))
        if handler is None:  # a subclass of an event type: the isinstance chain decides
            handler = _handler_for(event)
        handler(self, event)
        if version:
            self.version = version
        if position:
            self.position = position

    def _enrolled(self, event: DomainEnrolled) -> None:
        self.name, self.uuid, self.policy = event.name, event.uuid, event.policy
        self.disks = event.disks

    def _created(self, ev: CheckpointCreated) -> None:
        self.add_created(ev.name, ev.parent, ev.creation_time, ev.description,
                         _share_disks(ev.disks), ev.domain_xml, ev.xml)

    def add_created(
        self, name: str, parent: str | None, creation_time: int, description: str | None,
        disks: tuple[CheckpointDisk, ...], domain_xml: str | None, xml: str,
    ) -> None:
        """Fold a CheckpointCreated given by its fields: the checkpoint becomes current and
        each of its bitmaps exists, active. (``apply`` and the bulk fold both end here.)"""
        self._insert(name, parent, creation_time, description, disks, domain_xml, xml)
        self.current = name
        bitmaps = self.bitmaps
        for d in disks:
            if d.checkpoint == "bitmap":
                disk = d.name
                bms = bitmaps.get(disk)
                if bms is None:
                    bms = bitmaps[disk] = {}
                bitmap = d.bitmap or name  # d.bitmap_of(name), inlined
                bms[bitmap] = Bitmap(bitmap, name, True)

    def _bitmap_disabled(self, event: BitmapDisabled | BitmapEnabled) -> None:
        self.set_active(event.disk, event.bitmap, False)

    def _bitmap_enabled(self, event: BitmapDisabled | BitmapEnabled) -> None:
        self.set_active(event.disk, event.bitmap, True)

    def set_active(self, disk: str, bitmap: str, active: bool) -> None:
        """Fold a BitmapDisabled (``active`` False) or BitmapEnabled given by its fields."""
        bms = self.bitmaps.get(disk)
        if bms is not None:
            bm = bms.get(bitmap)
            if bm is not None:
                bm.active = active

    def _bitmap_removed(self, event: BitmapRemoved) -> None:
        self.remove_bitmap(event.disk, event.bitmap)

    def remove_bitmap(self, disk: str, bitmap: str) -> None:
        """Fold a BitmapRemoved given by its fields."""
        bms = self.bitmaps.get(disk)
        if bms is not None:
            bms.pop(bitmap, None)

    def _nothing(self, event: Any) -> None:
        pass  # a merge changes no bitmap's existence or state

    def _gone(self, ev: CheckpointGone) -> None:
        """A checkpoint learned gone: it leaves the tree with its bitmaps."""
        cp = self.checkpoints.get(ev.name)
        if cp is None:
            return
        for d in cp.disks:
            bitmap = cp.bitmap_on(d.name)
            if bitmap is not None:
                self.remove_bitmap(d.name, bitmap)
        self.delete(ev.name, (ev.name,), ev.reparented)

    def _drift(self, ev: DriftObserved) -> None:
        """Observed drift: a bitmap gone or broken makes plans through it full backups."""
        key = drift_key(ev.kind, ev.checkpoint, ev.disk, ev.bitmap)
        if ev.kind.endswith("-ok"):
            self.drift.pop(drift_key(ev.kind[:-3], ev.checkpoint, ev.disk, ev.bitmap), None)
        else:
            self.drift[key] = ev.detail
        if ev.disk is None or ev.bitmap is None:
            return
        bms = self.bitmaps.get(ev.disk, {})
        if ev.kind == "bitmap-missing":
            bms.pop(ev.bitmap, None)
        elif ev.kind in ("bitmap-inconsistent", "bitmap-not-recording") and ev.bitmap in bms:
            bms[ev.bitmap].problem = ev.detail or ev.kind
            if ev.kind == "bitmap-not-recording":
                bms[ev.bitmap].active = False
        elif ev.kind in ("bitmap-inconsistent-ok", "bitmap-not-recording-ok") and ev.bitmap in bms:
            bms[ev.bitmap].problem = None

    def _add_bitmap(self, disk: str, name: str, checkpoint: str, active: bool) -> None:
        self.bitmaps.setdefault(disk, {})[name] = Bitmap(name, checkpoint, active)

    def _insert(
        self, name: str, parent: str | None, creation_time: int, description: str | None,
        disks: tuple[CheckpointDisk, ...], domain_xml: str | None, xml: str,
    ) -> None:
        mid = None
        if domain_xml is not None:
            # one copy of each distinct domain definition (most checkpoints share it); the
            # domain's last one is compared first, which is cheaper than hashing a new string
            last = self._domain_xml
            if domain_xml == last:
                domain_xml, mid = last, self._indented
            else:
                domain_xml = self._domain_xml = _intern(domain_xml)
                mid = self._indented = indented(domain_xml)
        # Checkpoint(...) without its __init__ (the fold inserts tens of thousands a second)
        cp = _new(Checkpoint)
        cp.name, cp.parent, cp.creation_time = name, parent, creation_time
        cp.description, cp.disks, cp.domain_xml = description, disks, domain_xml
        cp.children = []
        end = len(xml) - _END_LEN
        if mid is not None and xml.endswith(END) and xml.endswith(mid, 0, end):
            cp._xml = (xml[:end - len(mid)], mid, END)  # _split_xml's first case, inlined
        else:
            cp._xml = _split_xml(xml, domain_xml, mid)
        checkpoints = self.checkpoints
        checkpoints[name] = cp
        if parent is not None:
            up = checkpoints.get(parent)
            if up is not None:
                up.children.append(name)
            else:
                self._waiting.setdefault(parent, []).append(name)
        if self._waiting:
            self._adopt(name)

    def _adopt(self, name: str) -> None:
        """Link the orphans waiting for ``name`` (now live) under it."""
        kids = self._waiting.pop(name, None)
        if kids:
            cp = self.checkpoints[name]
            cp.children.extend(k for k in kids if k in self.checkpoints and k not in cp.children)

    def _unwait(self, name: str, parent: str | None) -> None:
        """``name`` no longer waits for ``parent``."""
        if parent is not None and parent in self._waiting:
            kids = self._waiting[parent]
            if name in kids:
                kids.remove(name)
            if not kids:
                del self._waiting[parent]

    def _insert_event(self, ev: CheckpointRedefined | CheckpointObserved) -> None:
        self._insert(ev.name, ev.parent, ev.creation_time, ev.description,
                     _share_disks(ev.disks), ev.domain_xml, ev.xml)

    def _redefine(self, ev: CheckpointRedefined | CheckpointObserved) -> None:
        make_current = self.current is None or ev.parent == self.current
        old = self.checkpoints.get(ev.name)
        if old is not None:  # in-place update: keep the children, relink the parent
            if old.parent is not None and old.parent in self.checkpoints:
                self.checkpoints[old.parent].children.remove(ev.name)
            else:
                self._unwait(ev.name, old.parent)
            children = old.children
            self._insert_event(ev)
            self.checkpoints[ev.name].children = children
        else:
            self._insert_event(ev)
        if make_current:
            self.current = ev.name
        # REDEFINE touches no bitmap; the ledger now believes the checkpoint's bitmaps
        # exist as the policy would have left them.
        for d in ev.disks:
            if d.checkpoint != "bitmap":
                continue
            bitmap = d.bitmap_of(ev.name)
            if bitmap in self.bitmaps.get(d.name, {}):
                continue
            if old is not None and old.bitmap_on(d.name) == bitmap:
                continue  # an in-place update: the bitmap is what it was (maybe gone)
            active = self.policy == "independent" or self._newest_on(d.name, ev.name)
            if active and self.policy == "chained":
                for bm in self.bitmaps.get(d.name, {}).values():
                    bm.active = False
            self._add_bitmap(d.name, bitmap, ev.name, active)

    def _newest_on(self, disk: str, name: str) -> bool:
        """Chained belief: no descendant of ``name`` has a bitmap on ``disk``."""
        return not any(self.checkpoints[n].bitmap_on(disk) for n in self.descendants(name))

    def _delete(self, ev: CheckpointDeleted) -> None:
        self.delete(ev.name, ev.deleted, ev.reparented)

    def delete(self, name: str, deleted: Sequence[str],
               reparented: Mapping[str, str | None]) -> None:
        """Fold a CheckpointDeleted given by its fields (KeyError if ``name`` is unknown)."""
        checkpoints = self.checkpoints
        target = checkpoints[name]
        waiting = self._waiting
        for child, new_parent in reparented.items():
            cp = checkpoints.get(child)
            if cp is None:
                continue
            if waiting:
                self._unwait(child, cp.parent)
            cp.parent = new_parent
            if new_parent is not None and new_parent in checkpoints:
                checkpoints[new_parent].children.append(child)
            elif new_parent is not None and new_parent not in deleted:
                waiting.setdefault(new_parent, []).append(child)
        for gone_name in deleted:
            cp = checkpoints.pop(gone_name, None)
            if cp is not None and cp.parent is not None and cp.parent in checkpoints:
                siblings = checkpoints[cp.parent].children
                if gone_name in siblings:
                    siblings.remove(gone_name)
            elif cp is not None and waiting:
                self._unwait(gone_name, cp.parent)
            if cp is not None:  # children it still had (not reparented) wait for it again
                for kid in cp.children:
                    if kid in checkpoints and checkpoints[kid].parent == gone_name:
                        waiting.setdefault(gone_name, []).append(kid)
        if self.current in deleted:
            self.current = name if name not in deleted else target.parent
            if self.current is not None and self.current not in checkpoints:
                self.current = None

    # ------------------------------------------------------------- snapshots
    def clone(self) -> DomainState:
        """A deep copy, for trying events out without touching this state. Immutable values
        (strings, tuples, frozen models) are shared; the checkpoints, bitmaps, drift and
        waiting lists are copied."""
        new = copy.copy(self)
        new.checkpoints = {n: c.copy() for n, c in self.checkpoints.items()}
        new.bitmaps = {disk: {n: Bitmap(b.name, b.checkpoint, b.active, b.problem)
                              for n, b in bms.items()}
                       for disk, bms in self.bitmaps.items()}
        new.drift = dict(self.drift)
        new._waiting = {parent: list(kids) for parent, kids in self._waiting.items()}
        return new

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for snapshots and the mock hypervisor's state file."""
        return {
            "projection_version": PROJECTION_VERSION,
            "stream_id": self.stream_id,
            "name": self.name,
            "uuid": self.uuid,
            "policy": self.policy,
            "disks": [d.model_dump() for d in self.disks],
            "checkpoints": [
                {
                    "name": c.name,
                    "parent": c.parent,
                    "creation_time": c.creation_time,
                    "description": c.description,
                    "disks": [[d.name, d.checkpoint, d.bitmap, d.size] for d in c.disks],
                    "domain_xml": c.domain_xml,
                    "xml": c.xml,
                    "children": list(c.children),
                }
                for c in self.checkpoints.values()
            ],
            "current": self.current,
            "bitmaps": {
                disk: [[b.name, b.checkpoint, b.active, b.problem] for b in bms.values()]
                for disk, bms in self.bitmaps.items()
            },
            "drift": dict(self.drift),
            "version": self.version,
            "position": self.position,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DomainState:
        """Rebuild a state written by :meth:`to_dict` (ValueError for another version)."""
        if data.get("projection_version") != PROJECTION_VERSION:
            raise ValueError("projection version mismatch")
        st = cls(
            stream_id=data["stream_id"],
            name=data["name"],
            uuid=data["uuid"],
            policy=data["policy"],
            disks=tuple(DomainDisk.model_validate(d) for d in data["disks"]),
            current=data["current"],
            drift=dict(data.get("drift", {})),
            version=data["version"],
            position=data["position"],
        )
        for c in data["checkpoints"]:
            st.checkpoints[c["name"]] = Checkpoint(
                name=c["name"],
                parent=c["parent"],
                creation_time=c["creation_time"],
                description=c["description"],
                disks=tuple(_disk_from_row(r) for r in c["disks"]),
                domain_xml=_intern_opt(c["domain_xml"]),
                xml=c["xml"],
                children=list(c["children"]),
            )
        for disk, rows in data["bitmaps"].items():
            st.bitmaps[disk] = {r[0]: Bitmap(r[0], r[1], bool(r[2]), r[3]) for r in rows}
        for cp in st.checkpoints.values():
            if cp.parent is not None and cp.parent not in st.checkpoints:
                st._waiting.setdefault(cp.parent, []).append(cp.name)
        return st


# apply's dispatch: event class -> handler (the isinstance chain below serves, in
# order, for subclasses of the event classes)
_CHAIN: tuple[tuple[type, Any], ...] = (
    (DomainEnrolled, DomainState._enrolled),
    (CheckpointCreated, DomainState._created),
    (CheckpointRedefined, DomainState._redefine),
    (CheckpointDeleted, DomainState._delete),
    (BitmapEnabled, DomainState._bitmap_enabled),
    (BitmapDisabled, DomainState._bitmap_disabled),
    (BitmapRemoved, DomainState._bitmap_removed),
    (DriftObserved, DomainState._drift),
    (CheckpointObserved, DomainState._redefine),
    (CheckpointGone, DomainState._gone),
    (BitmapMerged, DomainState._nothing),
    (OperationSettled, DomainState._nothing),
    (BackupStarted, DomainState._nothing),  # backups are history, not state (app/backups.py)
    (BackupEnded, DomainState._nothing),
)
_APPLY: dict[type, Any] = dict(_CHAIN)


def _handler_for(event: Any) -> Any:
    for cls, handler in _CHAIN:
        if isinstance(event, cls):
            return handler
    return DomainState._nothing
