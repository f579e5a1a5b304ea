"""libvirt's own virsh test script (tests/virshtestdata/checkpoint.in), replayed through
the ledger on the mock hypervisor, compared with libvirt's expected output (checkpoint.out,
checkpoint-redefine.out).

The script runs on test:///default: a running domain "test" with one disk vda. Here that is a
mock domain with one qcow2 disk vda and the independent policy (libvirt >= 6.5).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from helpers import Host, assert_one_error_line
from shared_data import LIBVIRT_TESTDATA

DATA = LIBVIRT_TESTDATA / "virsh"
TEST_UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="libvirt virsh test data not found")


def out_text() -> str:
    return (DATA / "checkpoint.out").read_text()


def section(title: str, end: str) -> list[str]:
    """The lines of checkpoint.out between an `echo` title and the next title."""
    lines = out_text().splitlines()
    start = lines.index(title) + 1
    return lines[start:lines.index(end, start)]


def blocks(lines: list[str]) -> list[list[str]]:
    """Output blocks separated by blank lines (virsh prints one after each list)."""
    out: list[list[str]] = [[]]
    for line in lines:
        if line.strip():
            out[-1].append(line)
        elif out[-1]:
            out.append([])
    return [b for b in out if b]


def xml_blocks() -> list[str]:
    return re.findall(r"<domaincheckpoint>.*?</domaincheckpoint>\n", out_text(), re.S)


def without_domain_and_time(xml: str) -> list[str]:
    """checkpoint.out filters <creationTime> lines; our <domain> is the mock's: drop both
    (and the blank line the filter leaves behind)."""
    xml = re.sub(r"\n *<domain type=.*?</domain>", "", xml, flags=re.S)
    return [ln for ln in xml.splitlines() if ln.strip() and "<creationTime>" not in ln]


@pytest.fixture
def host(tmp_path: Path) -> Host:
    h = Host(tmp_path)
    h.ok("mock", "define", "test", "--disk", "vda", "--uuid", TEST_UUID)
    return h


def names(h: Host, *flags: str) -> list[str]:
    """`checkpoint-list test --name FLAGS`, as our plain --name output."""
    return h.ok("list", "test", "--name", *flags).stdout.splitlines()


def test_checkpoint_in_replay(host: Host) -> None:
    """checkpoint.in, step by step, against checkpoint.out."""
    # checkpoint-create-as test c1 (twice), c3, c2
    assert host.ok("create", "test", "c1").stdout == "Domain checkpoint c1 created\n"
    line = assert_one_error_line(host.cli("create", "test", "c1"), "OPERATION_FAILED")
    assert "error: operation failed: domain moment c1 already exists" in line
    host.ok("create", "test", "c3")
    host.ok("create", "test", "c2")

    # checkpoint-list test --tree
    expected_tree = section("Checking tree view (siblings sorted alphabetically)",
                            "Demonstrate list filtering")
    got = host.ok("list", "test", "--tree").stdout.splitlines()
    strip = [ln.rstrip() for ln in expected_tree]
    while strip and not strip[-1]:
        strip.pop()
    got = [ln.rstrip() for ln in got]
    while got and not got[-1]:
        got.pop()
    assert got == strip == ["c1", "  |", "  +- c3", "      |", "      +- c2"]

    # list filtering
    roots, leaves, parent_no_leaves, from_c3, from_c1_desc = blocks(
        section("Demonstrate list filtering",
                "Now the tree is linear, so we have an unambiguous topological order"))
    assert names(host, "--roots") == roots == ["c1"]
    assert names(host, "--leaves") == leaves == ["c2"]
    # --parent --no-leaves: we have no --parent column; names, and parents from JSON
    expected_pairs = dict((row.split("\t") + [None])[:2] for row in parent_no_leaves)
    assert names(host, "--no-leaves") == list(expected_pairs) == ["c1", "c3"]
    got_pairs = {v["name"]: v["parent"] for v in host.ok_json("list", "test", "--no-leaves")}
    assert got_pairs == expected_pairs == {"c1": None, "c3": "c1"}
    assert names(host, "--from", "c3") == from_c3 == ["c2"]
    assert names(host, "--from", "c1", "--descendants") == from_c1_desc == ["c2", "c3"]

    by_name, topo = blocks(section(
        "Now the tree is linear, so we have an unambiguous topological order", "validate XML"))
    assert names(host) == by_name == ["c1", "c2", "c3"]
    assert names(host, "--topological") == topo == ["c1", "c3", "c2"]

    # validate XML: checkpoint-delete test c1; checkpoint-dumpxml test c3 / c2
    assert host.ok("delete", "test", "c1").stdout == "Domain checkpoint c1 deleted\n"
    assert host.names("test", "--roots") == ["c3"], "c3 becomes a root"
    c3_xml, c2_xml = xml_blocks()
    for name, expected in (("c3", c3_xml), ("c2", c2_xml)):
        ours = host.ok("show", "test", name, "--xml", "--no-domain").stdout
        assert "<domain " not in ours and "<domain>" not in ours
        assert without_domain_and_time(ours) == without_domain_and_time(expected), name
        assert f"<uuid>{TEST_UUID}</uuid>" in host.ok("show", "test", name, "--xml").stdout

    # Deleting current checkpoint moves current up to remaining parent
    r = host.ok("delete", "test", "c3", "--children-only")
    assert r.stdout == "Domain checkpoint c3 children deleted\n"
    assert names(host, "--leaves") == ["c3"]
    assert host.current("test") == "c3"
    assert host.ok("delete", "test", "c3", "--children").stdout == (
        "Domain checkpoint c3 deleted\n")
    assert names(host, "--leaves") == [] and host.ok_json("list", "test") == []
    # the mock agrees, and no bitmap is left behind
    assert host.ok_json("mock", "checkpoints", "test") == {
        "schema": "ckpt-ledger/mock-checkpoints/1", "domain": "test", "checkpoints": [],
        "current": None}
    assert host.ok_json("bitmaps", "test")["disks"] == {"vda": []}


def test_redefine_must_be_topological(host: Host, tmp_path: Path) -> None:
    """checkpoint-redefine.out: c2 (parent c3) before c3 fails with INVALID_ARG; c3 then c2
    succeeds, and c2 (whose parent was current) becomes current (§5.2 item 2)."""
    c2 = shutil.copy(DATA / "checkpoint-c2.xml", tmp_path / "checkpoint-c2.xml")
    c3 = shutil.copy(DATA / "checkpoint-c3.xml", tmp_path / "checkpoint-c3.xml")
    expected = (DATA / "checkpoint-redefine.out").read_text()
    line = assert_one_error_line(host.cli("redefine", "test", str(c2)), "INVALID_ARG")
    assert line.startswith("error: invalid argument: parent c3 for moment c2 not found")
    assert "error: invalid argument: parent c3 for moment c2 not found" in expected
    assert host.event_count() == 0

    for f in (c3, c2):
        r = host.ok("redefine", "test", str(f))
        assert r.stdout == f"Domain checkpoint {Path(f).stem.split('-')[1]} created from '{f}'\n"
    assert "Domain checkpoint c3 created from 'checkpoint-c3.xml'" in expected
    info = host.ok("show", "test", "c2").stdout
    assert "Name:           c2" in info and "Parent:         c3" in info
    assert "Children:       0" in info
    # the redefined XML comes back exactly as given (REDEFINE round trip)
    assert host.ok("show", "test", "c2", "--xml").stdout == Path(c2).read_text()
    assert host.ok("show", "test", "c3", "--xml").stdout == Path(c3).read_text()
    # c2 is current: a new checkpoint is its child
    assert host.current("test") == "c2"
    host.ok("create", "test", "c4")
    assert host.parents("test")["c4"] == "c2"


def test_redefine_with_another_domains_uuid_is_refused(tmp_path: Path) -> None:
    """An embedded <domain> whose UUID differs is INVALID_ARG "... must use uuid <ours>"."""
    h = Host(tmp_path)
    other = "11111111-2222-3333-4444-555555555555"
    h.ok("mock", "define", "test", "--disk", "vda", "--uuid", other)
    c3 = shutil.copy(DATA / "checkpoint-c3.xml", tmp_path / "c3.xml")
    h.ok("create", "test", "first")  # the ledger knows the domain (and its UUID)
    events, state = h.event_count(), h.state_digest()
    line = assert_one_error_line(h.cli("redefine", "test", str(c3)), "INVALID_ARG")
    assert f"definition for checkpoint c3 must use uuid {other}" in line
    assert h.event_count() == events and h.state_digest() == state
    # the same refusal when the ledger has never seen the domain: the mock refuses it
    h2 = Host(tmp_path / "fresh")
    h2.folder.mkdir()
    h2.ok("mock", "define", "test", "--disk", "vda", "--uuid", other)
    line = assert_one_error_line(h2.cli("redefine", "test", str(c3)), "INVALID_ARG")
    assert "must use uuid" in line
    assert h2.event_count() == 0
