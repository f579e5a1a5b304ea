"""The ``ckpt-ledger`` CLI, command by command, as a specification of libvirt's behaviour.

Everything runs against real parts: a SQLite event store and the mock hypervisor's state
file on ``tmp_path``. The seed scenario (libvir-list design thread) is replayed under both
bitmap policies and every backup plan is *proven* by guest writes and the dirty extents of
the plan's bitmaps.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import BLOCK, DISKS3, MIB, Host, assert_one_error_line, diskspecs

from adapters.mock import MockHypervisor

SEED = [  # (checkpoint, disks with a bitmap): disks A, B, C = vda, vdb, vdc
    ("chk1.1", ("vda", "vdb")),
    ("chk2.1", ("vdb", "vdc")),
    ("chk1.2", ("vda", "vdb")),
    ("chk2.2", ("vdb", "vdc")),
]
DISKS = ("vda", "vdb", "vdc")
ORDER = [n for n, _ in SEED]


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def play_seed(h: Host, policy: str, dom: str = "vm") -> dict[str, list[tuple[str | None, int]]]:
    """Define vda/vdb/vdc, then write one block on every disk before and after each
    checkpoint of the seed. Returns, per disk, (last checkpoint before the write, offset)."""
    h.ok("mock", "define", dom, *DISKS3, "--policy", policy)
    written: dict[str, list[tuple[str | None, int]]] = {d: [] for d in DISKS}
    last: str | None = None
    for step, (name, covered) in enumerate([(None, ()), *SEED]):
        if name is not None:
            h.ok("create", dom, name, *diskspecs(covered, DISKS))
            last = name
        for i, disk in enumerate(DISKS):
            off = (step + 1) * MIB + i * 4 * BLOCK  # distinct, never adjacent
            h.write(dom, disk, off)
            written[disk].append((last, off))
    return written


def since(written: list[tuple[str | None, int]], ref: str) -> list[list[int]]:
    """The blocks written after checkpoint ``ref`` was created, as [offset, length] extents."""
    after = ORDER[ORDER.index(ref):]
    return [[off, BLOCK] for cp, off in written if cp in after]


def prove_plan(h: Host, dom: str, ref: str, written: dict[str, list[tuple[str | None, int]]]
               ) -> dict[str, dict[str, object]]:
    """Every non-full disk of the plan: the merged bitmaps hold exactly the blocks written
    since ``ref`` (not one more, not one less)."""
    plan = h.ok_json("plan", dom, "--since", ref)
    assert plan["domain"] == dom and plan["since"] == ref
    for disk, p in plan["disks"].items():
        if p["mode"] != "full":
            assert h.extents(dom, disk, p["bitmaps"]) == since(written[disk], ref), (ref, disk)
    return plan["disks"]


def modes(disks: dict[str, dict[str, object]]) -> dict[str, tuple[object, object]]:
    return {d: (p["mode"], p["bitmaps"]) for d, p in disks.items()}


# ------------------------------------------------------------------ mock commands
def test_mock_define_disk_kinds_and_shut_off(host: Host) -> None:
    """`mock define DOMAIN --disk vda --disk vdb:raw --disk vdc:ro [--shut-off]`."""
    r = host.ok("mock", "define", "vm", "--disk", "vda", "--disk", "vdb:raw", "--disk", "vdc:ro")
    assert "vm" in r.stdout and "running" in r.stdout
    hv = MockHypervisor(str(host.state))
    info = hv.domain_info("vm")
    assert [(d.name, d.format, d.readonly) for d in info.disks] == [
        ("vda", "qcow2", False), ("vdb", "raw", False), ("vdc", "qcow2", True)]
    assert info.running and info.policy == "independent"
    host.ok("mock", "define", "off", "--disk", "vda", "--shut-off", "--policy", "chained")
    off = hv.domain_info("off")
    assert not off.running and off.policy == "chained"


def test_mock_start_stop(host: Host) -> None:
    """`mock stop` shuts the domain off (create is then refused); `mock start` restarts it."""
    host.ok("mock", "define", "vm", "--disk", "vda")
    host.ok("mock", "stop", "vm")
    r = host.cli("create", "vm", "c1")
    assert r.code != 0 and "OPERATION_UNSUPPORTED" in r.stderr
    host.ok("mock", "start", "vm")
    host.ok("create", "vm", "c1")
    assert host.names("vm") == ["c1"]


def test_mock_write_and_extents_join_adjacent_ranges(host: Host) -> None:
    """`mock extents DOMAIN DISK BITMAP... --json` = {"disk","bitmaps","extents"}; writes are
    rounded to 64 KiB clusters and adjacent ranges are joined."""
    host.ok("mock", "define", "vm", "--disk", "vda")
    host.ok("create", "vm", "c1")
    host.write("vm", "vda", 0, BLOCK)
    host.write("vm", "vda", BLOCK, 10)  # adjacent cluster: joined
    host.ok("mock", "write", "vm", "vda", "1M", "1")  # suffixes accepted; rounded up
    data = host.ok_json("mock", "extents", "vm", "vda", "c1")
    assert data == {"schema": "ckpt-ledger/mock-extents/1", "disk": "vda", "bitmaps": ["c1"],
                    "extents": [[0, 2 * BLOCK], [MIB, BLOCK]]}
    plain = host.ok("mock", "extents", "vm", "vda", "c1").stdout
    assert "dirty" in plain


# -------------------------------------------------------------------- create
def test_create_defaults_print_xml_and_description(host: Host) -> None:
    """Without --disk, every non-readonly disk gets a bitmap and read-only disks get
    checkpoint='no' (§2.3 rule 5); the bitmap defaults to the checkpoint name (rule 7)."""
    host.ok("mock", "define", "vm", "--disk", "vda", "--disk", "vdb", "--disk", "vdc:ro")
    xml = host.ok("create", "vm", "c1", "--disk", "vda,bitmap=c1", "--disk",
                  "vdb,checkpoint=no", "--description", "first", "--print-xml").stdout
    assert xml == ("<domaincheckpoint>\n  <name>c1</name>\n  <description>first</description>\n"
                   "  <disks>\n    <disk name='vda' bitmap='c1'/>\n"
                   "    <disk name='vdb' checkpoint='no'/>\n  </disks>\n</domaincheckpoint>\n")
    assert host.event_count() == 0, "--print-xml creates nothing"
    r = host.ok("create", "vm", "c1", "--description", "first")
    assert r.stdout == "Domain checkpoint c1 created\n"
    (view,) = host.ok_json("list", "vm")
    assert set(view) == {"schema", "name", "parent", "creation_time", "description", "current",
                         "disks", "orphan"}
    assert view["description"] == "first" and view["current"] and view["parent"] is None
    assert [(d["name"], d["checkpoint"], d["bitmap"]) for d in view["disks"]] == [
        ("vda", "bitmap", "c1"), ("vdb", "bitmap", "c1"), ("vdc", "no", None)]


def test_create_listed_disks_only_get_bitmaps(host: Host) -> None:
    """With --disk, every unlisted disk gets checkpoint='no' (§2.3 rule 6), and the disks
    come out in the domain's order, not the input order (§2.2 item 3)."""
    host.ok("mock", "define", "vm", *DISKS3)
    host.ok("create", "vm", "c1", "--disk", "vdc", "--disk", "vda")
    view = host.ok_json("show", "vm", "c1")
    assert [(d["name"], d["checkpoint"]) for d in view["disks"]] == [
        ("vda", "bitmap"), ("vdb", "no"), ("vdc", "bitmap")]


