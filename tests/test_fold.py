"""The bulk fold (ledger/log/fold.py) is the one-event-at-a-time fold, only faster.

``Ledger.catch_up`` folds the rows of ``EventStore.scan`` and skips pydantic for the data it
can check by hand. These tests hold it to ``DomainState.apply(decode_event(record))`` for
every record: the same states for real histories under both bitmap policies, the same
states for data pydantic would coerce, and the same error at the same row for data it would
refuse (the rows before it folded, the ledger's position on the last good one).
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.mock import MockHypervisor
from backends.memory import MemoryStore
from ledger import Ledger
from ledger.app.read_model import PROMOTE_AFTER
from ledger.domain.errors import LedgerError
from ledger.domain.events import SCHEMA_VERSION, BitmapDisabled, CheckpointCreated, DomainEnrolled
from ledger.domain.model import CheckpointDisk, DomainDisk
from ledger.domain.state import DomainState
from ledger.log.records import NewRecord, Provenance, decode_event, decode_payload, new_record
from ledger.log.store import EventStore

PROV = Provenance(actor="tester", host="testhost")
UUID = "00000000-0000-4000-8000-00000000f01d"


def one_by_one(store: EventStore) -> tuple[dict[str, dict[str, Any]], int]:
    """Every record through decode_event + apply; (states as dicts, position reached)."""
    states: dict[str, DomainState] = {}
    position = 0
    for rec in store.read_all():
        state = states.setdefault(rec.stream_id, DomainState(stream_id=rec.stream_id))
        state.apply(decode_event(rec), rec.stream_version, rec.position)
        position = rec.position
    return {k: v.to_dict() for k, v in states.items()}, position


def bulk(store: EventStore) -> tuple[dict[str, dict[str, Any]], int, Ledger]:
    """The ledger's own catch-up; (states as dicts, position, the ledger)."""
    lg = Ledger(store)
    lg.catch_up()
    return {k: v.to_dict() for k, v in lg.states.items()}, lg.position, lg


def outcome(fold: Any, store: EventStore) -> tuple[str, Any]:
    """``("ok", states)`` or ``("error", exception type)`` of one way of folding (the bulk
    fold reports a row it cannot decode as STORE_ERROR naming it: the type of its cause)."""
    try:
        return "ok", fold(store)[0]
    except Exception as e:  # the exception's type is the point
        if isinstance(e, LedgerError) and e.__cause__ is not None:
            assert e.code == "STORE_ERROR" and "is damaged" in str(e), str(e)
            return "error", type(e.__cause__)
        return "error", type(e)


def history(tmp_path: Path, policy: str) -> MemoryStore:
    """A real history through the ledger and the mock hypervisor: creates on two domains,
    deletes (plain, with children, children only, metadata only), a redefine, a partial
    checkpoint (one disk 'no'), and recorded drift."""
    hv = MockHypervisor(str(tmp_path / f"{policy}.json"))
    hv.define("vm1", ["vda", "vdb", "vdc"], policy=policy)  # type: ignore[arg-type]
    hv.define("vm2", ["vda"], policy=policy)  # type: ignore[arg-type]
    store = MemoryStore()
    lg = Ledger(store, hv)
    for i in range(8):
        lg.create("vm1", name=f"c{i}")
        if i % 3 == 0:
            lg.create("vm2", name=f"d{i}")
    lg.create("vm1", name="part", disks=["vda", CheckpointDisk(name="vdb", checkpoint="no")])
    lg.delete("vm1", "c1")
    lg.delete("vm1", "c3", metadata_only=True)
    lg.delete("vm1", "c5", children_only=True)
    lg.delete("vm2", "d3", children=True)
    xml = lg.xml("vm1", "c0")
    lg.delete("vm1", "c0", metadata_only=True)
    lg.redefine("vm1", xml)
    hv.remove_bitmap("vm1", "vdc", "c4")  # drift the ledger records
    lg.verify(["vm1"], record=True)
    return store


@pytest.mark.parametrize("policy", ["chained", "independent"])
def test_a_real_history_folds_to_the_same_states(tmp_path: Path, policy: str) -> None:
    store = history(tmp_path, policy)
    types = {r.type for r in store.read_all()}
    assert {"CheckpointCreated", "CheckpointDeleted", "CheckpointRedefined",
            "DriftObserved", "DomainEnrolled"} <= types
    if policy == "chained":
        assert {"BitmapDisabled", "BitmapMerged", "BitmapEnabled"} & types
    states, position, lg = bulk(store)
    assert (states, position) == one_by_one(store)
    assert lg.folded == position == store.last_position()
    assert lg.position_hash == list(store.read_all())[-1].hash
    assert sorted(lg.by_name) == ["vm1", "vm2"]


