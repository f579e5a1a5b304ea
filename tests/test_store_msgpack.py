"""The msgpack:/// log store: the shared contract, then torn ends, damage and hostile files."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import multiprocessing
import os
import struct
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from backends import _frames
from backends._common import digest
from backends.memory import MemoryStore
from backends.msgpack_log import MsgpackLogStore, TornTailWarning, open_url
from ledger.app.copying import copy_store
from ledger.app.integrity import verify_chain
from ledger.app.plugins import open_store
from ledger.domain.errors import LedgerError
from ledger.log.records import StoredRecord
from ledger.log.store import NO_STREAM, EventStore

try:
    from .helpers import Host, assert_one_error_line
    from .store_contract import (
        StoreContract,
        StoreFactory,
        files_footprint,
        process_worker,
        recs,
    )
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    from helpers import Host, assert_one_error_line  # type: ignore[no-redef]
    from store_contract import (  # type: ignore[no-redef]
        StoreContract,
        StoreFactory,
        files_footprint,
        process_worker,
        recs,
    )


class MsgpackFactory(StoreFactory):
    """Fresh logs in a temporary directory."""

    module = "backends.msgpack_log"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0

    def __call__(self) -> EventStore:
        self.count += 1
        return open_url(f"msgpack:///{self.directory}/store{self.count}.log")

    @contextlib.contextmanager
    def _failing(self, store: MsgpackLogStore) -> Iterator[None]:
        real = store._write_at

        def half_then_enospc(data: bytes, offset: int) -> None:
            real(data[: len(data) // 2], offset)  # the first frame and a piece of the next
            raise OSError(errno.ENOSPC, "No space left on device")

        store._write_at = half_then_enospc  # type: ignore[method-assign]
        try:
            yield
        finally:
            del store._write_at

    def missing(self) -> str:
        self.count += 1
        return f"msgpack:///{self.directory}/missing{self.count}.log"

    def footprint(self, url: str) -> dict[str, str]:
        return files_footprint(str(self.directory))

    def inject_failure(self, store: EventStore) -> contextlib.AbstractContextManager[None]:
        assert isinstance(store, MsgpackLogStore)
        return self._failing(store)


@pytest.fixture
def store_factory(tmp_path: Path) -> MsgpackFactory:
    """The msgpack log backend's factory."""
    return MsgpackFactory(tmp_path)


class TestMsgpackLogStore(StoreContract):
    """The contract, run against MsgpackLogStore."""


# --- helpers -----------------------------------------------------------------------------


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _frames_of(path: Path) -> list[tuple[int, int]]:
    """(offset, total size) of every frame in a well-formed log."""
    data, off, out = path.read_bytes(), len(_frames.HEADER), []
    while off < len(data):
        (length,) = struct.unpack_from(">I", data, off)
        out.append((off, 8 + length))
        off += 8 + length
    return out


def _log(path: Path) -> Path:
    """A closed log: 5 single-record appends, then one 3-record append (positions 6-8)."""
    store = open_url(f"msgpack:///{path}")
    for i in range(5):
        store.append(recs(f"s{i}", 1))
    store.append(recs("batch", 3))
    store.close()
    return path


def _refused(path: Path, *words: str) -> LedgerError:
    """Opening ``path`` (read-write, then read-only) is refused with one STORE_ERROR line
    holding ``words``; the file is left byte for byte as it was, and no sidecar appears."""
    before = _sha(path) if path.is_file() else None
    listing = sorted(os.listdir(path.parent))
    errors = []
    for readonly in (False, True):
        with pytest.raises(LedgerError) as ei:
            open_url(f"msgpack:///{path}", readonly=readonly)
        err = ei.value
        assert err.code == "STORE_ERROR" and "\n" not in str(err), str(err)
        for w in words:
            assert w in str(err), str(err)
        if before is not None:
            assert _sha(path) == before
        assert sorted(os.listdir(path.parent)) == listing
        errors.append(err)
    return errors[0]


# --- URLs --------------------------------------------------------------------------------


def test_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for url in ("msgpack:///rel.log", f"msgpack:///{tmp_path}/abs.log"):
        store = open_store(url)
        assert isinstance(store, MsgpackLogStore)
        store.append(recs("a", 1))
        store.close()
    assert (tmp_path / "rel.log").read_bytes().startswith(_frames.HEADER)
    for bad in ("msgpack://host/x.log", "sqlite:///x.db"):
        with pytest.raises(LedgerError) as ei:
            open_url(bad)
        assert ei.value.code == "STORE_URL"


# --- torn ends: left alone by readers and by opening, cut by the next append ----------


def _torn_sidecar(path: Path) -> list[tuple[int, bytes]]:
    """The (offset, bytes) of every cut kept in ``<log>.torn``, oldest first."""
    side = Path(str(path) + ".torn")
    if not side.exists():
        return []
    data, out, off = side.read_bytes(), [], 0
    while off < len(data):
        assert data[off : off + 16] == b"CKPTLEDGER-TORN\x00"
        at, n = struct.unpack_from(">QQ", data, off + 16)
        out.append((at, data[off + 32 : off + 32 + n]))
        off += 32 + n
    return out