def test_create_without_name_uses_creation_time(host: Host) -> None:
    """`name` defaults to str(creationTime) (§9 rule 6)."""
    host.ok("mock", "define", "vm", "--disk", "vda")
    view = host.ok_json("create", "vm")
    assert view["name"] == str(view["creation_time"])


def test_create_parent_is_current(host: Host) -> None:
    """A new checkpoint's parent is the current one, and it becomes current (§5.2 item 1)."""
    host.ok("mock", "define", "vm", "--disk", "vda")
    for n in ("a", "b", "c"):
        host.ok("create", "vm", n)
    assert host.parents("vm") == {"a": None, "b": "a", "c": "b"}
    assert host.current("vm") == "c"


# -------------------------------------------------------------------- queries
def test_show_plain_json_and_xml(host: Host) -> None:
    """`show DOMAIN NAME [--xml] [--no-domain]`: the XML is libvirt's fixed layout (§2.2)."""
    host.ok("mock", "define", "vm", "--disk", "vda")
    host.ok("create", "vm", "a")
    host.ok("create", "vm", "b", "--description", "x<y")
    assert "Parent:         a" in host.ok("show", "vm", "b").stdout
    view = host.ok_json("show", "vm", "b")
    assert view["parent"] == "a" and view["description"] == "x<y"
    full = host.ok("show", "vm", "b", "--xml").stdout
    assert "<domain type='mock'>" in full
    bare = host.ok("show", "vm", "b", "--xml", "--no-domain").stdout
    ct = view["creation_time"]
    assert bare == ("<domaincheckpoint>\n  <name>b</name>\n  <description>x&lt;y</description>\n"
                    "  <parent>\n    <name>a</name>\n  </parent>\n"
                    f"  <creationTime>{ct}</creationTime>\n  <disks>\n"
                    "    <disk name='vda' checkpoint='bitmap' bitmap='b'/>\n  </disks>\n"
                    "</domaincheckpoint>\n")