def test_catch_up_folds_only_what_is_new(tmp_path: Path) -> None:
    store = history(tmp_path, "chained")
    lg = Ledger(store)
    lg.catch_up()
    before = lg.folded
    lg.catch_up()
    assert lg.folded == before  # nothing new, nothing folded
    hv = MockHypervisor(str(tmp_path / "chained.json"))
    Ledger(store, hv).create("vm2", name="later")
    lg.catch_up()
    assert lg.folded == before + (store.last_position() - before)
    assert {k: v.to_dict() for k, v in lg.states.items()} == one_by_one(store)[0]


def test_a_long_catch_up_leaves_no_young_generation_to_sweep() -> None:
    """A catch-up of PROMOTE_AFTER events or more hands its objects to the collector's oldest
    generation: collection is on again after it, with nothing young waiting to be swept."""
    store = MemoryStore()
    store.append([enrolled(), raw(UUID, created())]
                 + [raw(UUID, disabled()) for _ in range(PROMOTE_AFTER)])
    assert gc.isenabled()
    lg = Ledger(store)
    lg.catch_up()
    assert gc.isenabled()
    assert gc.get_count()[0] < 100  # a young collection would otherwise visit every object
    assert lg.state("vm").bitmaps["vda"]["c1"].active is False


# --------------------------------------------------------------- payloads by hand
def raw(stream: str, data: Any, meta: Any = None, *, schema: int = SCHEMA_VERSION,
        payload: bytes | None = None, type_: str = "X") -> NewRecord:
    """A record with exactly this payload (``meta`` packed as version 2 packs it)."""
    if payload is None:
        meta = PROV.model_dump(mode="json") if meta is None else meta
        packed_meta = msgpack.packb(meta, use_bin_type=True) if schema >= 2 else meta
        payload = msgpack.packb({"data": data, "meta": packed_meta}, use_bin_type=True)
    return NewRecord(stream, "vm", type_, schema, 1.5, payload)


def enrolled() -> NewRecord:
    ev = DomainEnrolled(name="vm", uuid=UUID, disks=(DomainDisk(name="vda"),),
                        policy="chained")
    return new_record(UUID, "vm", ev, PROV, 1.0)


def created(name: str = "c1", parent: str | None = None) -> dict[str, Any]:
    ev = CheckpointCreated(name=name, parent=parent, creation_time=1700000000,
                           disks=(CheckpointDisk(name="vda", bitmap=name),),
                           domain_xml="<domain>\n  <name>vm</name>\n</domain>",
                           xml=f"<domaincheckpoint>\n  <name>{name}</name>\n  <domain>\n"
                               "    <name>vm</name>\n  </domain>\n</domaincheckpoint>\n")
    return ev.model_dump(mode="json")


def disabled(bitmap: str = "c1") -> dict[str, Any]:
    return BitmapDisabled(disk="vda", bitmap=bitmap, checkpoint="c2").model_dump(mode="json")


def store_of(*records: NewRecord) -> MemoryStore:
    store = MemoryStore()
    for r in records:
        store.append([r])
    return store


def test_version_1_payloads_fold_the_same() -> None:
    """Schema version 1 kept the provenance as a map inside the payload; it still folds."""
    v1 = store_of(raw(UUID, DomainEnrolled(name="vm", uuid=UUID, disks=(), policy="chained")
                      .model_dump(mode="json"), schema=1),
                  raw(UUID, created(), schema=1), raw(UUID, disabled(), schema=1))
    v2 = store_of(enrolled(), raw(UUID, created()), raw(UUID, disabled()))
    assert bulk(v1)[:2] == one_by_one(v1)
    assert decode_payload(list(v1.read_all())[1].payload)[1]["actor"] == "tester"
    assert decode_payload(list(v2.read_all())[1].payload)[1]["actor"] == "tester"
    cps = bulk(v1)[0][UUID]["checkpoints"]
    assert [c["name"] for c in cps] == ["c1"] and bulk(v1)[0][UUID]["bitmaps"]["vda"] == [
        ["c1", "c1", False, None]]


