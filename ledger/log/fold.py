"""The bulk fold: stored rows folded into projections straight from their payloads.

:meth:`ledger.app.ledger.Ledger.catch_up` reads the log through the store's lean
:meth:`~ledger.log.store.EventStore.scan` and folds it here. The events that make up most of a
history (a checkpoint created or deleted; a bitmap disabled, enabled, merged or removed)
are checked by hand and handed, field by field, to the same
:class:`~ledger.domain.state.DomainState` methods that
:meth:`~ledger.domain.state.DomainState.apply` ends in, without building their pydantic
models. The check accepts exactly the data that validation would return unchanged
(the keys the model's fields, every value of exactly its field's type); any other row
(another event type, an older or odd encoding, a damaged payload) is folded the ordinary
way, ``decode_event`` then ``apply``, so both paths give the same state and the same errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, MutableMapping, Sequence
from typing import Any

import msgpack
from pydantic import ValidationError

from ledger.domain.errors import LedgerError
from ledger.domain.events import (
    SCHEMA_VERSION,
    BitmapDisabled,
    BitmapEnabled,
    BitmapMerged,
    BitmapRemoved,
    CheckpointDeleted,
)
from ledger.domain.state import DomainState
from ledger.log.records import check_schema, created_disks, event_from
from ledger.log.store import ScanRow

_unpackb = msgpack.unpackb
_str = str
_bool = bool
_list = list
_dict = dict
_int = int
_bytes = bytes
# how many keys each hand-checked event's data has: its model's fields, type included (a new
# field changes these with the model, so the fast path keeps up; tests/test_fold.py checks
# that every hand-checked type takes it)
_MERGED_LEN = len(BitmapMerged.model_fields)
_DELETED_LEN = len(CheckpointDeleted.model_fields)
_ACTIVE_LEN = len(BitmapDisabled.model_fields)
if not _ACTIVE_LEN == len(BitmapRemoved.model_fields) == len(BitmapEnabled.model_fields):
    raise ImportError("the bitmap events' fields differ: fold_rows checks them as one")
# what decoding or folding a damaged row raises (a LedgerError is already one line)
DECODE_ERRORS = (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError)


def damage(exc: BaseException) -> str:
    """A short description of why decoding or folding a record failed."""
    if isinstance(exc, LedgerError):
        return exc.one_line()
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"invalid event data ({where + ': ' if where else ''}{first.get('msg')})"
    if isinstance(exc, msgpack.ExtraData):
        return "the payload is not msgpack (extra bytes after the data)"
    if isinstance(exc, ValueError | msgpack.UnpackException):
        return f"the payload is not msgpack ({type(exc).__name__})"
    if isinstance(exc, KeyError):
        return f"the payload has no {exc.args[0]!r}"
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:80]}"


def damaged(position: object, exc: BaseException) -> LedgerError:
    """STORE_ERROR: the event at ``position`` cannot be decoded or folded, and why."""
    return LedgerError("STORE_ERROR", f"event at position {position} is damaged: "
                       f"{damage(exc)}")


def _malformed(position: object, *fields: object) -> LedgerError:
    names = ("stream_id", "stream_version", "schema_version", "payload")
    kinds = (str, int, int, bytes)
    name = next(n for n, v, k in zip(names, fields, kinds, strict=True) if type(v) is not k)
    return LedgerError("STORE_ERROR", f"event at position {position} is damaged: field "
                       f"{name} is malformed")


def _bitmap_merged(state: DomainState, data: dict[str, Any]) -> bool:
    # a merge changes no bitmap's existence or state (DomainState._nothing)
    return (len(data) == _MERGED_LEN and type(data.get("disk")) is _str
            and type(data.get("bitmap")) is _str and type(data.get("checkpoint")) is _str
            and type(data.get("into")) is _str)


def _created(state: DomainState, data: dict[str, Any]) -> bool:
    disks = created_disks(data)
    if disks is None:
        return False
    state.add_created(data["name"], data["parent"], data["creation_time"],
                      data["description"], disks, data["domain_xml"], data["xml"])
    return True


def _deleted(state: DomainState, data: dict[str, Any]) -> bool:
    get = data.get
    name, deleted, reparented = get("name"), get("deleted"), get("reparented")
    if (len(data) != _DELETED_LEN or type(name) is not _str
            or type(get("children")) is not _bool
            or type(get("children_only")) is not _bool
            or type(get("metadata_only")) is not _bool
            or type(deleted) is not _list or type(reparented) is not _dict
            or name not in state.checkpoints):  # let apply raise as it does
        return False
    for n in deleted:
        if type(n) is not _str:
            return False
    for k, v in reparented.items():
        if type(k) is not _str or (v is not None and type(v) is not _str):
            return False
    state.delete(name, deleted, reparented)
    return True


# event type -> hand-checked fold (True when done; False: fold it the ordinary way). The
# bitmap disables, enables and removals (most events of a history) are handled in fold_rows
# itself (BITMAP_CHANGES).
FAST: dict[str, Callable[[DomainState, dict[str, Any]], bool]] = {
    "BitmapMerged": _bitmap_merged,
    "CheckpointCreated": _created,
    "CheckpointDeleted": _deleted,
}
_REMOVE = 2
# bitmap event type -> what fold_rows does: set the bitmap inactive (False), active (True),
# or remove it (_REMOVE); DomainState.set_active and remove_bitmap, inlined
BITMAP_CHANGES: dict[str, bool | int] = {
    "BitmapDisabled": False, "BitmapEnabled": True, "BitmapRemoved": _REMOVE}


def fold_rows(
    states: MutableMapping[str, DomainState],
    by_name: dict[str, str],
    pages: Iterable[Sequence[ScanRow]],
    done: Callable[[int, int], None],
) -> None:
    """Fold ``pages`` of rows (oldest first) into ``states`` (stream id -> state, new
    states made as needed) and ``by_name`` (domain name -> stream id).

    ``done(position, count)`` is called at the end, also when a row fails (a newer schema
    version, a payload that does not decode: the error is raised at that row), with the
    position of the last row folded and how many were (``(0, 0)`` for none).
    """
    fast = FAST.get
    active_of = BITMAP_CHANGES.get
    get_state = states.get
    unpackb, newest, str_ = _unpackb, SCHEMA_VERSION, _str  # locals: read once per row
    int_, bytes_, active_len = _int, _bytes, _ACTIVE_LEN
    last = count = 0
    # the stream of the row before and its state (most rows follow one of the same domain);
    # a placeholder until the first row, whose stream is never None
    last_stream: str | None = None
    state = DomainState(stream_id="")
    current: Sequence[ScanRow] | None = None  # the page being folded
    try:
        for page in pages:
            current = page
            for position, stream_id, version, schema_version, payload in page:
                if (type(stream_id) is not str_ or type(version) is not int_
                        or type(schema_version) is not int_ or type(payload) is not bytes_):
                    raise _malformed(position, stream_id, version, schema_version, payload)
                if schema_version > newest or schema_version < 1:
                    check_schema(position, schema_version)
                if stream_id != last_stream:
                    found = get_state(stream_id)
                    if found is None:
                        found = states[stream_id] = DomainState(stream_id=stream_id)
                    state, last_stream = found, stream_id
                obj = unpackb(payload, raw=False, strict_map_key=False)
                try:
                    data = obj["data"]
                    obj["meta"]
                    tag = data["type"]
                    active = active_of(tag)
                except (KeyError, TypeError):  # not a payload this code wrote: see below
                    data = tag = active = None
                if active is not None:
                    # BitmapDisabled/Enabled/Removed: DomainState.set_active or
                    # remove_bitmap, inlined
                    disk, bitmap = data.get("disk"), data.get("bitmap")
                    if (len(data) == active_len and type(disk) is str_ and type(bitmap) is str_
                            and type(data.get("checkpoint")) is str_):
                        bms = state.bitmaps.get(disk)
                        if bms is not None:
                            if active == 2:  # _REMOVE
                                bms.pop(bitmap, None)
                            else:
                                bm = bms.get(bitmap)
                                if bm is not None:
                                    bm.active = active is True
                        handled = True
                    else:
                        handled = False
                else:
                    handler = fast(tag) if tag is not None else None
                    handled = handler is not None and handler(state, data)
                if not handled:
                    state.apply(event_from(obj))
                    name = state.name
                    if name and by_name.get(name) != stream_id:
                        by_name[name] = stream_id
                state.version = version
                state.position = last = position
            count += len(page)
            current = None
    except BaseException as e:
        if current is not None:  # the rows of the failing page folded before it count too
            count += sum(1 for row in current if row[0] <= last)
        if isinstance(e, DECODE_ERRORS) and current is not None:
            bad = next((row[0] for row in current if row[0] > last), "?")
            raise damaged(bad, e) from e
        raise
    finally:
        done(last, count)