def test_list_filters(host: Host) -> None:
    """`list` filters: --roots, --leaves, --no-leaves, --from [--descendants], --topological,
    --tree (libvirt's LIST_* flags, §3.3)."""
    host.ok("mock", "define", "vm", "--disk", "vda")
    for n in ("b", "a", "c"):  # chain b <- a <- c: name order differs from topology
        host.ok("create", "vm", n)
    assert host.names("vm") == ["a", "b", "c"]
    assert host.names("vm", "--topological") == ["b", "a", "c"]
    assert host.names("vm", "--roots") == ["b"]
    assert host.names("vm", "--leaves") == ["c"]
    assert host.names("vm", "--no-leaves") == ["a", "b"]
    assert host.names("vm", "--from", "b") == ["a"]
    assert host.names("vm", "--from", "b", "--descendants") == ["a", "c"]
    assert host.names("vm", "--from", "b", "--descendants", "--topological") == ["a", "c"]
    assert host.names("vm", "--leaves", "--no-leaves") == []
    tree = host.ok("list", "vm", "--tree").stdout.splitlines()
    assert [t.rstrip() for t in tree] == ["b", "  |", "  +- a", "      |", "      +- c", ""]
    assert host.ok("list", "vm", "--name").stdout == "a\nb\nc\n"
    assert "Name" in host.ok("list", "vm").stdout


def test_log_json_shape_and_actor_from_env(host: Host) -> None:
    """`log [--domain D] --json`: {"position","stream_version","domain","type","recorded_at",
    "actor","data"}; the actor is CKPT_LEDGER_ACTOR (or --actor)."""
    host.ok("mock", "define", "vm", "--disk", "vda")
    host.ok("mock", "define", "other", "--disk", "vda")
    r = host.cli("create", "vm", "c1", env=host.env(CKPT_LEDGER_ACTOR="alice@ops"))
    assert r.code == 0, r.stderr
    host.ok("--actor", "bob", "create", "other", "o1")
    log = host.ok_json("log")
    required = {"position", "stream_version", "domain", "type", "recorded_at", "actor", "data"}
    assert all(required <= set(e) for e in log)
    assert [e["position"] for e in log] == list(range(1, len(log) + 1))
    mine = host.ok_json("log", "--domain", "vm")
    assert {e["domain"] for e in mine} == {"vm"}
    assert [e["stream_version"] for e in mine] == list(range(1, len(mine) + 1))
    created = [e for e in mine if e["type"] == "CheckpointCreated"]
    assert created[0]["actor"] == "alice@ops" and created[0]["data"]["name"] == "c1"
    assert {e["actor"] for e in log if e["domain"] == "other"} == {"bob"}
    assert "CheckpointCreated" in host.ok("log").stdout