def _assert_left_alone(path: Path, data: bytes, indexed: int, tail_at: int) -> None:
    """Opening ``path`` (holding ``data``) read-only and read-write leaves it untouched and
    indexes ``indexed`` records; the read-only handle reports the unfinished tail."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", TornTailWarning)
        for readonly in (True, False):
            store = open_url(f"msgpack:///{path}", readonly=readonly)
            try:
                assert store.last_position() == indexed
                note = store.torn_tail()
                assert note is not None and f"offset {tail_at}" in note, note
                assert f"{len(data) - tail_at} bytes" in note and "next write" in note, note
            finally:
                store.close()
    assert path.read_bytes() == data
    assert not Path(str(path) + ".torn").exists()


@pytest.mark.parametrize("damage", ["cut-last-frame", "short-header", "cut-inside-crc",
                                    "zeros", "unfinished-batch"])
def test_torn_tail_is_cut_by_the_next_append_and_kept_aside(tmp_path: Path, damage: str) -> None:
    """An interrupted append (an incomplete last frame, a short frame header, zero bytes where
    a frame should begin, a batch whose last frames never came) is not indexed and not
    touched by opening the log; the next append cuts it, with a TornTailWarning naming its
    offset and size, after saving its bytes in ``<log>.torn``."""
    path = _log(tmp_path / "x.log")
    frames = _frames_of(path)
    data = path.read_bytes()
    keep = frames[5][0]  # the 3-record batch starts here
    torn = {
        "cut-last-frame": data[: frames[-1][0] + 20],  # batch loses its last frame's end
        "short-header": data + b"\x00\x00\x01",
        "cut-inside-crc": data + _frames.encode([9, "w", "w", 1, "T", 1, 1.0, b"x", 9, 1,
                                                 None, None, "0" * 64])[:6],
        "zeros": data + b"\x00" * 4096,
        "unfinished-batch": data[: frames[-1][0]],
    }[damage]
    expected_size = keep if damage in ("cut-last-frame", "unfinished-batch") else len(data)
    n = 8 if expected_size == len(data) else 5
    path.write_bytes(torn)
    _assert_left_alone(path, torn, n, expected_size)
    store = open_url(f"msgpack:///{path}")
    dropped = len(torn) - expected_size
    with pytest.warns(TornTailWarning, match=rf"offset {expected_size} \({dropped} bytes\)"):
        store.append(recs("after", 2))
    assert store.last_position() == n + 2
    assert [r.position for r in store.read_all()] == list(range(1, n + 3))
    assert store.torn_tail() is None
    store.close()
    assert path.read_bytes()[:expected_size] == torn[:expected_size]
    assert _torn_sidecar(path) == [(expected_size, torn[expected_size:])]
    assert _open_quietly(path).last_position() == n + 2


def test_failed_write_is_rolled_back_and_logged(tmp_path: Path) -> None:
    factory = MsgpackFactory(tmp_path)
    store = factory()
    store.append(recs("a", 1))
    size = Path(store.path).stat().st_size
    with factory.inject_failure(store), pytest.raises(LedgerError) as ei:
        store.append(recs("a", 4))
    assert "No space left" in str(ei.value)
    assert Path(store.path).stat().st_size == size


# --- damage in the middle is refused ----------------------------------------------------


@pytest.mark.parametrize("where", ["payload-byte", "crc", "length-huge", "length-small",
                                   "batch-cut"])
def test_middle_damage_is_refused(tmp_path: Path, where: str) -> None:
    path = _log(tmp_path / "x.log")
    frames = _frames_of(path)
    data = bytearray(path.read_bytes())
    off, size = frames[2]  # position 3
    if where == "payload-byte":
        data[off + size - 3] ^= 0x55
    elif where == "crc":
        data[off + 4] ^= 0x01
    elif where == "length-huge":
        data[off : off + 4] = struct.pack(">I", 10_000_000)
    elif where == "length-small":
        data[off : off + 4] = struct.pack(">I", 5)
    else:  # the 3-record batch loses its middle frame
        off, size = frames[6]
        del data[off : off + size]
    path.write_bytes(bytes(data))
    pos = 7 if where == "batch-cut" else 3
    err = _refused(path, f"position {pos}", f"offset {off}", "damaged")
    assert "later records follow" in str(err)


def test_a_reader_never_truncates_an_append_in_progress(tmp_path: Path) -> None:
    path = _log(tmp_path / "x.log")
    reader = open_url(f"msgpack:///{path}")
    writer = open_url(f"msgpack:///{path}")
    data = path.read_bytes()
    frame = data[_frames_of(path)[0][0] : _frames_of(path)[1][0]]
    # a writer part-way through a frame for position 9 (as if mid-write)
    full = _frames.encode([9, "w", "w", 1, "T", 1, 1.0, b"x" * 100, 9, 1, None, None])
    with path.open("ab") as f:
        f.write(full[:30])
    assert reader.last_position() == 8 and path.stat().st_size == len(data) + 30
    with path.open("ab") as f:
        f.write(full[30:])
    assert reader.last_position() == 9
    assert list(reader.read_stream("w"))[0].payload == b"x" * 100
    assert writer.append(recs("w", 1), expected_version=1)[0].position == 10
    assert reader.stream_version("w") == 2
    assert frame  # the first frame is left alone throughout
    reader.close()
    writer.close()


# --- hostile files ------------------------------------------------------------------------


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(LedgerError) as ei:
        open_url(f"msgpack:///{tmp_path}/nope/x.log")
    assert ei.value.code == "STORE_ERROR" and "does not exist" in str(ei.value)
    assert not (tmp_path / "nope").exists()


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "d.log").mkdir()
    _refused(tmp_path / "d.log", "directory")


def test_text_file_and_wrong_magic(tmp_path: Path) -> None:
    (tmp_path / "t.log").write_text("just some notes\n" * 20)
    _refused(tmp_path / "t.log", "bad magic")
    (tmp_path / "b.log").write_bytes(b"CKPTLEDGER-LOX\x00\x01" + os.urandom(100))
    _refused(tmp_path / "b.log", "bad magic")
    (tmp_path / "s.db").write_bytes(b"SQLite format 3\x00" + b"\x00" * 4080)
    _refused(tmp_path / "s.db", "bad magic")


def test_newer_format_version(tmp_path: Path) -> None:
    path = _log(tmp_path / "x.log")
    data = bytearray(path.read_bytes())
    data[len(_frames.MAGIC)] = _frames.FORMAT_VERSION + 1
    path.write_bytes(bytes(data))
    _refused(path, "newer")


def _writes_refused_reads_served(path: Path) -> None:
    before = _sha(path)
    with pytest.raises(LedgerError) as ei:
        open_url(f"msgpack:///{path}")
    assert ei.value.code == "STORE_ERROR" and "for writing" in str(ei.value)
    store = open_url(f"msgpack:///{path}", readonly=True)  # a read needs no write access
    assert store.last_position() == 8
    store.close()
    assert _sha(path) == before


def test_read_only_file(tmp_path: Path) -> None:
    path = _log(tmp_path / "x.log")
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
            pytest.skip("running as root and chattr +i is unavailable")
        try:
            _writes_refused_reads_served(path)
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o444)
        _writes_refused_reads_served(path)


def test_processes_racing_to_create_the_store(tmp_path: Path) -> None:
    url = f"msgpack:///{tmp_path}/new.log"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.starmap(process_worker, [("backends.msgpack_log", url, w, 3) for w in range(4)])
    store = open_url(url)
    assert [r.position for r in store.read_all()] == list(range(1, 25))
    assert store.stream_version("shared") == 12
    store.close()


# --- transactions (append_many): all of one or none of it -----------------------------------
#
# The log of these tests: plain appends at positions 1-4 (s0, s1 x2, s0), then one append_many
# of three batches on three streams: a 5-7, b 8-9, s0 10-12 (8 frames). The first frame of each
# batch carries the marker "txn 5-12" as its digest.

_STREAMS = ("s0", "s1", "a", "b", "after")
_TXN_MARKER = "txn 5-12"
_TXN_BATCH_STARTS = (0, 3, 5)  # index, among the transaction's frames, of each batch's first


class TxnLog(NamedTuple):
    """A closed log holding a transaction, and what it holds."""

    path: Path
    before: list[StoredRecord]  # positions 1-4, the plain appends
    after: list[StoredRecord]  # positions 1-12 (and 13 when a plain append follows)
    frames: list[tuple[int, int]]  # (offset, size) of the transaction's 8 frames


def _plain_appends(store: MsgpackLogStore) -> None:
    store.append(recs("s0", 1))
    store.append(recs("s1", 2))
    store.append(recs("s0", 1, "x"), expected_version=1)


def _transaction(store: MsgpackLogStore) -> list[list[StoredRecord]]:
    out = store.append_many([(recs("a", 3), NO_STREAM), (recs("b", 2), 0),
                             (recs("s0", 3, "y"), 2)])
    assert [[r.position for r in b] for b in out] == [[5, 6, 7], [8, 9], [10, 11, 12]]
    return out


def _txn_log(path: Path, later_append: bool = False) -> TxnLog:
    """Plain appends, one 3-batch transaction, optionally one plain append after it."""
    store = open_url(f"msgpack:///{path}")
    assert isinstance(store, MsgpackLogStore)
    _plain_appends(store)
    before = list(store.read_all())
    _transaction(store)
    offsets = list(store._offsets[4:12])
    if later_append:
        store.append(recs("after", 1))
    after = list(store.read_all())
    store.close()
    frames = _frames_of(path)[4:12]
    assert [off for off, _ in frames] == offsets
    return TxnLog(path, before, after, frames)


def _assert_holds(store: MsgpackLogStore, records: list[StoredRecord]) -> None:
    """``store`` holds exactly ``records``: positions, streams, versions, an intact chain."""
    assert store.last_position() == len(records)
    got = list(store.read_all())
    assert got == records
    assert [r.position for r in got] == list(range(1, len(records) + 1))
    for s in _STREAMS:
        mine = [r for r in records if r.stream_id == s]
        assert store.stream_version(s) == len(mine), s
        assert list(store.read_stream(s)) == mine, s
    report = verify_chain(got)
    assert report.ok, report


def _open_quietly(path: Path) -> MsgpackLogStore:
    """Open ``path``, failing on any TornTailWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", TornTailWarning)
        store = open_url(f"msgpack:///{path}")
    assert isinstance(store, MsgpackLogStore)
    return store