def test_keys_in_another_order_fold_the_same() -> None:
    data = disabled()
    reordered = {k: data[k] for k in reversed(list(data))}
    store = store_of(enrolled(), raw(UUID, created()), raw(UUID, reordered))
    assert bulk(store)[:2] == one_by_one(store)
    assert bulk(store)[0][UUID]["bitmaps"]["vda"][0][2] is False  # it was disabled


@pytest.mark.parametrize("size", [True, 1.0, 2**63, 2**64 - 1, -(2**63), -(2**63) + 1, "12"])
def test_values_pydantic_would_coerce_or_refuse_fold_the_same(size: Any) -> None:
    data = created()
    data["disks"][0]["size"] = size
    store = store_of(enrolled(), raw(UUID, data))
    assert outcome(bulk, store) == outcome(one_by_one, store)


@pytest.mark.parametrize("size", [True, 1.0])
def test_a_value_equal_to_one_already_folded_is_still_checked(size: Any) -> None:
    # True == 1 == 1.0: a disk entry equal to one folded before is checked on its own
    first, second = created(), created("c2", "c1")
    first["disks"][0]["size"] = 1
    second["disks"][0] = {**first["disks"][0], "size": size}
    store = store_of(enrolled(), raw(UUID, first), raw(UUID, second))
    assert outcome(bulk, store) == outcome(one_by_one, store)


BAD_PAYLOADS: list[tuple[str, bytes]] = [
    ("not msgpack", b"\xc1\xc1"),
    ("not a map", msgpack.packb([1, 2])),
    ("no provenance", msgpack.packb({"data": disabled()})),
    ("no data", msgpack.packb({"meta": b""})),
    ("data not a map", msgpack.packb({"data": "BitmapDisabled", "meta": b""})),
    ("unknown type", msgpack.packb({"data": {"type": "Nope"}, "meta": b""})),
    ("unhashable type", msgpack.packb({"data": {"type": [1]}, "meta": b""})),
    ("an extra field", msgpack.packb({"data": {**disabled(), "x": 1}, "meta": b""})),
    ("a missing field", msgpack.packb({"data": {"type": "BitmapDisabled", "disk": "vda",
                                                "bitmap": "c1"}, "meta": b""})),
    ("a field of the wrong type", msgpack.packb({"data": {**disabled(), "disk": 7},
                                                 "meta": b""})),
    ("delete of an unknown checkpoint", msgpack.packb({"data": {
        "type": "CheckpointDeleted", "name": "zz", "children": False, "children_only": False,
        "metadata_only": False, "deleted": ["zz"], "reparented": {}}, "meta": b""})),
]


@pytest.mark.parametrize("payload", [p for _, p in BAD_PAYLOADS],
                         ids=[n for n, _ in BAD_PAYLOADS])
def test_a_bad_row_fails_as_decode_event_fails_after_folding_the_rows_before(
        payload: bytes) -> None:
    store = store_of(enrolled(), raw(UUID, created()), raw(UUID, None, payload=payload),
                     raw(UUID, disabled()))
    expected = outcome(one_by_one, store)
    assert expected[0] == "error"
    lg = Ledger(store)
    with pytest.raises(Exception) as ei:
        lg.catch_up()
    assert type(ei.value.__cause__ or ei.value) is expected[1]
    if type(ei.value) is LedgerError:  # one line naming the row
        assert "event at position 3" in str(ei.value) and "\n" not in str(ei.value)
    assert lg.position == lg.folded == 2  # the rows before it are folded, and no more
    assert lg.states[lg.by_name["vm"]].get("c1") is not None
    with pytest.raises(Exception) as again:  # a read retries the fold: no answer from part of it
        lg.state("vm")
    assert type(again.value.__cause__ or again.value) is expected[1]
    assert lg.position == 2


def test_a_newer_schema_version_stops_the_fold_at_its_row() -> None:
    store = store_of(enrolled(), raw(UUID, created(), schema=SCHEMA_VERSION + 1))
    lg = Ledger(store)
    with pytest.raises(Exception, match="schema version 3; this ckpt-ledger understands up "
                                        "to 2"):
        lg.catch_up()
    assert lg.position == 1