def test_global_options_override_environment(host: Host, tmp_path: Path) -> None:
    """--store/--hypervisor take precedence over CKPT_LEDGER_STORE/CKPT_LEDGER_HYPERVISOR."""
    other = Host(tmp_path / "other")
    other.folder.mkdir()
    args = ["--store", other.store, "--hypervisor", other.hv]
    host.ok(*args, "mock", "define", "vm", "--disk", "vda")
    host.ok(*args, "create", "vm", "c1")
    assert not host.state.exists() and other.state.exists()
    assert other.event_count() > 0 and host.event_count() == 0
    # a bare path is SQLite
    r = host.cli("--store", str(other.db), "list", "vm", "--json",
                 env=host.env(CKPT_LEDGER_HYPERVISOR=None))
    assert r.code == 0 and [v["name"] for v in r.json()] == ["c1"]


def test_demo_proves_every_plan(host: Host) -> None:
    """`demo`: the seed scenario on both policies; every plan is proven OK."""
    r = host.ok("demo")
    assert "OK, exactly the blocks written since" in r.stdout
    assert "WRONG" not in r.stdout


# ------------------------------------------------------------- seed scenario
@pytest.mark.parametrize("policy", ["chained", "independent"])
def test_seed_chain_is_linear(host: Host, policy: str) -> None:
    """Without REDEFINE there is no fan-out: chk1.1 <- chk2.1 <- chk1.2 <- chk2.2."""
    play_seed(host, policy)
    assert host.names("vm", "--topological") == ORDER
    assert host.parents("vm") == {"chk1.1": None, "chk2.1": "chk1.1", "chk1.2": "chk2.1",
                                  "chk2.2": "chk1.2"}
    assert host.current("vm") == "chk2.2"


def test_seed_chained_bitmaps_and_plans(host: Host) -> None:
    """Policy A (libvirt 5.6-6.4): one active bitmap per disk, the newest; a backup from X
    merges every bitmap from X to current (§4.1 A1, A3)."""
    written = play_seed(host, "chained")
    bm = host.ok_json("bitmaps", "vm")
    assert bm["domain"] == "vm" and bm["policy"] == "chained"
    for disk, rows in bm["disks"].items():
        assert set(rows[0]) == {"bitmap", "checkpoint", "active"}
        assert [r["bitmap"] for r in rows if r["active"]] == [rows[-1]["bitmap"]], disk
    assert [r["bitmap"] for r in bm["disks"]["vdb"]] == ORDER
    p = modes(prove_plan(host, "vm", "chk1.2", written))
    assert p == {"vda": ("incremental", ["chk1.2"]),
                 "vdb": ("differential", ["chk1.2", "chk2.2"]),
                 "vdc": ("full", [])}
    p = modes(prove_plan(host, "vm", "chk1.1", written))
    assert p == {"vda": ("differential", ["chk1.1", "chk1.2"]),
                 "vdb": ("differential", ORDER),
                 "vdc": ("full", [])}
    p = modes(prove_plan(host, "vm", "chk2.1", written))
    assert p["vdc"] == ("differential", ["chk2.1", "chk2.2"]) and p["vda"][0] == "full"
    prove_plan(host, "vm", "chk2.2", written)


def test_seed_independent_bitmaps_and_plans(host: Host) -> None:
    """Policy B (libvirt >= 6.5): every bitmap records; a backup from X uses bitmap X alone,
    and a disk with checkpoint='no' in X needs a full backup (§4.2 B1, B3)."""
    written = play_seed(host, "independent")
    bm = host.ok_json("bitmaps", "vm")
    assert bm["policy"] == "independent"
    assert all(r["active"] for rows in bm["disks"].values() for r in rows)
    assert {d: [r["bitmap"] for r in rows] for d, rows in bm["disks"].items()} == {
        "vda": ["chk1.1", "chk1.2"], "vdb": ORDER, "vdc": ["chk2.1", "chk2.2"]}
    for ref, covered in SEED:
        p = prove_plan(host, "vm", ref, written)
        for disk in DISKS:
            expect = ("incremental", [ref]) if disk in covered else ("full", [])
            assert modes(p)[disk] == expect, (ref, disk)
            if disk not in covered:
                assert "checkpoint='no'" in p[disk]["reason"]


