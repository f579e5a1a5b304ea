"""libvirt's checkpoint rules, decided by pure functions (docs/libvirt-checkpoints.md §2.3, §5, §9).

These tests fold events into a DomainState with no store and no hypervisor: the rules are
pure, so each test is a small specification of what libvirt does.
"""

from __future__ import annotations

import pytest

from ledger.domain import rules
from ledger.domain.errors import LedgerError
from ledger.domain.events import BitmapDisabled, BitmapEnabled, BitmapMerged, BitmapRemoved
from ledger.domain.model import CheckpointDef, CheckpointDisk, DomainDisk, DomainInfo
from ledger.domain.policies import plan
from ledger.domain.state import DomainState

DISKS = (DomainDisk(name="vda"), DomainDisk(name="vdb"), DomainDisk(name="vdc"))


def domain(policy: str = "chained", disks: tuple[DomainDisk, ...] = DISKS) -> DomainInfo:
    return DomainInfo(name="vm", uuid="u-1", running=True, policy=policy, disks=disks)  # type: ignore[arg-type]


def fresh(policy: str = "chained", disks: tuple[DomainDisk, ...] = DISKS) -> DomainState:
    info = domain(policy, disks)
    return DomainState(stream_id=info.uuid, name=info.name, uuid=info.uuid, policy=info.policy,
                       disks=info.disks)


def create(state: DomainState, name: str, *disks: str, now: int = 1000) -> list:
    req_disks = None
    if disks:
        req_disks = tuple(CheckpointDisk(name=d) for d in disks)
    info = DomainInfo(name="vm", uuid="u-1", running=True, policy=state.policy, disks=state.disks)
    d = rules.decide_create(state, info, CheckpointDef(name=name, disks=req_disks), now)
    events = rules.created_events(state, d, "<xml/>")
    for ev in events:
        state.apply(ev)
    return events


def delete(state: DomainState, name: str, **flags: bool) -> list:
    events = rules.decide_delete(state, name, **flags)
    for ev in events:
        state.apply(ev)
    return events


def seed(policy: str) -> DomainState:
    st = fresh(policy)
    create(st, "chk1.1", "vda", "vdb")
    create(st, "chk2.1", "vdb", "vdc")
    create(st, "chk1.2", "vda", "vdb")
    create(st, "chk2.2", "vdb", "vdc")
    return st


def active(state: DomainState) -> dict[str, list[str]]:
    return {d: [b.name for b in bms.values() if b.active] for d, bms in state.bitmaps.items()}


# --------------------------------------------------------------------------- create
def test_create_parent_is_the_current_checkpoint_and_the_new_one_becomes_current() -> None:
    st = seed("independent")
    assert [st.checkpoints[n].parent for n in st.topological()] == [
        None, "chk1.1", "chk2.1", "chk1.2"]
    assert st.current == "chk2.2"


def test_create_without_disks_takes_every_writable_disk_and_skips_readonly_and_empty() -> None:
    disks = (DomainDisk(name="vda"), DomainDisk(name="hdc", readonly=True),
             DomainDisk(name="sdb", empty=True))
    st = fresh("independent", disks)
    create(st, "c1")
    got = [(d.name, d.checkpoint, d.bitmap) for d in st.checkpoints["c1"].disks]
    assert got == [("vda", "bitmap", "c1"), ("hdc", "no", None), ("sdb", "no", None)]


def test_listed_disks_keep_domain_order_and_unlisted_disks_get_checkpoint_no() -> None:
    st = fresh("independent")
    create(st, "c1", "vdc", "vda")
    got = [(d.name, d.checkpoint) for d in st.checkpoints["c1"].disks]
    assert got == [("vda", "bitmap"), ("vdb", "no"), ("vdc", "bitmap")]


def test_create_without_a_name_is_named_after_the_creation_time() -> None:
    st = fresh("independent")
    info = domain("independent")
    d = rules.decide_create(st, info, CheckpointDef(), now=1525889631)
    assert d.name == "1525889631" and d.creation_time == 1525889631


@pytest.mark.parametrize(
    ("disks", "code", "message"),
    [
        (("vdz",), "CONFIG_UNSUPPORTED", "no disk named 'vdz'"),
        (("vda", "vda"), "CONFIG_UNSUPPORTED", "disk 'vda' specified twice"),
        (("vda", "vdb", "vdc", "vda"), "CONFIG_UNSUPPORTED", "too many disk checkpoint requests"),
    ],
)
def test_disk_alignment_errors(disks: tuple[str, ...], code: str, message: str) -> None:
    st = fresh("independent")
    with pytest.raises(LedgerError) as err:
        create(st, "c1", *disks)
    assert err.value.code == code and message in str(err.value)
    assert st.checkpoints == {}