# Where to cut the transaction: (frame index, bytes into the frame; None: half of it).
_BOUNDARIES = [(i, 0) for i in range(1, 8)]  # every frame boundary strictly inside
_MID_FRAME = [(0, 1), (0, 7), (0, 8), (2, None), (3, 10), (5, 8), (7, -1)]


def _cut_offset(frames: list[tuple[int, int]], i: int, into: int | None) -> int:
    off, size = frames[i]
    if into is None:
        return off + size // 2
    return off + (into if into >= 0 else size + into)


def test_transaction_frames_carry_the_marker_on_each_batch_first_frame(tmp_path: Path) -> None:
    """On disk, the first frame of each of the transaction's batches has no key and the
    marker "txn <first>-<last>" as its digest, the first batch's followed by the digest of
    all the transaction's records (what tells a torn transaction from an edited marker);
    the other frames have neither."""
    log = _txn_log(tmp_path / "x.log")
    data = log.path.read_bytes()
    whole = digest([*recs("a", 3), *recs("b", 2), *recs("s0", 3, "y")])
    for i, (off, size) in enumerate(log.frames):
        f = _frames.decode(data[off + 8 : off + size])
        assert f is not None
        assert f[10] is None
        expected = {0: f"{_TXN_MARKER} {whole}", 3: _TXN_MARKER, 5: _TXN_MARKER}.get(i)
        assert f[11] == expected, (i, f[11])


