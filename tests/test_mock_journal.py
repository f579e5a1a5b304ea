"""The mock hypervisor's state file is an append-only journal (adapters/mock_journal.py).

An accepted operation appends exactly one line and rewrites no byte; a refusal or a read
changes nothing. A torn last line (an interrupted write) is ignored by reads and cut by the
next write; a bad line followed by a valid one is damage, and a file that does not begin
with the journal's header is not the mock's: both are one STATE_ERROR and the file is
never written. Each case that must be read afresh uses a file of its own: a process keeps
what it has folded of a file and reads only what was appended since.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.mock import CLUSTER, MockHypervisor
from ledger.domain.errors import LedgerError
from ledger.domain.hypervisor import PartialDelete


def cp(name: str) -> str:
    return f"<domaincheckpoint><name>{name}</name></domaincheckpoint>"


def with_crc(obj: object) -> bytes:
    """One journal line as the format is documented: crc32 of the JSON as 8 hex digits,
    a space, the JSON, a newline."""
    body = json.dumps(obj).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A host: vm (vda, vdb), c1, a guest write, c2 (the last line)."""
    path = tmp_path / "host.json"
    hv = MockHypervisor(str(path))
    hv.define("vm", ["vda", "vdb"])
    hv.create_checkpoint("vm", cp("c1"))
    hv.write("vm", "vda", 0, 10)
    hv.create_checkpoint("vm", cp("c2"))
    return path


def expect_state_error(path: Path, *contains: str) -> str:
    """Opening ``path`` is one STATE_ERROR naming it; the file is left byte-identical."""
    before = path.read_bytes()
    with pytest.raises(LedgerError) as err:
        MockHypervisor(str(path))
    assert err.value.code == "STATE_ERROR", err.value
    line = err.value.one_line()
    assert str(path) in line and "\n" not in str(err.value)
    for text in contains:
        assert text in line, line
    assert path.read_bytes() == before
    return line


# ------------------------------------------------------------------ one line per operation
BIG = [-1, 2**63, 10**5000]


def test_each_accepted_operation_appends_one_line_and_rewrites_nothing(state: Path) -> None:
    """Every mutating call appends one line; refusals and reads leave the file as it was."""
    hv = MockHypervisor(str(state))
    accepted: list[Callable[[], Any]] = [
        lambda: hv.define("vm2", ["vda"], policy="chained", running=False),
        lambda: hv.set_running("vm2", True),
        lambda: hv.set_running("vm2", False),
        lambda: hv.write("vm", "vda", 0, 1),
        lambda: hv.write("vm", "vdb", 1 << 29, 1 << 29),
        lambda: hv.create_checkpoint("vm", cp("c3")),
        lambda: hv.redefine_checkpoint("vm", hv.checkpoint_xml("vm", "c1")),
        lambda: hv.set_bitmap_recording("vm", "vda", "c1", False),
        lambda: hv.set_bitmap_recording("vm", "vda", "c1", True),
        lambda: hv.delete_checkpoint("vm", "c3"),
        lambda: hv.remove_bitmap("vm", "vda", "c1"),
        lambda: hv.forget_checkpoints("vm2"),
    ]
    refused: list[Callable[[], Any]] = [
        lambda: hv.define("vm", ["vda"]),
        lambda: hv.define("x", ["vda", "vda"]),
        lambda: hv.set_running("vm", True),
        lambda: hv.set_running("nope", True),
        lambda: hv.write("vm2", "vda", 0, 1),  # shut off
        lambda: hv.write("vm", "vdz", 0, 1),
        *[(lambda v=v: hv.write("vm", "vda", v, 1)) for v in BIG],
        *[(lambda v=v: hv.write("vm", "vda", 0, v)) for v in [0, *BIG]],
        lambda: hv.create_checkpoint("vm", cp("c2")),
        lambda: hv.create_checkpoint("vm", cp("../x")),
        lambda: hv.create_checkpoint("vm2", cp("d1")),  # shut off
        lambda: hv.delete_checkpoint("vm", "nope"),
        lambda: hv.delete_checkpoint("vm", "c2", children=True, children_only=True),
        lambda: hv.redefine_checkpoint("vm", "<domaincheckpoint/>"),
        lambda: hv.remove_bitmap("vm", "vda", "nope"),
        lambda: hv.set_bitmap_recording("vm", "vda", "nope", True),
    ]
    reads: list[Callable[[], Any]] = [
        hv.list_domains, lambda: hv.domain_info("vm"), lambda: hv.list_checkpoints("vm"),
        lambda: hv.checkpoint_xml("vm", "c2"), lambda: hv.checkpoint_xmls("vm"),
        lambda: hv.current("vm"), lambda: hv.observed_bitmaps("vm"),
        lambda: hv.extents("vm", "vda", ["c2"]), lambda: MockHypervisor(str(state)),
    ]
    for i, op in enumerate(accepted):
        before = state.read_bytes()
        op()
        after = state.read_bytes()
        assert after.startswith(before), f"operation {i} rewrote the journal"
        assert after.count(b"\n") == before.count(b"\n") + 1, f"operation {i}"
        assert after.endswith(b"\n")
    for i, op in enumerate([*refused, *reads]):
        before = state.read_bytes()
        try:
            op()
        except LedgerError:
            pass
        else:
            assert i >= len(refused), f"refusal {i} was accepted"
        assert state.read_bytes() == before, f"call {i} changed the journal"