# one of these replaces a value, or a key is dropped, or one is added
ODD_VALUES = st.sampled_from([None, True, False, 0, 1, 1.0, 1.5, -1, 2**63, 2**64 - 1, -(2**63),
                              "", "x", "no",
                              "bitmap", [], ["x"], {}, {"a": None}, b"x"])


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    data = draw(st.sampled_from([created(), disabled(), {**disabled(), "type": "BitmapEnabled"},
                                 {**disabled(), "type": "BitmapRemoved"},
                                 {**disabled(), "type": "BitmapMerged", "into": "c0"}]))
    target = data
    if data["type"] == "CheckpointCreated" and draw(st.booleans()):
        target = data["disks"][0]  # a disk entry instead
    keys = sorted(target)
    what = draw(st.sampled_from(["replace", "drop", "add"]))
    if what == "replace":
        target[draw(st.sampled_from(keys))] = draw(ODD_VALUES)
    elif what == "drop":
        del target[draw(st.sampled_from(keys))]
    else:
        target[draw(st.sampled_from(["extra", "name", "size"]))] = draw(ODD_VALUES)
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_any_odd_data_folds_as_apply_would(data: dict[str, Any]) -> None:
    store = store_of(enrolled(), raw(UUID, created("c1")), raw(UUID, created("c2", "c1")),
                     raw(UUID, data))
    assert outcome(bulk, store) == outcome(one_by_one, store)


@pytest.mark.parametrize("policy", ["chained", "independent"])
def test_every_hand_checked_event_type_takes_the_fast_path(
    tmp_path: Path, policy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hand-checked types (fold.FAST and the bitmap state changes) never reach
    ``DomainState.apply`` when they come from the ledger itself: a field added to one of
    their models (which the fast path would not know) fails here instead of silently
    making every rebuild slow."""
    from ledger.log import fold

    store = history(tmp_path, policy)
    slow: list[str] = []
    real_apply = DomainState.apply

    def counted(self: DomainState, event: Any, *args: Any, **kwargs: Any) -> Any:
        slow.append(event.type)
        return real_apply(self, event, *args, **kwargs)

    monkeypatch.setattr(DomainState, "apply", counted)
    types = {row_type for row_type in (r.type for r in store.read_all())}
    fast = set(fold.FAST) | set(fold.BITMAP_CHANGES)
    expected = fast & types
    assert {"CheckpointCreated", "CheckpointDeleted"} <= expected, types
    if policy == "chained":
        assert {"BitmapDisabled", "BitmapMerged", "BitmapRemoved"} <= expected, types
    bulk(store)
    assert not set(slow) & fast, sorted(set(slow) & fast)
    assert set(slow) == types - fast  # everything else is folded the ordinary way


def _everything(state: DomainState) -> dict[str, Any]:
    return {f: getattr(state, f) for f in DomainState.__dataclass_fields__}


@pytest.mark.parametrize("policy", ["chained", "independent"])
def test_a_clone_is_the_state_and_changes_apart_from_it(tmp_path: Path, policy: str) -> None:
    """``DomainState.clone`` (a trial copy) equals a deep copy, private fields included, and
    folding into it (a create under an unknown parent, a delete, a bitmap change, drift)
    leaves the original as it was."""
    import copy

    from ledger.domain.events import CheckpointDeleted, DriftObserved

    # clone() copies these by hand: a new field must be added there too
    assert set(DomainState.__dataclass_fields__) == {
        "stream_id", "name", "uuid", "policy", "disks", "checkpoints", "current", "bitmaps",
        "drift", "version", "position", "_domain_xml", "_indented", "_waiting"}
    _, _, lg = bulk(history(tmp_path, policy))
    for state in lg.states.values():
        state.apply(CheckpointCreated(name="orphan", parent="ghost", creation_time=1,
                                      disks=(CheckpointDisk(name="vda"),), xml="<x/>"))
        before = copy.deepcopy(state)
        trial = state.clone()
        assert _everything(trial) == _everything(before)
        root = state.topological()[0]
        trial.apply(CheckpointCreated(name="kid", parent=root, creation_time=2,
                                      disks=(CheckpointDisk(name="vda"),), xml="<x/>"))
        trial.apply(CheckpointCreated(name="ghost", parent=None, creation_time=3,
                                      disks=(CheckpointDisk(name="vda"),), xml="<x/>"))
        some = next(iter(trial.bitmaps["vda"].values()))
        trial.apply(BitmapDisabled(disk="vda", bitmap=some.name, checkpoint=some.checkpoint))
        trial.apply(DriftObserved(kind="bitmap-missing", checkpoint=root, disk="vda",
                                  bitmap=root, detail="gone"))
        trial.apply(CheckpointDeleted(name=root, deleted=(root,),
                                      reparented={c: None for c in trial.get(root).children}))
        assert _everything(state) == _everything(before)