@pytest.mark.parametrize("i,into", _BOUNDARIES + _MID_FRAME)
def test_torn_transaction_is_cut_whole_by_the_next_append(
    tmp_path: Path, i: int, into: int | None
) -> None:
    """A transaction cut anywhere inside (at a frame or batch boundary, or mid-frame) is not
    indexed and not touched by opening; the next append cuts it whole (into ``<log>.torn``)
    with a TornTailWarning naming its offset and size; the store then holds exactly the
    records before it, the chain verifies, and appends continue it."""
    log = _txn_log(tmp_path / "x.log")
    start = log.frames[0][0]
    cut = _cut_offset(log.frames, i, into)
    assert start < cut < log.frames[-1][0] + log.frames[-1][1]
    data = log.path.read_bytes()
    log.path.write_bytes(data[:cut])
    _assert_left_alone(log.path, data[:cut], 4, start)
    store = open_url(f"msgpack:///{log.path}")
    assert isinstance(store, MsgpackLogStore)
    _assert_holds(store, log.before)
    with pytest.warns(TornTailWarning, match=rf"offset {start} \({cut - start} bytes\)"):
        new = store.append(recs("after", 2))
    assert _torn_sidecar(log.path) == [(start, data[start:cut])]
    assert [r.position for r in new] == [5, 6]
    _assert_holds(store, log.before + new)
    store.close()
    again = _open_quietly(log.path)
    _assert_holds(again, log.before + new)
    again.close()


def test_cut_at_the_transaction_edges_loses_nothing(tmp_path: Path) -> None:
    """Cut exactly before the transaction, the log is the one before it; cut exactly at its
    end, the whole transaction is kept: neither is torn (no warning)."""
    log = _txn_log(tmp_path / "x.log")
    data = log.path.read_bytes()
    end = log.frames[-1][0] + log.frames[-1][1]
    assert end == len(data)
    for cut, expected in ((log.frames[0][0], log.before), (end, log.after)):
        log.path.write_bytes(data[:cut])
        store = _open_quietly(log.path)
        assert log.path.stat().st_size == cut
        _assert_holds(store, expected)
        store.close()


def test_second_handle_sees_a_transaction_whole_on_refresh(tmp_path: Path) -> None:
    """A handle opened before an append_many sees all of it on its next read."""
    path = tmp_path / "x.log"
    writer = open_url(f"msgpack:///{path}")
    _plain_appends(writer)
    reader = open_url(f"msgpack:///{path}")
    before = list(writer.read_all())
    _assert_holds(reader, before)
    _transaction(writer)
    after = list(writer.read_all())
    assert len(after) == 12
    _assert_holds(reader, after)
    writer.close()
    reader.close()


