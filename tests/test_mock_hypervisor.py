"""The mock hypervisor: a shared, persistent, crash-safe simulated host with libvirt's QEMU
driver rules (running domain, qcow2 bitmaps, REDEFINE_VALIDATE, missing-bitmap delete)."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import pytest
from helpers import BLOCK, Host, assert_one_error_line

from adapters.mock import CLUSTER, MockHypervisor, state_path
from ledger.domain.errors import LedgerError


@pytest.fixture
def host(tmp_path: Path) -> Host:
    h = Host(tmp_path)
    h.ok("mock", "define", "vm", "--disk", "vda", "--disk", "vdb:raw")
    return h


def test_state_persists_across_processes(host: Host) -> None:
    """Each CLI process reads and writes the one state file: a host outlives its commands."""
    assert host.proc("create", "vm", "c1", "--disk", "vda").code == 0
    host.ok("mock", "write", "vm", "vda", "128k", "64k")  # another (in-process) client
    run = host.proc("mock", "extents", "vm", "vda", "c1", "--json")
    assert run.code == 0 and json.loads(run.stdout) == {
        "schema": "ckpt-ledger/mock-extents/1", "disk": "vda", "bitmaps": ["c1"],
        "extents": [[2 * BLOCK, BLOCK]]}
    run = host.proc("list", "vm", "--json")
    assert [v["name"] for v in json.loads(run.stdout)] == ["c1"]


WORKER = textwrap.dedent("""
    import sys
    from adapters.mock import CLUSTER, MockHypervisor
    path, me = sys.argv[1], int(sys.argv[2])
    hv = MockHypervisor(path)
    for j in range(25):
        hv.write("shared", "vda", (me * 25 + j) * 2 * CLUSTER, 1)
        hv.define(f"p{me}-{j}", ["vda"])
""")


def complete_lines(data: bytes) -> list[bytes]:
    """The journal's complete lines, each checked as documented (crc32 of the JSON as 8 hex
    digits, a space, a JSON object); what follows the last newline is a write under way."""
    out = data[: data.rfind(b"\n") + 1].splitlines(keepends=True)
    for line in out:
        crc, body = line[:8], line[9:-1]
        assert line[8:9] == b" " and int(crc, 16) == zlib.crc32(body), line
        assert isinstance(json.loads(body), dict)
    return out


def test_concurrent_processes_lose_no_update(tmp_path: Path) -> None:
    """4 processes x 25 writes and 25 defines on one state file: every write's cluster and
    every domain is there, and whenever anyone looks the file is the lines it held before
    plus whole new lines (and at most the part of one being written)."""
    state = tmp_path / "host.json"
    hv = MockHypervisor(str(state))
    hv.define("shared", ["vda"])
    h = Host(tmp_path)
    h.ok("create", "shared", "c1")
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(state), str(i)])
             for i in range(4)]
    reads, seen = 0, complete_lines(state.read_bytes())
    while any(p.poll() is None for p in procs):
        now = complete_lines(state.read_bytes())
        assert now[: len(seen)] == seen, "a line was rewritten"
        seen = now
        reads += 1
        time.sleep(0.002)
    assert [p.wait() for p in procs] == [0, 0, 0, 0]
    assert reads > 0
    data = state.read_bytes()
    assert data.endswith(b"\n") and complete_lines(data)[: len(seen)] == seen
    assert len(complete_lines(data)) == 3 + 4 * 50  # header, define, create, 200 operations
    shutil.copy(state, tmp_path / "copy.json")  # folded afresh (another path)
    fresh = MockHypervisor(str(tmp_path / "copy.json"))
    assert {f"p{i}-{j}" for i in range(4) for j in range(25)} <= set(fresh.list_domains())
    ext = hv.extents("shared", "vda", ["c1"])
    assert ext == [(k * 2 * CLUSTER, CLUSTER) for k in range(100)]
    assert fresh.extents("shared", "vda", ["c1"]) == ext


def test_corrupt_state_is_reported_not_overwritten(tmp_path: Path) -> None:
    """A state file that is not the mock's is STATE_ERROR; it is never rewritten."""
    state = tmp_path / "host.json"
    state.write_text('{"domains": "nope"}')
    with pytest.raises(LedgerError) as err:
        MockHypervisor(str(state))
    assert err.value.code == "STATE_ERROR"
    assert state.read_text() == '{"domains": "nope"}'


# ------------------------------------------------------------- qemu rules
def test_create_needs_a_running_domain(host: Host) -> None:
    """qemuCheckpointPrepare: "cannot create checkpoint for inactive domain" (§3.4 item 1)."""
    host.ok("mock", "stop", "vm")
    line = assert_one_error_line(host.cli("create", "vm", "c1", "--disk", "vda"),
                                 "OPERATION_UNSUPPORTED")
    assert "cannot create checkpoint for inactive domain" in line


def test_delete_needs_a_running_domain_unless_metadata_only(host: Host) -> None:
    """qemu: a non-METADATA_ONLY delete needs a running domain (§9 rule 18); a
    metadata-only delete works while shut off and leaves the bitmap on the disk."""
    host.ok("create", "vm", "c1", "--disk", "vda")
    host.ok("create", "vm", "c2", "--disk", "vda")
    host.ok("mock", "stop", "vm")
    events = host.event_count()
    line = assert_one_error_line(host.cli("delete", "vm", "c2"), "OPERATION_UNSUPPORTED")
    assert "cannot delete checkpoint for inactive domain" in line
    assert host.event_count() == events
    host.ok("delete", "vm", "c2", "--metadata-only")
    assert host.names("vm") == ["c1"]
    host.ok("mock", "start", "vm")
    assert host.extents("vm", "vda", ["c2"]) == []  # the bitmap is still there