# ---------------------------------------------------------- delete semantics
def test_chained_delete_leaf_merges_into_nearest_ancestor(host: Host) -> None:
    """Policy A2: deleting the leaf re-enables the nearest ancestor's bitmap on each disk and
    merges the deleted bitmap into it, so no dirty block is lost."""
    written = play_seed(host, "chained")
    r = host.ok("delete", "vm", "chk2.2")
    assert r.stdout == "Domain checkpoint chk2.2 deleted\n"
    bm = host.ok_json("bitmaps", "vm")["disks"]
    assert [(b["bitmap"], b["active"]) for b in bm["vdb"]] == [
        ("chk1.1", False), ("chk2.1", False), ("chk1.2", True)]
    assert [(b["bitmap"], b["active"]) for b in bm["vdc"]] == [("chk2.1", True)]
    # chk1.2's bitmap on vdb now holds everything since chk1.2, chk2.2's blocks included
    assert host.extents("vm", "vdb", ["chk1.2"]) == since(written["vdb"], "chk1.2")
    assert host.extents("vm", "vdc", ["chk2.1"]) == since(written["vdc"], "chk2.1")
    r = host.cli("mock", "extents", "vm", "vdb", "chk2.2")
    assert r.code != 0 and "CHECKPOINT_INCONSISTENT" in r.stderr
    assert host.current("vm") == "chk1.2"
    # the re-enabled bitmap records new writes; plans stay exact
    for disk in DISKS:
        host.write("vm", disk, 900 * MIB)
        written[disk].append(("chk2.2", 900 * MIB))
    p = modes(prove_plan(host, "vm", "chk1.2", written))
    assert p["vdb"] == ("incremental", ["chk1.2"])
    prove_plan(host, "vm", "chk1.1", written)


def test_independent_delete_removes_only_its_own_bitmaps(host: Host) -> None:
    """Policy B2: delete removes the checkpoint's own bitmaps and merges nothing; its child
    is reparented to its parent (§5.2 item 3)."""
    written = play_seed(host, "independent")
    before = host.extents("vm", "vdb", ["chk1.1"])
    host.ok("delete", "vm", "chk1.2")
    bm = host.ok_json("bitmaps", "vm")["disks"]
    assert [b["bitmap"] for b in bm["vda"]] == ["chk1.1"]
    assert [b["bitmap"] for b in bm["vdb"]] == ["chk1.1", "chk2.1", "chk2.2"]
    assert [b["bitmap"] for b in bm["vdc"]] == ["chk2.1", "chk2.2"]
    assert host.extents("vm", "vdb", ["chk1.1"]) == before
    assert host.parents("vm")["chk2.2"] == "chk2.1"
    for d in ("vda", "vdb"):
        r = host.cli("mock", "extents", "vm", d, "chk1.2")
        assert r.code != 0 and "CHECKPOINT_INCONSISTENT" in r.stderr
    prove_plan(host, "vm", "chk1.1", written)
    prove_plan(host, "vm", "chk2.1", written)


@pytest.mark.parametrize("policy", ["chained", "independent"])
def test_metadata_only_delete_leaves_bitmaps(host: Host, policy: str) -> None:
    """METADATA_ONLY skips the bitmap work entirely (§4.3 "Both"): the bitmap still exists on
    the disk and the ledger still lists it."""
    play_seed(host, policy)
    before = host.ok_json("bitmaps", "vm")
    extents = host.extents("vm", "vdb", ["chk2.2"])
    host.ok("delete", "vm", "chk2.2", "--metadata-only")
    assert "chk2.2" not in host.names("vm")
    assert host.extents("vm", "vdb", ["chk2.2"]) == extents
    assert host.ok_json("bitmaps", "vm") == before
    assert host.current("vm") == "chk1.2"


def test_delete_children_and_children_only(host: Host) -> None:
    """CHILDREN_ONLY removes the descendants and makes the target current; CHILDREN removes
    the target too, and current moves to its parent (§5.2 items 4-5)."""
    host.ok("mock", "define", "vm", "--disk", "vda")
    for n in ("a", "b", "c", "d"):
        host.ok("create", "vm", n)
    r = host.ok("delete", "vm", "c", "--children-only")
    assert r.stdout == "Domain checkpoint c children deleted\n"
    assert host.names("vm") == ["a", "b", "c"] and host.current("vm") == "c"
    res = host.ok_json("delete", "vm", "b", "--children")
    assert sorted(res["deleted"]) == ["b", "c"]
    assert host.names("vm") == ["a"] and host.current("vm") == "a"
    assert [b["bitmap"] for b in host.ok_json("bitmaps", "vm")["disks"]["vda"]] == ["a"]