@pytest.mark.parametrize("i,into", _BOUNDARIES + _MID_FRAME)
def test_second_handle_never_sees_part_of_a_cut_transaction(
    tmp_path: Path, i: int, into: int | None
) -> None:
    """A handle opened before an append_many whose transaction is then cut short (before
    the handle looks) sees only the records before it, and leaves the file alone."""
    log = _txn_log(tmp_path / "x.log")
    data = log.path.read_bytes()
    start = log.frames[0][0]
    log.path.write_bytes(data[:start])
    reader = _open_quietly(log.path)
    _assert_holds(reader, log.before)
    cut = _cut_offset(log.frames, i, into)
    with log.path.open("ab") as f:  # the append_many's write, interrupted at ``cut``
        f.write(data[start:cut])
    _assert_holds(reader, log.before)
    assert log.path.read_bytes() == data[:cut]  # a reader never truncates
    reader.close()


def test_reader_watching_a_transaction_being_written_sees_none_then_all(
    tmp_path: Path,
) -> None:
    """As the transaction's bytes arrive (frame by frame, and part-way through frames), a
    reader keeps showing the records before it; once the last byte is there, all of it."""
    log = _txn_log(tmp_path / "x.log")
    data = log.path.read_bytes()
    start = log.frames[0][0]
    log.path.write_bytes(data[:start])
    reader = _open_quietly(log.path)
    cuts = sorted({_cut_offset(log.frames, i, into)
                   for i in range(8) for into in (0, 3, 8, None, -1) if (i, into) != (0, 0)})
    written = start
    for cut in cuts:
        with log.path.open("ab") as f:
            f.write(data[written:cut])
        written = cut
        _assert_holds(reader, log.before)
        assert log.path.stat().st_size == cut
    with log.path.open("ab") as f:
        f.write(data[written:])
    _assert_holds(reader, log.after)
    reader.close()


# every frame followed by a later plain append, and every frame at the end of the file
_DAMAGED = [(i, True) for i in range(8)] + [(i, False) for i in range(8)]


@pytest.mark.parametrize("i,later_append", _DAMAGED)
def test_damaged_frame_inside_a_transaction_is_refused(
    tmp_path: Path, i: int, later_append: bool
) -> None:
    """A flipped payload byte in any frame of a transaction is refused with STORE_ERROR
    naming the record's position and offset, whether valid frames follow it or it is the
    very last frame of the file (a complete frame failing its crc is damage, not a torn
    write); the file is left byte for byte unchanged."""
    log = _txn_log(tmp_path / "x.log", later_append)
    data = bytearray(log.path.read_bytes())
    off, size = log.frames[i]
    data[off + size - 3] ^= 0x55
    log.path.write_bytes(bytes(data))
    err = _refused(log.path, f"position {5 + i}", f"offset {off}", "damaged", "crc32 mismatch")
    assert ("later records follow" in str(err)) == (later_append or i < 7), str(err)


def _remark(path: Path, frame: tuple[int, int], marker: str, was: str = _TXN_MARKER) -> None:
    """Rewrite the frame at ``frame`` (marked ``was``, perhaps followed by the transaction's
    digest) with ``marker`` as its digest (and a valid crc)."""
    data = path.read_bytes()
    off, size = frame
    f = _frames.decode(data[off + 8 : off + size])
    assert f is not None and f[11].split(" ")[:2] == was.split(" "), f
    f[11] = marker
    path.write_bytes(data[:off] + _frames.encode(f) + data[off + size :])


@pytest.mark.parametrize("batch,marker", [
    (0, "txn 5-3"),  # ends before it begins
    (0, "txn 5-5"),  # a transaction of one position
    (0, "txn 6-12"),  # does not begin at its first batch
    (0, "txn 4-12"),  # begins before its first batch
    (0, "txn 5-6"),  # ends inside its first batch (5-7)
    (0, "txn x-y"),
    (0, "txn 5-"),
    (0, "txn -12"),
    (0, "txn 5-12 "),
    (0, "txn 5--12"),
    (1, "txn 5-3"),
    (1, "txn 5-8"),  # ends inside the second batch (8-9)
    (1, "txn x-y"),
    (2, "txn 5-3"),
    (2, "txn x-y"),
    (2, "txn 5-11"),  # ends inside the last batch (10-12)
])
def test_inconsistent_transaction_marker_is_refused(
    tmp_path: Path, batch: int, marker: str
) -> None:
    """A batch whose marker is malformed or names a range that cannot be this transaction's
    (a well-formed frame, valid crc) is refused on open like any damaged frame: STORE_ERROR
    naming that batch's first position and offset; the file is left unchanged."""
    log = _txn_log(tmp_path / "x.log")
    frame = log.frames[_TXN_BATCH_STARTS[batch]]
    _remark(log.path, frame, marker)
    position = (5, 8, 10)[batch]
    err = _refused(log.path, f"position {position}", f"offset {frame[0]}",
                   "inconsistent transaction")
    assert "later records follow" in str(err)