def test_bitmaps_need_qcow2(host: Host) -> None:
    """The active layer of a bitmap disk must be qcow2 (§3.4 item 4); checkpoint='no'
    excludes a raw disk."""
    line = assert_one_error_line(host.cli("create", "vm", "c1", "--disk", "vdb"),
                                 "CONFIG_UNSUPPORTED")
    assert "checkpoint for disk vdb unsupported for storage type raw" in line
    host.ok("create", "vm", "c1", "--disk", "vda", "--disk", "vdb,checkpoint=no")


def test_redefine_validate_after_bitmap_removed(host: Host, tmp_path: Path) -> None:
    """REDEFINE_VALIDATE checks the bitmap chain: after `qemu-img bitmap --remove` it fails
    with CHECKPOINT_INCONSISTENT "missing or broken bitmap" (§3.3)."""
    host.ok("create", "vm", "c1", "--disk", "vda")
    f = tmp_path / "c1.xml"
    f.write_text(host.ok("show", "vm", "c1", "--xml").stdout)
    host.ok("redefine", "vm", str(f), "--validate")  # intact: validates
    host.ok("mock", "remove-bitmap", "vm", "vda", "c1")
    events = host.event_count()
    line = assert_one_error_line(host.cli("redefine", "vm", str(f), "--validate"),
                                 "CHECKPOINT_INCONSISTENT")
    assert "missing or broken bitmap 'c1' for disk 'vda'" in line
    assert host.event_count() == events
    host.ok("redefine", "vm", str(f))  # plain REDEFINE is metadata only: accepted


def test_independent_delete_of_a_removed_bitmap(host: Host) -> None:
    """The well-known virtnbdbackup failure after a disk restore: deleting a checkpoint whose
    bitmap is gone is INTERNAL_ERROR "bitmap 'X' not found in backing chain of 'vda'" under
    the independent policy (§4.2 B2.3); --metadata-only is the workaround."""
    host.ok("create", "vm", "c1", "--disk", "vda")
    host.ok("mock", "remove-bitmap", "vm", "vda", "c1")
    events, state = host.event_count(), host.state_digest()
    line = assert_one_error_line(host.cli("delete", "vm", "c1"), "INTERNAL_ERROR")
    assert "bitmap 'c1' not found in backing chain of 'vda'" in line
    assert host.event_count() == events and host.state_digest() == state
    assert host.names("vm") == ["c1"]
    host.ok("delete", "vm", "c1", "--metadata-only")
    assert host.names("vm") == []
    assert host.ok_json("mock", "checkpoints", "vm")["checkpoints"] == []


def test_lose_metadata_keeps_bitmaps(host: Host) -> None:
    """`mock lose-metadata` (a rebuilt host, the same images): the hypervisor forgets every
    checkpoint, the bitmaps stay on the disks, and the ledger still has its record."""
    host.ok("create", "vm", "c1", "--disk", "vda")
    host.write("vm", "vda", 0)
    host.ok("create", "vm", "c2", "--disk", "vda")
    host.write("vm", "vda", 4 * BLOCK)
    host.ok("mock", "lose-metadata", "vm")
    assert host.ok_json("mock", "checkpoints", "vm") == {
        "schema": "ckpt-ledger/mock-checkpoints/1", "domain": "vm", "checkpoints": [],
        "current": None}
    assert host.extents("vm", "vda", ["c1"]) == [[0, BLOCK], [4 * BLOCK, BLOCK]]
    assert host.extents("vm", "vda", ["c2"]) == [[4 * BLOCK, BLOCK]]
    assert host.names("vm") == ["c1", "c2"]
    # the hypervisor has no current checkpoint now: the next one is a root there, and the
    # ledger records what the hypervisor really did
    host.ok("create", "vm", "c3", "--disk", "vda")
    assert host.parents("vm")["c3"] is None
    assert host.ok_json("mock", "checkpoints", "vm")["checkpoints"] == ["c3"]


def test_create_over_a_surviving_bitmap_is_refused(tmp_path: Path) -> None:
    """After lost metadata the bitmaps survive; creating a checkpoint with the name of a
    surviving bitmap must fail (qemu refuses to add a bitmap that exists), never silently
    empty it and lose its dirty blocks."""
    hv = MockHypervisor(str(tmp_path / "host.json"))
    hv.define("vm", ["vda"])
    hv.create_checkpoint("vm", "<domaincheckpoint><name>c1</name></domaincheckpoint>")
    hv.write("vm", "vda", 0, 10)
    hv.forget_checkpoints("vm")
    with contextlib.suppress(LedgerError):
        hv.create_checkpoint("vm", "<domaincheckpoint><name>c1</name></domaincheckpoint>")
    assert hv.extents("vm", "vda", ["c1"]) == [(0, CLUSTER)], "dirty blocks were lost"
    assert hv.list_checkpoints("vm") == []


@pytest.mark.parametrize(("uri", "path"), [
    ("mock:///var/lib/x/state.json", "/var/lib/x/state.json"),  # absolute, as libvirt's
    ("mock:////var/lib/x/state.json", "/var/lib/x/state.json"),  # the extra slash is kept
    ("mock:state.json", "state.json"),  # relative to the working directory
    ("mock:sub/state.json", "sub/state.json"),
])
def test_a_mock_uri_names_a_path_as_a_libvirt_uri_does(uri: str, path: str) -> None:
    assert state_path(uri) == path


@pytest.mark.parametrize("uri", ["mock://host/state.json", "mock:", "mock:///", "qemu:///x"])
def test_a_mock_uri_without_a_usable_path_is_refused(uri: str) -> None:
    with pytest.raises(LedgerError) as err:
        state_path(uri)
    assert err.value.code == "STORE_URL" and "\n" not in str(err.value)