def test_redefine_from_file(host: Host, tmp_path: Path) -> None:
    """`redefine DOMAIN FILE` (checkpoint-create --redefine): metadata only, no bitmap."""
    host.ok("mock", "define", "vm", "--disk", "vda")
    f = tmp_path / "r.xml"
    f.write_text("<domaincheckpoint><name>r1</name><creationTime>1234</creationTime>"
                 "<disks><disk name='vda'/></disks></domaincheckpoint>")
    r = host.ok("redefine", "vm", str(f))
    assert r.stdout == f"Domain checkpoint r1 created from '{f}'\n"
    view = host.ok_json("show", "vm", "r1")
    assert view["creation_time"] == 1234 and view["disks"][0]["bitmap"] == "r1"
    assert host.current("vm") == "r1"


def test_a_domain_is_named_by_its_uuid_as_well(host: Host) -> None:
    """virsh takes a domain's name or UUID; so does every command here."""
    host.ok("mock", "define", "vm", "--disk", "vda")
    host.ok("create", "vm", "c1")
    uuid = next(e["data"]["uuid"] for e in host.ok_json("log") if e["type"] == "DomainEnrolled")
    host.ok("create", uuid.upper(), "c2")
    assert [c["name"] for c in host.ok_json("list", uuid)] == ["c1", "c2"]
    assert host.ok_json("show", uuid, "c2")["parent"] == "c1"
    assert host.ok_json("plan", uuid, "--since", "c1")["domain"] == "vm"
    host.ok("delete", uuid, "c2")
    assert [c["name"] for c in host.ok_json("list", "vm")] == ["c1"]


def test_verbose_quiet_and_a_log_file_use_standard_logging(host: Host, tmp_path: Path) -> None:
    """-v says what is done on stderr, -vv how; -q leaves stderr to errors; --log-file keeps
    every record with its time, level and source; an unusable log file is one line."""
    host.ok("mock", "define", "vm", "--disk", "vda")
    host.ok("create", "vm", "c1")
    host.ok("mock", "lose-metadata", "vm")
    run = host.main("-v", "replay", "vm")
    assert run.code == 0 and "vm: redefining 1 checkpoint(s), 0 skipped" in run.stderr, run
    log = tmp_path / "ledger.log"
    run = host.main("-vv", "--log-file", str(log), "create", "vm", "c2")
    assert run.code == 0 and "appended CheckpointCreated to domain vm" in run.stderr
    (line,) = [x for x in log.read_text().splitlines() if "appended CheckpointCreated" in x]
    assert " DEBUG ledger.app.writer [pid " in line
    run = host.main("-q", "create", "vm", "c3")
    assert run.code == 0 and run.stderr == ""
    bad = host.main("--log-file", str(tmp_path), "list", "vm")
    assert_one_error_line(bad, "INVALID_ARG")
    assert "cannot open log file" in bad.stderr