def test_a_partial_delete_appends_what_qemu_did(state: Path) -> None:
    """The reparenting of a delete that fails on a missing bitmap is one appended line."""
    hv = MockHypervisor(str(state))
    hv.create_checkpoint("vm", cp("c3"))
    hv.remove_bitmap("vm", "vda", "c2")
    before = state.read_bytes()
    with pytest.raises(PartialDelete):
        hv.delete_checkpoint("vm", "c2")
    after = state.read_bytes()
    assert after.startswith(before) and after.count(b"\n") == before.count(b"\n") + 1
    fresh = MockHypervisor(str(state))
    assert fresh.list_checkpoints("vm") == ["c1", "c2", "c3"]
    assert "<parent>\n    <name>c1</name>" in fresh.checkpoint_xml("vm", "c3")


def test_a_line_costs_the_same_with_many_checkpoints(tmp_path: Path) -> None:
    """What one create appends does not grow with the checkpoints already on the host."""
    path = tmp_path / "host.json"
    hv = MockHypervisor(str(path))
    hv.define("vm", ["vda", "vdb"])
    sizes = []
    for i in range(60):
        before = path.stat().st_size
        hv.create_checkpoint("vm", cp(f"c{i:04d}"))
        sizes.append(path.stat().st_size - before)
    assert max(sizes) - min(sizes) <= 16, sizes


def test_reads_of_a_missing_file_create_nothing(tmp_path: Path) -> None:
    """A host nobody wrote to is empty; reading it makes no state file."""
    path = tmp_path / "host.json"
    hv = MockHypervisor(str(path))
    assert hv.list_domains() == []
    with pytest.raises(LedgerError) as err:
        hv.domain_info("vm")
    assert err.value.code == "NO_DOMAIN"
    with pytest.raises(LedgerError):
        hv.define("vm", ["vda:bogus"])
    assert not path.exists()
    hv.define("vm", ["vda"])
    assert path.exists() and len(lines(path)) == 2


# ------------------------------------------------------------------ other processes
OTHER = textwrap.dedent("""
    import sys
    from adapters.mock import MockHypervisor
    hv = MockHypervisor(sys.argv[1])
    hv.create_checkpoint("vm", "<domaincheckpoint><name>other</name></domaincheckpoint>")
    hv.write("vm", "vda", 4 * 65536, 1)
""")


def test_a_long_lived_process_sees_what_others_append(state: Path, tmp_path: Path) -> None:
    """A process reads on from where it stopped: another process's lines are seen, and a
    file replaced by another host's is read afresh."""
    hv = MockHypervisor(str(state))
    assert hv.list_checkpoints("vm") == ["c1", "c2"]
    subprocess.run([sys.executable, "-c", OTHER, str(state)], check=True)
    assert hv.list_checkpoints("vm") == ["c1", "c2", "other"]
    assert hv.current("vm") == "other"
    assert hv.extents("vm", "vda", ["c2"]) == [(4 * CLUSTER, CLUSTER)]
    elsewhere = tmp_path / "elsewhere.json"
    MockHypervisor(str(elsewhere)).define("web", ["vda"])
    os.replace(elsewhere, state)
    assert hv.list_domains() == ["web"]


# ------------------------------------------------------------------------ torn tail
def test_a_torn_last_line_is_ignored_by_reads_and_cut_by_the_next_write(
    state: Path, tmp_path: Path
) -> None:
    """Every prefix of the last line (and the line zeroed, as a crash may leave a block) is
    an interrupted write: reads see the host without it and leave the file alone, a refusal
    leaves it alone, and the next accepted operation replaces it with its own line."""
    *head, last = lines(state)
    prefix = b"".join(head)
    tails = [last[:k] for k in range(1, len(last))] + [b"\0" * len(last), b"\0" * 5000]
    for i, tail in enumerate(tails):
        case = tmp_path / f"torn{i}.json"
        case.write_bytes(prefix + tail)
        hv = MockHypervisor(str(case))
        assert hv.list_checkpoints("vm") == ["c1"], f"cut at {i}"
        assert hv.extents("vm", "vda", ["c1"]) == [(0, CLUSTER)]
        with pytest.raises(LedgerError):
            hv.create_checkpoint("vm", cp("c1"))
        assert case.read_bytes() == prefix + tail
        if i % 16 == 0 or i >= len(tails) - 3:  # a write after a sample of the cuts
            hv.create_checkpoint("vm", cp("c2"))
            data = case.read_bytes()
            assert data.startswith(prefix) and data.count(b"\n") == prefix.count(b"\n") + 1
            assert MockHypervisor(str(case)).list_checkpoints("vm") == ["c1", "c2"]


