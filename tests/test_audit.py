"""Audit: `log` filters and output shapes, `history` of one checkpoint, `--as-of` time travel
and provenance (actor, host, tool, reason, correlation id) on every stored event."""

from __future__ import annotations

import json
import types
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers import DISKS3, Host, assert_one_error_line, diskspecs

import ledger.app.commands
import ledger.app.writer
from ledger import Ledger
from ledger.app.audit import LogFilter, parse_point
from ledger.domain.errors import LedgerError

DISKS = ("vda", "vdb", "vdc")
SEED = [("chk1.1", ["vda", "vdb"]), ("chk2.1", ["vdb", "vdc"]),
        ("chk1.2", ["vda", "vdb"]), ("chk2.2", ["vdb", "vdc"])]
T0 = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC).timestamp()
HOUR = 3600.0


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The ledger's clock, set by the test (``clock[0]`` is now, in epoch seconds)."""
    now = [T0]
    fake = types.SimpleNamespace(time=lambda: now[0])
    monkeypatch.setattr(ledger.app.writer, "time", fake)  # recorded_at
    monkeypatch.setattr(ledger.app.commands, "time", fake)  # what rules see as now
    return now


def seed(h: Host, policy: str = "chained", dom: str = "vm", clock: list[float] | None = None,
         actor: str = "alice@ops") -> None:
    """The seed's four checkpoints on vda/vdb/vdc, one hour apart when a clock is given
    (chk1.1 at 10:00, chk2.1 at 11:00, chk1.2 at 12:00, chk2.2 at 13:00 UTC)."""
    h.ok("mock", "define", dom, *DISKS3, "--policy", policy)
    for i, (name, covered) in enumerate(SEED):
        if clock is not None:
            clock[0] = T0 + i * HOUR
        h.ok("--actor", actor, "create", dom, name, *diskspecs(covered, DISKS))


def positions(h: Host, *args: str) -> list[int]:
    return [e["position"] for e in h.ok_json("log", *args)]


def types_of(h: Host, *args: str) -> list[tuple[int, str]]:
    return [(e["position"], e["type"]) for e in h.ok_json("log", *args)]


# Under chained, the seed then `delete chk2.1` records (positions):
#  1 DomainEnrolled  2 Created chk1.1  3 Disabled vdb/chk1.1  4 Created chk2.1
#  5 Disabled vda/chk1.1  6 Disabled vdb/chk2.1  7 Created chk1.2
#  8 Disabled vdb/chk1.2  9 Disabled vdc/chk2.1  10 Created chk2.2
#  11 Merged vdb/chk2.1->chk1.1  12 Removed vdb/chk2.1  13 Removed vdc/chk2.1  14 Deleted chk2.1
@pytest.fixture
def played(host: Host, clock: list[float]) -> Host:
    seed(host, clock=clock)
    clock[0] = T0 + 4 * HOUR
    host.ok("--actor", "bob@backup", "delete", "vm", "chk2.1", "--reason", "retention")
    clock[0] = T0 + 5 * HOUR
    host.ok("mock", "define", "other", "--disk", "vda")
    host.ok("--actor", "carol", "create", "other", "o1")  # 15 DomainEnrolled, 16 Created
    return host


def test_seed_positions_are_as_documented(played: Host) -> None:
    log = played.ok_json("log")
    assert [e["position"] for e in log] == list(range(1, 17))
    assert [e["type"] for e in log[10:14]] == ["BitmapMerged", "BitmapRemoved", "BitmapRemoved",
                                                "CheckpointDeleted"]


def test_log_filter_domain_disk_checkpoint(played: Host) -> None:
    assert positions(played, "--domain", "other") == [15, 16]
    assert positions(played, "--domain", "vm") == list(range(1, 15))
    # vdc: enrolment, checkpoints with a bitmap on vdc, bitmap events on vdc
    assert positions(played, "--disk", "vdc") == [1, 4, 9, 10, 13]
    assert positions(played, "--disk", "vda") == [1, 2, 5, 7, 15, 16]
    assert positions(played, "--disk", "vda", "--disk", "vdc") == [1, 2, 4, 5, 7, 9, 10, 13, 15,
                                                                    16]
    # chk2.1: its creation, its bitmaps (and the one it disabled), its delete
    assert positions(played, "--checkpoint", "chk2.1") == [3, 4, 6, 9, 11, 12, 13, 14]
    # chk1.2: created, its bitmap disabled, reparented by the delete of chk2.1
    assert positions(played, "--checkpoint", "chk1.2") == [5, 6, 7, 8, 14]
    # chk1.1: merge target and new parent in the delete
    assert 11 in positions(played, "--checkpoint", "chk1.1")
    assert 14 in positions(played, "--checkpoint", "chk1.1")
    assert positions(played, "--checkpoint", "nope") == []


