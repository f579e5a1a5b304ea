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
from backends.msgpack_log import MsgpackLogStore, TornTailWarning, open_url
from ledger.envelope import StoredRecord
from ledger.errors import LedgerError
from ledger.integrity import verify_chain
from ledger.plugins import open_store
from ledger.ports import NO_STREAM, EventStore

try:
    from .store_contract import StoreContract, StoreFactory, process_worker, recs
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    from store_contract import (  # type: ignore[no-redef]
        StoreContract,
        StoreFactory,
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
    before = _sha(path) if path.is_file() else None
    with pytest.raises(LedgerError) as ei:
        open_url(f"msgpack:///{path}")
    err = ei.value
    assert err.code == "STORE_ERROR" and "\n" not in str(err), str(err)
    for w in words:
        assert w in str(err), str(err)
    if before is not None:
        assert _sha(path) == before
    return err


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


# --- torn ends are repaired, with a warning ---------------------------------------------


@pytest.mark.parametrize("damage", ["cut-last-frame", "short-header", "bad-crc-last",
                                    "zeros", "unfinished-batch"])
def test_torn_tail_is_truncated_with_a_warning(tmp_path: Path, damage: str) -> None:
    path = _log(tmp_path / "x.log")
    frames = _frames_of(path)
    data = path.read_bytes()
    keep = frames[5][0]  # the 3-record batch starts here
    torn = {
        "cut-last-frame": data[: frames[-1][0] + 20],  # batch loses its last frame
        "short-header": data + b"\x00\x00\x01",
        "bad-crc-last": data[:-1] + bytes([data[-1] ^ 0xFF]),
        "zeros": data + b"\x00" * 4096,
        "unfinished-batch": data[: frames[-1][0]],
    }[damage]
    expected_size = len(data) if damage in ("short-header", "zeros") else keep
    path.write_bytes(torn)
    dropped = len(torn) - expected_size
    with pytest.warns(TornTailWarning, match=rf"offset {expected_size} \({dropped} bytes\)"):
        store = open_url(f"msgpack:///{path}")
    assert path.stat().st_size == expected_size
    n = 8 if expected_size == len(data) else 5
    assert store.last_position() == n
    assert [r.position for r in store.read_all()] == list(range(1, n + 1))
    store.append(recs("after", 2))
    assert store.last_position() == n + 2
    store.close()
    assert open_url(f"msgpack:///{path}").last_position() == n + 2


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


def test_read_only_file(tmp_path: Path) -> None:
    path = _log(tmp_path / "x.log")
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
            pytest.skip("running as root and chattr +i is unavailable")
        try:
            _refused(path, "for writing")
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o444)
        _refused(path, "for writing")


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
    marker "txn <first>-<last>" as its digest; the other frames have neither."""
    log = _txn_log(tmp_path / "x.log")
    data = log.path.read_bytes()
    for i, (off, size) in enumerate(log.frames):
        f = _frames.decode(data[off + 8 : off + size])
        assert f is not None
        assert f[10] is None
        assert f[11] == (_TXN_MARKER if i in _TXN_BATCH_STARTS else None), (i, f[11])


@pytest.mark.parametrize("i,into", _BOUNDARIES + _MID_FRAME)
def test_torn_transaction_is_truncated_whole(
    tmp_path: Path, i: int, into: int | None
) -> None:
    """A transaction cut anywhere inside (at a frame or batch boundary, or mid-frame) is
    truncated whole on open with a TornTailWarning naming its offset and size; the store then
    holds exactly the records before it, the chain verifies, and appends continue it."""
    log = _txn_log(tmp_path / "x.log")
    start = log.frames[0][0]
    cut = _cut_offset(log.frames, i, into)
    assert start < cut < log.frames[-1][0] + log.frames[-1][1]
    log.path.write_bytes(log.path.read_bytes()[:cut])
    with pytest.warns(TornTailWarning, match=rf"offset {start} \({cut - start} bytes\)"):
        store = open_url(f"msgpack:///{log.path}")
    assert isinstance(store, MsgpackLogStore)
    assert log.path.stat().st_size == start
    _assert_holds(store, log.before)
    new = store.append(recs("after", 2))
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


# every frame followed by a later plain append; every frame but the last at the end
_DAMAGED = [(i, True) for i in range(8)] + [(i, False) for i in range(7)]


@pytest.mark.parametrize("i,later_append", _DAMAGED)
def test_damaged_frame_inside_a_transaction_is_refused(
    tmp_path: Path, i: int, later_append: bool
) -> None:
    """A flipped payload byte in any frame of a transaction followed by valid frames (its
    own later frames, or a later plain append) is refused with STORE_ERROR naming the
    record's position and offset; the file is left byte for byte unchanged. The very last
    frame of a transaction at the end of the file is a torn end instead: see below."""
    log = _txn_log(tmp_path / "x.log", later_append)
    data = bytearray(log.path.read_bytes())
    off, size = log.frames[i]
    data[off + size - 3] ^= 0x55
    log.path.write_bytes(bytes(data))
    err = _refused(log.path, f"position {5 + i}", f"offset {off}", "damaged", "crc32 mismatch")
    assert "later records follow" in str(err)


def test_damaged_last_frame_of_a_final_transaction_truncates_it_whole(tmp_path: Path) -> None:
    """A damaged last frame with nothing after it is a torn end: the whole transaction goes
    (not just its last batch), with a TornTailWarning."""
    log = _txn_log(tmp_path / "x.log")
    data = bytearray(log.path.read_bytes())
    start = log.frames[0][0]
    data[-3] ^= 0x55
    log.path.write_bytes(bytes(data))
    with pytest.warns(TornTailWarning, match=rf"offset {start} \({len(data) - start} bytes\)"):
        store = open_url(f"msgpack:///{log.path}")
    assert isinstance(store, MsgpackLogStore)
    _assert_holds(store, log.before)
    store.close()


def _remark(path: Path, frame: tuple[int, int], marker: str, was: str = _TXN_MARKER) -> None:
    """Rewrite the frame at ``frame`` (marked ``was``) with ``marker`` as its digest (and a
    valid crc)."""
    data = path.read_bytes()
    off, size = frame
    f = _frames.decode(data[off + 8 : off + size])
    assert f is not None and f[11] == was, f
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
    assert log.path.stat().st_size == log.frames[0][0]
    _assert_holds(store, log.before)
    store.close()