# --------------------------------------------------------------------------- damage
def test_every_damaged_byte_before_a_valid_line_is_state_error(
    state: Path, tmp_path: Path
) -> None:
    """One changed byte anywhere in a line that valid lines follow (its newline too) is
    damage, not a torn write: STATE_ERROR naming the line, the file left as it was."""
    data = lines(state)
    start = len(data[0]) + len(data[1])  # the line of c1's create (the third)
    line = data[2]
    raw = state.read_bytes()
    for k in range(len(line)):
        for new in {raw[start + k] ^ 0x01, ord("\n")} - {raw[start + k]}:
            case = tmp_path / f"bad{k}-{new}.json"
            case.write_bytes(raw[: start + k] + bytes([new]) + raw[start + k + 1:])
            expect_state_error(case, "line 3")


def test_a_line_out_of_sequence_is_state_error(state: Path, tmp_path: Path) -> None:
    """A whole, valid line repeated, dropped or moved is damage wherever it is (even last:
    an interrupted write leaves a broken line, never a valid one out of place)."""
    data = lines(state)  # the header, then operations 1..4 on lines 2..5
    cases = {
        "repeated": (data[:3] + data[2:], "line 4"),
        "dropped": (data[:2] + data[3:], "line 3"),
        "swapped": (data[:2] + [data[3], data[2]] + data[4:], "line 3"),
        "last-repeated": (data + data[-1:], "line 6"),
    }
    for kind, (shuffled, where) in cases.items():
        case = tmp_path / f"{kind}.json"
        case.write_bytes(b"".join(shuffled))
        expect_state_error(case, where)


def test_a_file_that_is_not_the_mocks_is_never_written(state: Path, tmp_path: Path) -> None:
    """Not the journal's header (every byte of it changed, cut short, another version, an
    old one-document state, anything else): STATE_ERROR, for reads and writes, and the file
    stays byte-identical."""
    header = lines(state)[0]
    rest = state.read_bytes()[len(header):]
    cases: dict[str, bytes] = {
        "empty": b"",
        "garbage": bytes(range(256)) * 4,
        "json-lines": b'{"n": 1, "op": "define"}\n',
        "version-2": json.dumps({"version": 2, "domains": {}}).encode(),
        "header-cut": header[:-1],
        "header-only-cut": header[: len(header) // 2],
        "next-version": with_crc({**json.loads(header[9:]), "version": 4}),
    }
    for k in range(len(header)):
        cases[f"header-byte-{k}"] = (header[:k] + bytes([header[k] ^ 0x01]) + header[k + 1:]
                                     + rest)
    for kind, data in cases.items():
        case = tmp_path / f"{kind}.json"
        case.write_bytes(data)
        line = expect_state_error(case)
        if kind == "version-2":
            assert "version 2" in line
        if kind == "next-version":
            assert "version 4" in line
        before = case.read_bytes()
        env = {**os.environ, "CKPT_LEDGER_HYPERVISOR": f"mock:///{case}"}
        if kind == "version-2":  # the console script: one line, the file untouched
            run = subprocess.run(
                [str(Path(sys.executable).parent / "ckpt-ledger"), "mock", "define", "vm9",
                 "--disk", "vda"], capture_output=True, text=True, env=env, timeout=60)
            assert run.returncode == 1 and run.stderr.count("\n") == 1, run.stderr
            assert run.stderr.startswith("error: ") and "[STATE_ERROR]" in run.stderr
        assert case.read_bytes() == before


def test_a_failed_append_leaves_no_partial_line(state: Path) -> None:
    """A write the file system refuses (RLIMIT_FSIZE here) is STATE_ERROR and leaves the
    journal exactly as it was: the part that got written is cut again."""
    script = textwrap.dedent("""
        import os, resource, signal, sys
        from adapters.mock import MockHypervisor
        from ledger.domain.errors import LedgerError
        hv = MockHypervisor(sys.argv[1])
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        size = os.path.getsize(sys.argv[1])
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 20, resource.RLIM_INFINITY))
        try:
            hv.create_checkpoint("vm", "<domaincheckpoint><name>c3</name></domaincheckpoint>")
        except LedgerError as e:
            print(e.code, e.one_line())
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
        print(hv.list_checkpoints("vm"))
    """)
    before = state.read_bytes()
    run = subprocess.run([sys.executable, "-c", script, str(state)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out = run.stdout.splitlines()
    assert out[0].startswith("STATE_ERROR ") and str(state) in out[0], out
    assert out[1] == "['c1', 'c2']"
    assert state.read_bytes() == before
    hv = MockHypervisor(str(state))
    hv.create_checkpoint("vm", cp("c3"))
    assert MockHypervisor(str(state)).list_checkpoints("vm") == ["c1", "c2", "c3"]