def test_log_filter_type_actor_and_positions(played: Host) -> None:
    assert positions(played, "--type", "CheckpointCreated") == [2, 4, 7, 10, 16]
    assert positions(played, "--type", "BitmapMerged", "--type", "checkpointdeleted") == [11, 14]
    assert positions(played, "--actor", "bob@backup") == [11, 12, 13, 14]
    assert positions(played, "--actor", "carol") == [15, 16]
    assert positions(played, "--actor", "*@ops") == list(range(1, 11))
    assert positions(played, "--actor", "bob*", "--actor", "carol") == list(range(11, 17))
    assert positions(played, "--since", "12") == [12, 13, 14, 15, 16]
    assert positions(played, "--until", "3") == [1, 2, 3]
    assert positions(played, "--since", "5", "--until", "5") == [5]


def test_log_filter_times(played: Host) -> None:
    # chk1.1 10:00 (1-2), chk2.1 11:00 (3-4), chk1.2 12:00 (5-7), chk2.2 13:00 (8-10),
    # delete 14:00 (11-14), other 15:00 (15-16)
    assert positions(played, "--since", "2026-11-29T12:00:00Z") == list(range(5, 17))
    assert positions(played, "--until", "2026-11-29T12:00:00Z") == list(range(1, 8))
    assert positions(played, "--since", "2026-11-29 12:00", "--until", "2026-11-29 13:30") == \
        list(range(5, 11))
    assert positions(played, "--since", "2026-11-29T13:00:00+02:00",
                     "--until", "2026-11-29T11:59:59Z") == [3, 4]  # 13:00+02:00 is 11:00Z
    assert positions(played, "--until", "2026-11-29") == list(range(1, 17))  # the whole day
    assert positions(played, "--since", "2026-11-30") == []
    assert positions(played, "--until", "2026-11-28") == []
    # a position and a time mix
    assert positions(played, "--since", "6", "--until", "2026-11-29T12:00:00Z") == [6, 7]


def test_log_filter_combinations(played: Host) -> None:
    assert positions(played, "--domain", "vm", "--disk", "vdb", "--type", "BitmapDisabled",
                     "--since", "4") == [6, 8]
    assert positions(played, "--checkpoint", "chk2.1", "--actor", "bob@backup",
                     "--type", "BitmapRemoved") == [12, 13]
    assert positions(played, "--disk", "vdc", "--checkpoint", "chk2.2") == [9, 10]
    assert positions(played, "--disk", "vda", "--since", "2026-11-29T14:00:00Z",
                     "--domain", "vm") == []


@pytest.mark.parametrize("args", [
    ("--since", "9", "--until", "3"),
    ("--since", "2026-11-29T12:00:00Z", "--until", "2026-11-29 11:00"),
    ("--since", "tomorrow"),
    ("--until", "2026-13-45"),
    ("--since", "-3"),
    ("--type", "CheckpointExploded"),
])
def test_log_bad_arguments_are_one_line(played: Host, args: tuple[str, ...]) -> None:
    run = played.cli("log", *args)
    assert run.stdout == ""
    assert_one_error_line(run, "INVALID_ARG")


def test_log_json_and_jsonl_together_is_a_usage_error(played: Host) -> None:
    run = played.main("log", "--json", "--jsonl")
    assert run.stdout == "" and run.code == 2
    assert "mutually exclusive" in assert_one_error_line(run, "USAGE")


def test_log_unknown_domain(played: Host) -> None:
    assert_one_error_line(played.cli("log", "--domain", "ghost"), "NO_DOMAIN")