def test_too_many_disks_is_checked_before_duplicates_on_a_one_disk_domain() -> None:
    st = fresh("independent", (DomainDisk(name="vda"),))
    with pytest.raises(LedgerError, match="too many disk checkpoint requests"):
        create(st, "c1", "vda", "vda")


def test_readonly_disk_as_bitmap_is_refused_but_checkpoint_no_is_fine() -> None:
    st = fresh("independent", (DomainDisk(name="vda"), DomainDisk(name="vdb", readonly=True)))
    with pytest.raises(LedgerError, match="disk 'vdb' is empty or readonly"):
        create(st, "c1", "vdb")
    info = DomainInfo(name="vm", uuid="u-1", running=True, policy="independent", disks=st.disks)
    req = CheckpointDef(name="c1", disks=(CheckpointDisk(name="vdb", checkpoint="no"),))
    d = rules.decide_create(st, info, req, 1)
    assert [x.checkpoint for x in d.disks or ()] == ["no", "no"]


def test_domain_without_disks_cannot_have_checkpoints() -> None:
    st = fresh("independent", ())
    with pytest.raises(LedgerError, match="at least one disk"):
        create(st, "c1")


def test_disk_found_by_its_source_path_is_renamed_to_the_target() -> None:
    disks = (DomainDisk(name="vda", source="/img/a.qcow2"),)
    st = fresh("independent", disks)
    create(st, "c1", "/img/a.qcow2")
    assert st.checkpoints["c1"].disks[0].name == "vda"


def test_duplicate_name_is_operation_failed() -> None:
    st = fresh("independent")
    create(st, "c1")
    with pytest.raises(LedgerError) as err:
        create(st, "c1")
    assert err.value.code == "OPERATION_FAILED"
    assert str(err.value) == "operation failed: domain moment c1 already exists"


def test_inactive_domain_cannot_get_a_checkpoint() -> None:
    st = fresh("independent")
    info = domain("independent").model_copy(update={"running": False})
    with pytest.raises(LedgerError) as err:
        rules.decide_create(st, info, CheckpointDef(name="c1"), 1)
    assert err.value.code == "OPERATION_UNSUPPORTED"


def test_qemu_rules_bitmap_must_match_name_and_disk_must_be_qcow2() -> None:
    disks = (DomainDisk(name="vda"), DomainDisk(name="vdb", format="raw"))
    st = fresh("independent", disks)
    info = DomainInfo(name="vm", uuid="u-1", running=True, policy="independent", disks=disks)
    bad_bitmap = CheckpointDef(name="c1", disks=(CheckpointDisk(name="vda", bitmap="other"),))
    with pytest.raises(LedgerError, match="must match checkpoint name 'c1'"):
        rules.decide_create(st, info, bad_bitmap, 1, qemu_rules=True)
    with pytest.raises(LedgerError, match="unsupported for storage type raw"):
        rules.decide_create(st, info, CheckpointDef(name="c1"), 1, qemu_rules=True)
    ok = CheckpointDef(name="c1", disks=(CheckpointDisk(name="vda"),))
    assert rules.decide_create(st, info, ok, 1, qemu_rules=True).name == "c1"
    # the test driver (no qemu rules) accepts another bitmap name
    assert rules.decide_create(st, info, bad_bitmap, 1).disks[0].bitmap == "other"  # type: ignore[index]


# ---------------------------------------------------------------- chained policy
def test_chained_create_disables_the_nearest_ancestor_bitmap_on_each_disk() -> None:
    st = fresh("chained")
    create(st, "chk1.1", "vda", "vdb")
    create(st, "chk2.1", "vdb", "vdc")
    events = create(st, "chk1.2", "vda", "vdb")
    disabled = [(e.disk, e.bitmap) for e in events if isinstance(e, BitmapDisabled)]
    # the seed's example: A.chk1.1 (grandparent) and B.chk2.1 (parent)
    assert disabled == [("vda", "chk1.1"), ("vdb", "chk2.1")]


def test_chained_keeps_exactly_one_active_bitmap_per_disk_the_newest() -> None:
    st = seed("chained")
    assert active(st) == {"vda": ["chk1.2"], "vdb": ["chk2.2"], "vdc": ["chk2.2"]}


def test_independent_keeps_every_bitmap_active() -> None:
    st = seed("independent")
    assert active(st) == {
        "vda": ["chk1.1", "chk1.2"],
        "vdb": ["chk1.1", "chk2.1", "chk1.2", "chk2.2"],
        "vdc": ["chk2.1", "chk2.2"],
    }