def _one_record_last_batch_log(path: Path) -> tuple[list[StoredRecord], list[tuple[int, int]]]:
    """Plain appends (1-4), then a transaction a 5-7, b 8-9, c 10 ending the file: the
    records before it and every frame."""
    store = open_url(f"msgpack:///{path}")
    assert isinstance(store, MsgpackLogStore)
    _plain_appends(store)
    before = list(store.read_all())
    store.append_many([(recs("a", 3), NO_STREAM), (recs("b", 2), 0), (recs("c", 1), 0)])
    assert store.last_position() == 10
    store.close()
    return before, _frames_of(path)


@pytest.mark.parametrize("marker", ["txn x-y", "txn 5-3", "txn 10-10"])
def test_bad_marker_on_a_final_one_record_batch_is_refused(tmp_path: Path, marker: str) -> None:
    """A transaction's last batch is one record, the last frame of the file, and its marker
    is malformed or inconsistent: refused (a well-formed frame with a valid crc is damage,
    not a torn write), naming its position; the file is left unchanged."""
    path = tmp_path / "x.log"
    _, frames = _one_record_last_batch_log(path)
    _remark(path, frames[9], marker, was="txn 5-10")
    _refused(path, "position 10", f"offset {frames[9][0]}", "inconsistent transaction")


@pytest.mark.parametrize("marker,cut", [
    ("txn 10-13", False),  # the last batch (10-12) claims a range past the end of the file
    ("txn 10-12", True),  # the last batch claims its own range; the file is then cut in it
])
def test_a_later_batch_with_a_foreign_marker_never_keeps_part_of_the_transaction(
    tmp_path: Path, marker: str, cut: bool
) -> None:
    """The transaction's last batch carries a well-formed marker that is not the
    transaction's ("txn 5-12"): opening must not end up with the transaction's first two
    batches (5-9) and not its last: either the file is refused, or the whole transaction is
    dropped as a torn end (no writer begins a transaction inside another: it is refused)."""
    log = _txn_log(tmp_path / "x.log")
    _remark(log.path, log.frames[5], marker)
    if cut:
        data = log.path.read_bytes()
        log.path.write_bytes(data[: len(data) - 10])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TornTailWarning)
            store = open_url(f"msgpack:///{log.path}")
    except LedgerError as e:
        assert e.code == "STORE_ERROR"
        return
    assert isinstance(store, MsgpackLogStore)
    assert store.last_position() == 4, [r.position for r in store.read_all()]
    _assert_holds(store, log.before)
    store.close()


# --- damage is never cut; only a torn write is, and only by a writer ---------------------
#
# The log of these tests is written as `ckpt-ledger copy --to msgpack:///...` writes one
# (ledger.app.copying.copy_store: transactions of append_many, here of up to 5 records): runs
# a 1-2, b 3, a 4, c 5 | c 6-7, b 8-9, a 10 | c 11, b 12-14. Its last transaction (11-14)
# ends the file; position 7 ends a batch in the middle of it.

_COPIED_RUNS = [("a", 2), ("b", 1), ("a", 1), ("c", 3), ("b", 2), ("a", 1), ("c", 1), ("b", 3)]


def _copied_log(path: Path) -> tuple[list[StoredRecord], list[tuple[int, int]]]:
    """A log written by copy_store (transactions of up to 5 records): its records and the
    (offset, size) of every frame."""
    source = MemoryStore()
    for i, (stream, n) in enumerate(_COPIED_RUNS):
        source.append(recs(stream, n, f"run{i}-"))
    target = open_url(f"msgpack:///{path}")
    report = copy_store(source, target, batch_size=5)
    assert report.verify is not None and report.verify.identical and report.batches == 3
    records = list(target.read_all())
    target.close()
    frames = _frames_of(path)
    assert len(records) == len(frames) == 14
    return records, frames


def _keyed_log(path: Path) -> tuple[list[StoredRecord], list[tuple[int, int]]]:
    """Five one-record appends, then a 3-record append with an idempotency key (6-8)."""
    store = open_url(f"msgpack:///{path}")
    for i in range(5):
        store.append(recs(f"s{i}", 1))
    store.append(recs("batch", 3), idempotency_key="key-1")
    records = list(store.read_all())
    store.close()
    return records, _frames_of(path)


_LOGS = {"copied": _copied_log, "keyed": _keyed_log}
# (log, index of the frame whose bytes are flipped): the last frame of each log, and a
# frame ending a batch in the middle of the copied log's second transaction
_FLIPPED = [("copied", 13), ("copied", 6), ("keyed", 7)]


def _flip(data: bytes, at: int, mask: int) -> bytes:
    return data[:at] + bytes([data[at] ^ mask]) + data[at + 1 :]


@pytest.mark.parametrize("log,index", _FLIPPED)
def test_every_flipped_byte_of_a_complete_frame_is_damage(
    tmp_path: Path, log: str, index: int
) -> None:
    """Flipping any byte of a complete frame (its length, its crc or its record; each byte
    XOR 0xFF and XOR 0x01), the last frame of the file included, is reported on open (read-only
    and read-write) as STORE_ERROR naming that record's position and offset; nothing is cut,
    nothing is created."""
    path = tmp_path / "x.log"
    records, frames = _LOGS[log](path)
    data = path.read_bytes()
    off, size = frames[index]
    position = records[index].position
    for at in range(off, off + size):
        for mask in (0xFF, 0x01):
            path.write_bytes(_flip(data, at, mask))
            _refused(path, f"position {position}", f"offset {off}", "damaged")