def test_log_json_and_jsonl_shapes(played: Host) -> None:
    keys = {"schema", "position", "stream_version", "domain", "stream_id", "type",
            "recorded_at", "actor", "data", "host", "reason", "correlation_id", "tool",
            "tool_version"}
    rows = played.ok_json("log", "--domain", "vm")
    assert all(set(r) == keys for r in rows)
    assert rows[0]["recorded_at"] == "2026-11-29T10:00:00Z"
    assert rows[13]["reason"] == "retention" and rows[13]["data"]["reparented"] == {
        "chk1.2": "chk1.1"}
    lines = played.ok("log", "--domain", "vm", "--jsonl").stdout.splitlines()
    assert [json.loads(line) for line in lines] == rows
    assert played.ok("log", "--jsonl", "--since", "99").stdout == ""
    assert played.ok_json("log", "--since", "99") == []


def test_log_table(played: Host) -> None:
    out = played.ok("log", "--checkpoint", "chk2.1").stdout.splitlines()
    assert out[0].split()[:6] == ["Pos", "Recorded", "Domain", "Event", "What", "Actor"]
    assert "Reason" in out[0]  # the delete has one
    assert len(out) == 2 + 8
    assert any("vdb/chk2.1 -> chk1.1" in line for line in out)


def history(h: Host, name: str) -> list[tuple[str, str]]:
    return [(f["what"], f["detail"]) for f in h.ok_json("history", "vm", name)]


def test_history_of_chk2_1_under_chained(host: Host, clock: list[float]) -> None:
    seed(host, clock=clock)
    before = host.ok_json("history", "vm", "chk2.1")
    assert [f["what"] for f in before] == ["created", "bitmap disabled", "bitmap disabled"]
    created = before[0]
    assert set(created) >= {"position", "recorded_at", "actor", "host", "reason", "what",
                            "detail"}
    assert created["actor"] == "alice@ops" and created["host"] and created["position"] == 4
    assert created["tool"].startswith("ckpt-ledger ")
    assert "parent chk1.1" in created["detail"] and "vdb/chk2.1, vdc/chk2.1" in created["detail"]
    assert "chk1.2" in before[1]["detail"] and "vdb/chk2.1" in before[1]["detail"]
    assert "chk2.2" in before[2]["detail"] and "vdc/chk2.1" in before[2]["detail"]

    host.ok("--actor", "bob@backup", "delete", "vm", "chk2.1", "--reason", "retention")
    after = host.ok_json("history", "vm", "chk2.1")
    assert after[:3] == before
    facts = [(f["what"], f["detail"]) for f in after[3:]]
    assert facts == [
        ("bitmap merged", "vdb/chk2.1 into vdb/chk1.1"),
        ("bitmap removed", "vdb/chk2.1 removed from the disk"),
        ("bitmap removed", "vdc/chk2.1 removed from the disk"),
        ("child reparented", "chk1.2 moved to chk1.1"),
        ("deleted", "deleted (no flags)"),
    ]
    assert {f["actor"] for f in after[3:]} == {"bob@backup"}
    assert {f["reason"] for f in after[3:]} == {"retention"}
    # the other side of the same facts
    assert ("bitmap merged from", "vdb/chk2.1 (chk2.1 deleted) merged into vdb/chk1.1") in \
        history(host, "chk1.1")
    assert ("adopted child", "chk1.2 now a child of chk1.1 (chk2.1 deleted)") in \
        history(host, "chk1.1")
    assert ("reparented", "parent chk2.1 -> chk1.1 (chk2.1 deleted)") in history(host, "chk1.2")
    text = host.ok("history", "vm", "chk2.1").stdout.splitlines()
    assert len(text) == len(after)
    assert "bob@backup" in text[-1] and "retention" in text[-1] and "deleted" in text[-1]


def test_history_delete_flags_and_unknowns(host: Host) -> None:
    seed(host, "independent")
    host.ok("delete", "vm", "chk2.2", "--metadata-only")
    host.ok("delete", "vm", "chk2.1", "--children")
    assert history(host, "chk2.2")[-1] == (
        "deleted", "deleted (--metadata-only); bitmaps left on the disks")
    assert history(host, "chk1.2")[-1] == ("deleted", "deleted along with chk2.1 (--children)")
    assert history(host, "chk2.1")[-1] == ("deleted", "deleted (--children)")
    assert [w for w, _ in history(host, "chk2.1")] == [
        "created", "bitmap removed", "bitmap removed", "deleted"]
    assert_one_error_line(host.cli("history", "vm", "never"), "NO_DOMAIN_CHECKPOINT")
    assert_one_error_line(host.cli("history", "ghost", "chk1.1"), "NO_DOMAIN")