def test_chained_plan_from_chk1_2_matches_the_issue() -> None:
    p = plan(seed("chained"), "chk1.2")
    assert (p["vda"].mode, p["vda"].bitmaps) == ("incremental", ["chk1.2"])
    assert (p["vdb"].mode, p["vdb"].bitmaps) == ("differential", ["chk1.2", "chk2.2"])
    assert p["vdc"].mode == "full" and "checkpoint='no'" in (p["vdc"].reason or "")


def test_chained_plan_from_chk1_1_merges_along_the_chain_oldest_first() -> None:
    p = plan(seed("chained"), "chk1.1")
    assert p["vda"].bitmaps == ["chk1.1", "chk1.2"]
    assert p["vdb"].bitmaps == ["chk1.1", "chk2.1", "chk1.2", "chk2.2"]
    assert p["vdc"].mode == "full"


def test_independent_plan_uses_the_reference_bitmap_alone() -> None:
    p = plan(seed("independent"), "chk1.1")
    assert {d: (x.mode, x.bitmaps) for d, x in p.items()} == {
        "vda": ("incremental", ["chk1.1"]),
        "vdb": ("incremental", ["chk1.1"]),
        "vdc": ("full", []),
    }


def test_chained_delete_of_the_leaf_reenables_and_merges_into_the_ancestor() -> None:
    st = seed("chained")
    events = delete(st, "chk2.2")
    kinds = [(type(e).__name__, e.disk, e.bitmap) for e in events
             if isinstance(e, BitmapEnabled | BitmapMerged | BitmapRemoved)]
    assert kinds == [
        ("BitmapEnabled", "vdb", "chk1.2"), ("BitmapMerged", "vdb", "chk2.2"),
        ("BitmapRemoved", "vdb", "chk2.2"),
        ("BitmapEnabled", "vdc", "chk2.1"), ("BitmapMerged", "vdc", "chk2.2"),
        ("BitmapRemoved", "vdc", "chk2.2"),
    ]
    assert active(st) == {"vda": ["chk1.2"], "vdb": ["chk1.2"], "vdc": ["chk2.1"]}
    assert st.current == "chk1.2"


def test_chained_delete_of_a_middle_checkpoint_merges_without_enabling() -> None:
    st = seed("chained")
    events = delete(st, "chk2.1")
    merged = [(e.disk, e.bitmap, e.into) for e in events if isinstance(e, BitmapMerged)]
    assert merged == [("vdb", "chk2.1", "chk1.1")]  # vdc: no ancestor has a vdc bitmap
    assert not any(isinstance(e, BitmapEnabled) for e in events)
    assert st.checkpoints["chk1.2"].parent == "chk1.1"


def test_independent_delete_removes_only_its_own_bitmaps() -> None:
    st = seed("independent")
    events = delete(st, "chk2.1")
    assert [(e.disk, e.bitmap) for e in events if isinstance(e, BitmapRemoved)] == [
        ("vdb", "chk2.1"), ("vdc", "chk2.1")]
    assert not any(isinstance(e, BitmapMerged | BitmapEnabled) for e in events)


def test_metadata_only_delete_touches_no_bitmap() -> None:
    st = seed("chained")
    before = active(st)
    events = delete(st, "chk2.2", metadata_only=True)
    assert len(events) == 1 and active(st) == before
    assert "chk2.2" not in st.checkpoints


# ---------------------------------------------------------------- delete tree rules
def chain(policy: str = "independent", names: tuple[str, ...] = ("c1", "c2", "c3")) -> DomainState:
    st = fresh(policy)
    for n in names:
        create(st, n)
    return st


def test_delete_reparents_children_to_the_parent() -> None:
    st = chain()
    delete(st, "c2")
    assert st.checkpoints["c3"].parent == "c1" and st.checkpoints["c1"].children == ["c3"]


def test_delete_of_a_root_makes_its_children_roots() -> None:
    st = chain()
    delete(st, "c1")
    assert st.roots() == ["c2"]


def test_delete_current_moves_current_to_its_parent_or_none() -> None:
    st = chain()
    delete(st, "c3")
    assert st.current == "c2"
    st2 = chain(names=("c1",))
    delete(st2, "c1")
    assert st2.current is None


def test_children_only_keeps_the_target_and_makes_it_current() -> None:
    st = chain()
    events = delete(st, "c1", children_only=True)
    assert events[-1].deleted == ("c3", "c2")  # deepest first
    assert list(st.checkpoints) == ["c1"] and st.current == "c1"
    create(st, "n")
    assert st.checkpoints["n"].parent == "c1"