def test_progress_bars_go_to_stderr_on_a_terminal_only(host: Host, tmp_path: Path) -> None:
    """replay, verify-log, rebuild, export, import-log and copy draw a bar on stderr on a
    terminal;
    stdout keeps only the answer (safe to pipe); --no-progress turns the bars off; no
    terminal, no bar."""
    import os
    import pty
    import subprocess
    import sys

    host.ok("mock", "define", "vm", "--disk", "vda")
    for n in ("c1", "c2", "c3"):
        host.ok("create", "vm", n)
    exe = str(Path(sys.executable).with_name("ckpt-ledger"))
    env = {**os.environ, **{k: v for k, v in host.env().items() if v is not None}}

    def run(*args: str, tty: bool = True) -> tuple[str, str]:
        master, slave = pty.openpty()
        try:
            p = subprocess.run([exe, *args], stdout=subprocess.PIPE,
                               stderr=slave if tty else subprocess.PIPE, env=env, timeout=60)
        finally:
            os.close(slave)
        err = b""
        if tty:
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                err += chunk
        os.close(master)
        assert p.returncode == 0, (args, p)
        return p.stdout.decode(), (err or p.stderr or b"").decode()

    host.ok("mock", "lose-metadata", "vm")
    out, err = run("replay", "vm")
    assert "Redefining" in err and "vm: redefined 3" in out and "Redefining" not in out
    for cmd, label in ((("verify-log",), "Checking"), (("rebuild",), "Folding"),
                       (("export", "-"), "Exporting")):
        out, err = run(*cmd)
        assert label in err and label not in out, (cmd, err)
        assert label not in run("--no-progress", *cmd)[1]
        assert label not in run(*cmd, tty=False)[1]
    dump = str(tmp_path / "events.jsonl")
    run("export", dump)
    out, err = run("--store", str(tmp_path / "copy.db"), "import-log", dump)
    assert "Importing" in err and out.startswith("imported ")
    for n, flags in enumerate(((), ("--no-progress",))):
        out, err = run(*flags, "copy", "--from", host.store, "--to",
                       f"sqlite:///{tmp_path}/copied{n}.db")
        assert ("Copying" in err and "Verifying" in err) == (not flags), err
        assert "Copying" not in out and out.startswith("copied ")


def test_virsh_option_names_and_columns(host: Host) -> None:
    """virsh's spellings work where the meaning is the same (create --name, delete
    --checkpointname, list --parent), and list shows the Parent column only with --parent,
    as virsh checkpoint-list does (or when an orphan must show its unknown parent)."""
    host.ok("mock", "define", "vm", "--disk", "vda")
    host.ok("create", "vm", "--name", "c1")
    host.ok("create", "vm", "c2")
    plain = host.ok("list", "vm").stdout.splitlines()
    assert plain[0].split() == ["Name", "Creation", "Time", "Bitmap", "disks"]
    with_parent = host.ok("list", "vm", "--parent").stdout.splitlines()
    assert with_parent[0].split() == ["Name", "Creation", "Time", "Parent", "Bitmap", "disks"]
    assert with_parent[3].split()[0:2] == ["c2", "*"] and "c1" in with_parent[3].split()
    out = host.ok("delete", "vm", "--checkpointname", "c2").stdout
    assert out.strip() == "Domain checkpoint c2 deleted"
    assert [c["name"] for c in host.ok_json("list", "vm")] == ["c1"]
    for argv in (["delete", "vm"], ["delete", "vm", "c1", "--checkpointname", "c9"],
                 ["create", "vm", "a", "--name", "b"]):
        run = host.main(*argv)
        assert run.code == 2 and "[USAGE]" in assert_one_error_line(run), argv


def test_global_options_are_taken_after_the_command_too(host: Host, tmp_path: Path) -> None:
    """As virsh users type them (``list web01 --store URL``); a command's own option of
    the same name stays its own (``log --actor`` filters), and ``--`` ends the options."""
    other = f"sqlite:///{tmp_path}/other.db"
    host.ok("mock", "define", "vm", "--disk", "vda")
    assert host.main("create", "vm", "c1", "--store", other, "--actor", "alice").code == 0
    listed = host.main("list", "vm", f"--store={other}", "--json").json()
    assert [v["name"] for v in listed] == ["c1"]
    assert not host.db.exists()  # the default store was not touched
    mine = host.main("log", "--actor", "alice", "--store", other, "--json").json()
    assert mine and {e["actor"] for e in mine} == {"alice"}
    assert host.main("log", "--actor", "nobody", "--json", "--store", other).json() == []
    assert host.main("list", "vm", "--", "--store", other).code == 2
    assert host.main("list", "vm", "--store").code == 2


@pytest.mark.parametrize("args", [["-h"], ["--help"], ["list", "-h"], ["mock", "define", "-h"],
                                  ["log", "--help"]])
def test_help_is_dash_h_or_dash_dash_help_everywhere(host: Host, args: list[str]) -> None:
    run = host.main(*args)
    assert run.code == 0 and run.stdout.startswith("Usage: ckpt-ledger") and run.stderr == ""