def test_verify_log_reports_a_damaged_last_frame_and_nothing_is_cut(tmp_path: Path) -> None:
    """The review's case: a ledger copied with `copy --to msgpack:///...`, one byte flipped in
    the last frame. verify-log fails with one line naming the position and offset (it used to
    cut the whole batch and report "ok: 0 events"); so do the other read commands and a write
    command; the file is byte for byte as it was and no sidecar appears."""
    host = Host(tmp_path)
    host.ok("mock", "define", "vm", "--disk", "vda")
    host.ok("mock", "define", "vm2", "--disk", "vda")
    for i in range(3):
        host.ok("create", "vm", f"c{i}")
        host.ok("create", "vm2", f"d{i}")
    log = tmp_path / "l.log"
    host.ok("copy", "--from", host.store, "--to", f"msgpack:///{log}")
    frames = _frames_of(log)
    off, size = frames[-1]
    data = _flip(log.read_bytes(), off + size // 2, 0x01)
    log.write_bytes(data)
    host.store = f"msgpack:///{log}"
    for argv in (["verify-log"], ["head"], ["log"], ["list", "vm"], ["export", "-"],
                 ["create", "vm", "c9"]):
        line = assert_one_error_line(host.main(*argv), "STORE_ERROR")
        assert f"position {len(frames)}" in line and f"offset {off}" in line, line
        assert log.read_bytes() == data
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("l.log")) == [
            "l.log"]