def test_children_deletes_the_subtree_and_current_goes_to_the_target_parent() -> None:
    st = chain(names=("c1", "c2", "c3", "c4"))
    delete(st, "c2", children=True)
    assert list(st.checkpoints) == ["c1"] and st.current == "c1"


def test_children_and_children_only_are_mutually_exclusive() -> None:
    st = chain()
    with pytest.raises(LedgerError) as err:
        rules.decide_delete(st, "c1", children=True, children_only=True)
    assert err.value.code == "INVALID_ARG"


def test_delete_unknown_is_no_domain_checkpoint() -> None:
    with pytest.raises(LedgerError) as err:
        rules.decide_delete(fresh(), "ghost")
    assert err.value.code == "NO_DOMAIN_CHECKPOINT"
    assert "no domain checkpoint with matching name 'ghost'" in str(err.value)


# ------------------------------------------------------------------------ redefine
def redefine(state: DomainState, name: str | None, parent: str | None = None,
             creation_time: int | None = 100, uuid: str | None = None) -> None:
    req = CheckpointDef(name=name, parent=parent, creation_time=creation_time,
                        disks=(CheckpointDisk(name="vda"),))
    embedded = (uuid, state.disks) if uuid else None
    d = rules.decide_redefine(state, req, embedded)
    for ev in rules.redefined_events(state, d, "<xml/>"):
        state.apply(ev)


def test_redefine_in_topological_order_makes_the_last_one_current() -> None:
    st = fresh("independent")
    redefine(st, "r1")
    redefine(st, "r2", "r1")
    redefine(st, "r3", "r2")
    assert st.current == "r3"
    create(st, "n")
    assert st.checkpoints["n"].parent == "r3"


def test_redefine_of_a_sibling_does_not_move_current() -> None:
    st = fresh("independent")
    redefine(st, "b")
    redefine(st, "b2", "b")
    redefine(st, "b3", "b")
    assert st.current == "b2"
    assert sorted(st.checkpoints["b"].children) == ["b2", "b3"]


def test_redefine_in_place_keeps_the_children() -> None:
    st = chain()
    redefine(st, "c2", "c1", creation_time=5)
    assert st.checkpoints["c2"].children == ["c3"] and st.checkpoints["c2"].creation_time == 5


@pytest.mark.parametrize(
    ("name", "parent", "message"),
    [
        ("r1", "r1", "cannot set moment r1 as its own parent"),
        ("r1", "ghost", "parent ghost for moment r1 not found"),
        ("c1", "c3", "parent c3 would create cycle to c1"),
    ],
)
def test_redefine_parent_rules(name: str, parent: str, message: str) -> None:
    st = chain()
    with pytest.raises(LedgerError) as err:
        redefine(st, name, parent)
    assert err.value.code == "INVALID_ARG" and str(err.value) == f"invalid argument: {message}"


def test_redefine_requires_name_and_creation_time() -> None:
    st = fresh()
    with pytest.raises(LedgerError) as err:
        redefine(st, None)
    assert err.value.code == "XML_ERROR"
    with pytest.raises(LedgerError) as err:
        redefine(st, "r1", creation_time=None)
    assert err.value.code == "INTERNAL_ERROR"


def test_redefine_with_a_domain_of_another_uuid_is_refused() -> None:
    st = fresh()
    with pytest.raises(LedgerError, match="must use uuid u-1"):
        redefine(st, "r1", uuid="other-uuid")


def test_redefine_without_domain_does_no_alignment() -> None:
    st = fresh()
    req = CheckpointDef(name="r1", creation_time=1, disks=(CheckpointDisk(name="vdz"),))
    d = rules.decide_redefine(st, req, None)
    assert [(x.name, x.bitmap) for x in d.disks or ()] == [("vdz", "r1")]


def test_reload_current_is_the_unique_leaf_of_a_linear_chain_else_none() -> None:
    st = chain()
    assert rules.current_after_reload(st) == "c3"
    redefine(st, "side", "c1")
    assert rules.current_after_reload(st) is None


def test_state_round_trips_through_to_dict() -> None:
    st = seed("chained")
    again = DomainState.from_dict(st.to_dict())
    assert again.to_dict() == st.to_dict()


def test_in_place_redefine_does_not_resurrect_a_bitmap_observed_missing() -> None:
    from ledger.domain.events import DriftObserved

    st = chain()
    st.apply(DriftObserved(kind="bitmap-missing", checkpoint="c2", disk="vda", bitmap="c2"))
    assert plan(st, "c2")["vda"].mode == "full"
    redefine(st, "c2", "c1")
    assert "c2" not in st.bitmaps["vda"] and plan(st, "c2")["vda"].mode == "full"