def snapshot(h: Host) -> dict[str, object]:
    out: dict[str, object] = {
        "list": h.ok_json("list", "vm"),
        "bitmaps": h.ok_json("bitmaps", "vm"),
        "tree": h.ok("list", "vm", "--tree").stdout,
    }
    names = [v["name"] for v in out["list"]]  # type: ignore[union-attr]
    if "chk1.1" in names:
        out["plan"] = h.ok_json("plan", "vm", "--since", "chk1.1")
        out["show"] = h.ok_json("show", "vm", "chk1.1")
        out["xml"] = h.ok("show", "vm", "chk1.1", "--xml").stdout
    return out


def as_of(h: Host, point: str, keys: set[str]) -> dict[str, object]:
    out: dict[str, object] = {
        "list": h.ok_json("list", "vm", "--as-of", point),
        "bitmaps": h.ok_json("bitmaps", "vm", "--as-of", point),
        "tree": h.ok("list", "vm", "--tree", "--as-of", point).stdout,
    }
    if "plan" in keys:
        out["plan"] = h.ok_json("plan", "vm", "--since", "chk1.1", "--as-of", point)
        out["show"] = h.ok_json("show", "vm", "chk1.1", "--as-of", point)
        out["xml"] = h.ok("show", "vm", "chk1.1", "--xml", "--as-of", point).stdout
    return out


@pytest.mark.parametrize("policy", ["chained", "independent"])
def test_as_of_answers_what_the_commands_printed_then(host: Host, clock: list[float],
                                                      policy: str) -> None:
    host.ok("mock", "define", "vm", *DISKS3, "--policy", policy)
    steps = [["create", "vm", n, *diskspecs(c, DISKS)] for n, c in SEED]
    steps += [["delete", "vm", "chk2.1"], ["delete", "vm", "chk2.2", "--metadata-only"],
              ["create", "vm", "chk3", "--disk", "vdc"], ["delete", "vm", "chk1.2", "--children"]]
    seen: list[tuple[int, float, dict[str, object]]] = []
    for i, step in enumerate(steps):
        clock[0] = T0 + i * HOUR
        host.ok(*step)
        seen.append((host.event_count(), clock[0], snapshot(host)))
    assert len({pos for pos, _, _ in seen}) == len(steps)
    for pos, when, then in seen:
        assert as_of(host, str(pos), set(then)) == then, f"--as-of {pos}"
        stamp = datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert as_of(host, stamp, set(then)) == then, f"--as-of {stamp}"
    # the live answer is untouched by the time travel
    assert snapshot(host) == seen[-1][2]


def test_as_of_errors(host: Host, clock: list[float]) -> None:
    seed(host, clock=clock)
    assert_one_error_line(host.cli("list", "vm", "--as-of", "0"), "NO_DOMAIN")
    assert_one_error_line(host.cli("bitmaps", "vm", "--as-of", "2026-11-28"), "NO_DOMAIN")
    assert_one_error_line(host.cli("list", "vm", "--as-of", "soon"), "INVALID_ARG")
    assert_one_error_line(host.cli("show", "vm", "chk2.2", "--as-of", "9"), "NO_DOMAIN_CHECKPOINT")
    assert_one_error_line(host.cli("plan", "vm", "--since", "chk2.1", "--as-of", "2"),
                          "NO_DOMAIN_CHECKPOINT")
    assert host.ok_json("list", "vm", "--as-of", "1") == []
    assert host.ok_json("list", "vm", "--as-of", "2026-11-29") == host.ok_json("list", "vm")


def test_state_at_library(host: Host, clock: list[float]) -> None:
    seed(host, clock=clock)
    with Ledger.open(store=host.store) as lg:
        live = lg.state("vm")
        version = live.version
        at4 = lg.state_at("vm", 4)
        assert sorted(at4.checkpoints) == ["chk1.1", "chk2.1"] and at4.position == 4
        assert at4 is not live and lg.state("vm").version == version
        when = datetime(2026, 11, 29, 11, 30)  # naive = UTC
        assert lg.state_at("vm", when).position == 4
        assert lg.state_at("vm", "2026-11-29T11:30:00Z").position == 4
        assert lg.state_at("vm", None) is live
        assert [v.name for v in lg.list("vm", as_of=7)] == ["chk1.1", "chk1.2", "chk2.1"]
        assert lg.bitmaps("vm", as_of=2).disks["vdb"][0].active is True
        assert lg.bitmaps("vm", as_of=3).disks["vdb"][0].active is False
        with pytest.raises(LedgerError) as err:
            lg.state_at("vm", datetime(2026, 11, 29, 9, 59, tzinfo=UTC))
        assert err.value.code == "NO_DOMAIN"


