"""The msgpack:/// log store: the shared contract, then torn ends, damage and hostile files."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import multiprocessing
import os
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends import _frames
from backends.msgpack_log import MsgpackLogStore, TornTailWarning, open_url
from ledger.errors import LedgerError
from ledger.plugins import open_store
from ledger.ports import EventStore

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