def test_torn_copied_log_cut_anywhere_in_its_last_transaction(tmp_path: Path) -> None:
    """The copied log cut at every offset inside its last transaction (a torn write): opening
    it read-only or read-write indexes the 10 records before it and leaves every byte alone
    (the read-only handle reports the unfinished tail); at each frame boundary and in the
    middle of each frame, the next append cuts it whole, keeping its bytes in the sidecar."""
    path = tmp_path / "x.log"
    records, frames = _copied_log(path)
    data = path.read_bytes()
    start = frames[10][0]
    for cut in range(start + 1, len(data)):
        path.write_bytes(data[:cut])
        _assert_left_alone(path, data[:cut], 10, start)
    cuts = sorted({off for off, _ in frames[11:]} | {off + size // 2 for off, size in frames[10:]})
    for cut in cuts:
        Path(str(path) + ".torn").unlink(missing_ok=True)
        path.write_bytes(data[:cut])
        store = open_url(f"msgpack:///{path}")
        with pytest.warns(TornTailWarning, match=rf"offset {start} \({cut - start} bytes\)"):
            new = store.append(recs("after", 1))
        assert new[0].position == 11
        assert list(store.read_all()) == records[:10] + new
        store.close()
        assert _torn_sidecar(path) == [(start, data[start:cut])]


def _edit(data: bytes, frame: tuple[int, int], field: int, value: object) -> bytes:
    """``data`` with field ``field`` of the frame at ``frame`` set to ``value`` (crc
    recomputed, so the frame is well formed)."""
    off, size = frame
    f = _frames.decode(data[off + 8 : off + size])
    assert f is not None
    f[field] = value
    return data[:off] + _frames.encode(f) + data[off + size :]


def _edits(f: list[object]) -> dict[int, list[object]]:
    """Values to try in the fields outside the hash: batch_first (8), batch_size (9), the
    idempotency key (10) and the digest or transaction marker (11)."""
    first, size = f[8], f[9]
    assert isinstance(first, int) and isinstance(size, int)
    sig = f[11] if isinstance(f[11], str) else ""
    marker = sig.split(" ")
    more = " ".join(["txn", f"{marker[1].split('-')[0]}-99", *marker[2:]]) if sig.startswith(
        "txn ") else "txn 1-99"
    return {
        8: [first - 1, first + 1, 0, 2**63 - 1],
        9: [size - 1, size + 1, size + 100, 0, 2**32, 2**63 - 1],
        10: [None, "key-1", "key-2", ""],
        11: [None, "", "0" * 64, sig[:-1] + ("0" if sig[-1:] != "0" else "1"), more,
             sig.split(" ")[0] if sig else "txn", "txn 1-2"],
    }


def _check_nothing_committed_is_cut(path: Path, data: bytes, records: list[StoredRecord],
                                    what: str) -> None:
    """Open ``path`` (holding ``data``) and append: either refused with STORE_ERROR and the
    file unchanged, or every record of ``records`` is still there after the append."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TornTailWarning)
        try:
            store = open_url(f"msgpack:///{path}")
            store.append(recs("after", 1))
        except LedgerError as e:
            assert e.code == "STORE_ERROR", (what, str(e))
            assert path.read_bytes() == data, what
            assert not Path(str(path) + ".torn").exists(), what
            return
    try:
        kept = [(r.position, r.stream_id, r.stream_version, r.payload, r.hash)
                for r in store.read_all()][: len(records)]
        assert kept == [(r.position, r.stream_id, r.stream_version, r.payload, r.hash)
                        for r in records], what
        assert not Path(str(path) + ".torn").exists(), what
    finally:
        store.close()


@pytest.mark.parametrize("log", list(_LOGS))
def test_edited_fields_outside_the_hash_never_cut_committed_records(
    tmp_path: Path, log: str
) -> None:
    """Editing batch_first, batch_size, the idempotency key or the digest/transaction marker
    of any frame of the last transaction or batch (crc recomputed, so nothing looks torn by
    its bytes) never makes opening and appending cut committed records: the log is refused
    as damaged (left unchanged) or every record is kept."""
    path = tmp_path / "x.log"
    records, frames = _LOGS[log](path)
    data = path.read_bytes()
    last = frames[10:] if log == "copied" else frames[5:]
    for i, frame in enumerate(last):
        f = _frames.decode(data[frame[0] + 8 : frame[0] + frame[1]])
        assert f is not None
        for field, values in _edits(f).items():
            for value in values:
                if value == f[field]:
                    continue
                edited = _edit(data, frame, field, value)
                path.write_bytes(edited)
                _check_nothing_committed_is_cut(path, edited, records,
                                                f"frame {i}, field {field} = {value!r}")


@pytest.mark.parametrize("log", list(_LOGS))
def test_a_complete_unit_claiming_more_records_is_damage(tmp_path: Path, log: str) -> None:
    """The last batch (keyed log) or transaction (copied log) edited consistently to claim
    one record more than it holds (batch_size on all its frames, or the marker on all its
    batches): its digest still matches the records present, so it is complete and edited,
    not torn: refused, and left as it is."""
    path = tmp_path / "x.log"
    records, frames = _LOGS[log](path)
    data = path.read_bytes()
    if log == "keyed":
        for frame in reversed(frames[5:]):
            data = _edit(data, frame, 9, 4)
    else:
        for i in reversed((10, 11)):
            off, size = _frames_of_bytes(data)[i]
            f = _frames.decode(data[off + 8 : off + size])
            assert f is not None and f[11].startswith("txn 11-14")
            data = _edit(data, (off, size), 11, f[11].replace("txn 11-14", "txn 11-15"))
    path.write_bytes(data)
    first = records[-1].position - (2 if log == "keyed" else 3)
    err = _refused(path, "damaged", f"position {first}")
    assert "claims" in str(err), str(err)


def _frames_of_bytes(data: bytes) -> list[tuple[int, int]]:
    off, out = len(_frames.HEADER), []
    while off < len(data):
        (length,) = struct.unpack_from(">I", data, off)
        out.append((off, 8 + length))
        off += 8 + length
    return out


def test_an_edit_identical_to_a_torn_write_loses_nothing(tmp_path: Path) -> None:
    """A last batch edited to claim more records AND to carry another digest is byte for
    byte what a writer leaves when it dies between two frames of a batch: it cannot be told
    apart, so the next append cuts it, but its bytes are kept in ``<log>.torn``, from which
    they can be put back."""
    path = tmp_path / "x.log"
    records, frames = _keyed_log(path)
    data = path.read_bytes()
    for frame in reversed(frames[5:]):
        data = _edit(data, frame, 9, 4)
    data = _edit(data, _frames_of_bytes(data)[5], 11, "0" * 64)
    path.write_bytes(data)
    start = frames[5][0]
    _assert_left_alone(path, data, 5, start)
    store = open_url(f"msgpack:///{path}")
    with pytest.warns(TornTailWarning, match=rf"offset {start}.*{path}\.torn"):
        store.append(recs("after", 1))
    store.close()
    assert _torn_sidecar(path) == [(start, data[start:])]


def test_verify_log_names_an_unfinished_tail_and_leaves_it(tmp_path: Path) -> None:
    """verify-log on a log whose last transaction is torn: exit 0, the chain of the records
    before it is intact, and it says the tail is there, not counted, and that the next write
    removes it; head and log answer too; the file is unchanged. The next write cuts it."""
    path = tmp_path / "x.log"
    records, frames = _copied_log(path)
    data = path.read_bytes()[: frames[12][0] + 5]
    path.write_bytes(data)
    host = Host(tmp_path)
    host.store = f"msgpack:///{path}"
    run = host.main("verify-log")
    assert run.code == 0, run.everything
    assert run.stdout.startswith(f"ok: 10 events, hash chain intact; head 10:{records[9].hash}")
    assert f"offset {frames[10][0]}" in run.stdout and "not counted" in run.stdout
    assert "next write removes it" in run.stdout
    report = host.main("verify-log", "--json")
    assert report.code == 0 and report.json()["torn_tail"] is not None
    assert host.main("head").stdout.strip() == f"10:{records[9].hash}"
    assert path.read_bytes() == data and not Path(str(path) + ".torn").exists()