def test_parse_point_and_filter_check() -> None:
    assert parse_point("42") == 42 and parse_point(7) == 7
    assert parse_point("2026-11-29T18:00:00Z") == datetime(2026, 11, 29, 18, tzinfo=UTC)
    assert parse_point("2026-11-29 18:00") == datetime(2026, 11, 29, 18, tzinfo=UTC)
    assert parse_point("2026-11-29T20:00+02:00") == datetime(2026, 11, 29, 18, tzinfo=UTC)
    assert parse_point("2026-11-29") == datetime(2026, 11, 29, tzinfo=UTC)
    assert parse_point("2026-11-29", upper=True) == datetime(2026, 11, 29, 23, 59, 59, 999999,
                                                             tzinfo=UTC)
    for bad in ("", "x", "2026-02-30", "-1", True):
        with pytest.raises(LedgerError):
            parse_point(bad)  # type: ignore[arg-type]
    with pytest.raises(LedgerError):
        LogFilter.from_options(since="2026-11-30", until="2026-11-29 12:00")
    LogFilter.from_options(since="2026-11-29", until="2026-11-29")  # the whole day: fine
    LogFilter.from_options(since="50", until="2026-11-29")  # not comparable: fine


def test_correlation_id_reason_and_tool_are_stored(host: Host) -> None:
    host.ok("mock", "define", "vm", "--disk", "vda")
    host.ok("--correlation-id", "job-17", "--actor", "ops@desk", "create", "vm", "c1",
            "--reason", "nightly backup")
    r = host.cli("create", "vm", "c2", env=host.env(CKPT_LEDGER_CORRELATION_ID="ticket-9"))
    assert r.code == 0, r.stderr
    host.ok("delete", "vm", "c2")
    log = host.ok_json("log")
    assert [(e["type"], e["correlation_id"], e["reason"]) for e in log] == [
        ("DomainEnrolled", "job-17", "nightly backup"),
        ("CheckpointCreated", "job-17", "nightly backup"),
        ("CheckpointCreated", "ticket-9", None),
        ("BitmapRemoved", None, None), ("CheckpointDeleted", None, None)]
    assert log[0]["actor"] == "ops@desk" and log[0]["host"]
    with Ledger.open(store=host.store, hypervisor=host.hv, correlation_id="lib-1") as lg:
        lg.create("vm", "c3")
        lg.create("vm", "c4", correlation_id="call-2", reason="why not")
        lg.delete("vm", "c4")
        mine = lg.log("vm", LogFilter(since=6))
    assert [(e.correlation_id, e.reason) for e in mine] == [
        ("lib-1", None), ("call-2", "why not"), ("lib-1", None), ("lib-1", None)]
    assert all(e.tool == "ckpt-ledger" and e.tool_version for e in mine)
    # and it is really in the stored envelope
    from ledger.log.records import decode_payload
    with Ledger.open(store=host.store) as lg:
        rec = list(lg.store.read_all())[0]
    assert decode_payload(rec.payload)[1]["correlation_id"] == "job-17"


def test_log_json_streams_exactly_what_one_json_document_would_be(played: Host) -> None:
    """``log --json`` and ``--jsonl`` are written event by event as the store is read (any
    length in constant memory): the array is byte for byte the one document of the same
    events, and an empty selection is ``[]``."""
    import json

    rows = [json.loads(line) for line in played.ok("log", "--jsonl").stdout.splitlines()]
    assert len(rows) > 3
    assert played.ok("log", "--json").stdout == json.dumps(rows, indent=2,
                                                           ensure_ascii=False) + "\n"
    assert played.ok("log", "--json", "--type", "BackupEnded").stdout == "[]\n"
    one = played.ok("log", "--json", "--since", str(rows[-1]["position"])).stdout
    assert json.loads(one) == rows[-1:]
