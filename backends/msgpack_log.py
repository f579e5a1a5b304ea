"""The append-only file store (``msgpack:///rel.log`` or ``msgpack:////abs/ledger.log``).

File format: a 16-byte header (``CKPTLEDGER-LOG\\0`` + format version 2), then one frame per
record: ``[u32 length][u32 crc32][msgpack]`` (big-endian; crc32 of the msgpack bytes). The
msgpack is the array ``[position, stream_id, stream_name, stream_version, type,
schema_version, recorded_at, payload, batch_first, batch_size, idempotency_key, digest,
hash]``; the key and digest are set on a batch's first record only, ``hash`` is the event's
link in the hash chain (ledger/log/chain.py). A batch (one ``append``) counts only once all its
frames are present, which makes multi-record appends atomic; its digest is the sha256 of its
records (backends/_common.py ``digest``). An ``append_many`` of several non-empty batches
writes each as such a batch (one stream each), all in one write, and makes them one
transaction: the first frame of each carries no key and, as its digest, the marker
``"txn <first>-<last>"`` naming the positions the transaction spans, the first batch's
followed by a space and the digest of all the transaction's records; none of its batches
counts until all are present. A reader that predates transactions reads them as plain
batches. Format-1 logs (frames of 12 fields, no hash) are still read: their hashes are
computed in memory when the log is opened and new frames appended to them carry their own.
The hash chain is checked by ``ckpt-ledger verify-log``, not at open.

Snapshots live in the sidecar ``<log path>.snapshot``: ``CKPTLEDGER-SNAP\\0``, then a crc32
and the msgpack map ``{key: [position, data]}``; it is replaced atomically (temporary file,
fsync, rename) and a damaged one reads as "no snapshot".

Damage and torn writes. Every open verifies every frame, and every read verifies the frames
that appeared since. Anything complete that fails a check is damage: a frame whose bytes are
all there but whose crc32 does not match, that does not decode, or that cannot come where it
is (position, stream version, batch fields, transaction marker). Damage is refused with
STORE_ERROR naming the record's position and offset, wherever it is (the last frame of the
file included), and nobody cuts it: a complete frame was written whole, so it is not an
interrupted write. Only an interrupted append is torn, and it can only be at the end:

* a last frame that is incomplete: a frame header cut short, or a length running past the
  end of the file, unless the bytes left are a whole record under that crc (then the length
  field was edited: damage) or a valid frame follows (damage with later records);
* zero bytes from a frame boundary to the end (blocks allocated but never written);
* complete frames ending the file exactly between two frames of a batch or transaction
  (a crash at a frame boundary). The fields that say a batch or transaction goes on
  (batch_size, batch_first, the marker's range) are outside the hash, so an edit could make
  a whole unit look unfinished; the digest tells them apart: when the records present match
  the digest the unit declared, the unit is complete and its fields were edited (damage);
  a torn unit never matches, as its digest counts the missing records too. A batch without
  a digest, or a torn write whose frame-boundary cut cannot be told from an edit of several
  of those fields at once (the range and the digest together), is cut only as below.

Readers (read-only handles, and every read) never cut: a torn end is simply not indexed
(``torn_tail`` describes it; it may also be an append still being written). A writer cuts it
before its next append, under the writer lock, with a :class:`TornTailWarning` naming its
offset and size; first it appends the cut bytes to the sidecar ``<log path>.torn``
(``CKPTLEDGER-TORN\\0``, the offset and the length as two big-endian u64, then the bytes;
fsynced), so that even a cut of something that only looked torn loses nothing and can be
put back. Opening read-write cuts nothing either: a write command that ends up appending
nothing leaves the file as it found it.

Appends hold an exclusive ``flock`` on the log itself and ``fsync`` before returning; readers
take a shared one while they verify the log at open and none afterwards, picking up new
frames by scanning on from the last offset they verified. ``lock(stream_id)`` is an
exclusive flock on the sidecar ``<log path>.lock`` (one lock for every stream). A read-only
handle (``open_url(url, readonly=True)``) opens the log ``O_RDONLY`` and creates nothing: a
log that does not exist (or is an empty file) is refused, and every write is refused.
"""

from __future__ import annotations

import array
import contextlib
import hashlib
import logging
import os
import re
import stat
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, NoReturn

import msgpack

from ledger.domain.errors import LedgerError
from ledger.log.chain import GENESIS, record_hash
from ledger.log.files import fsync_dir, replacing
from ledger.log.intents import INTENT_PREFIX
from ledger.log.records import NewRecord, StoredRecord
from ledger.log.store import ANY, ExpectedVersion, ScanRow
from ledger.log.urls import path_of, scheme_of

from . import _frames as fr
from ._common import (
    Batch,
    check_batch,
    check_batches,
    digest,
    file_lock,
    idempotency_mismatch,
    missing_store,
    plan,
    read_only,
    scan_pages,
)

log = logging.getLogger(__name__)
_SNAP_MAGIC = b"CKPTLEDGER-SNAP\x00"
_TORN_MAGIC = b"CKPTLEDGER-TORN\x00"

# A unit being read: the frames of an unfinished batch or transaction, (offset, length, fields)
Pending = list[tuple[int, int, list[Any]]]


class TornTailWarning(UserWarning):
    """An interrupted append was cut from the end of a log (its bytes kept in <log>.torn)."""


def _err(detail: str) -> LedgerError:
    return LedgerError("STORE_ERROR", " ".join(detail.split()))


class MsgpackLogStore:
    """An :class:`ledger.log.store.EventStore` in one append-only file of framed msgpack records."""

    lock_timeout: float | None = None  # seconds lock() waits (None: ledger.log.locks' default)

    def __init__(self, path: str, url: str | None = None, readonly: bool = False) -> None:
        """Open the log at ``path`` (creating it if absent, unless ``readonly``), verifying
        every frame."""
        self.path = path
        self.url = url or f"msgpack:///{path}"
        self.readonly = readonly
        self.lock_path = path + ".lock"
        self.torn_path = path + ".torn"
        self._mutex = threading.RLock()
        self._offsets = array.array("q")  # frame offset of position p at [p - 1]
        self._lengths = array.array("q")
        self._streams: dict[str, list[int]] = {}
        self._idempotency: dict[str, tuple[str, int, int]] = {}
        self._end = len(fr.HEADER)  # offset after the last verified, complete batch
        self._tail: tuple[int, int, str] | None = None  # unfinished bytes past _end: off, n, why
        self._last_hash = GENESIS  # chain hash of the last indexed position
        self._legacy: dict[int, str] = {}  # computed hashes of format-1 frames, by position
        self.snapshot_path = path + ".snapshot"
        self._fd = self._open()
        try:
            with fr.Flock(self._fd, shared=readonly):
                self._check_header()
                self._refresh(locked=True)
        except BaseException:
            os.close(self._fd)
            raise

    def _open(self) -> int:
        parent = os.path.dirname(os.path.abspath(self.path))
        if self.readonly:
            return self._open_readonly()
        if not os.path.isdir(parent):
            raise _err(f"cannot open store {self.path}: directory {parent} does not exist")
        if os.path.isdir(self.path):
            raise _err(f"cannot open store {self.path}: it is a directory")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise _err(f"cannot open store {self.path} for writing: {e.strerror}") from e
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise _err(f"cannot open store {self.path}: not a regular file")
        return fd

    def _open_readonly(self) -> int:
        if os.path.isdir(self.path):
            raise _err(f"cannot open store {self.path}: it is a directory")
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise missing_store(self.url) from None
        except OSError as e:
            raise _err(f"cannot open store {self.path} for reading: {e.strerror}") from e
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise _err(f"cannot open store {self.path}: not a regular file")
        return fd

    def _check_header(self) -> None:
        head = os.pread(self._fd, len(fr.HEADER), 0)
        if not head and os.fstat(self._fd).st_size == 0:  # new (or empty) file
            if self.readonly:
                raise _err(f"cannot read store {self.url}: it holds no ledger yet (an empty "
                           "file); a write command starts one there")
            try:
                self._write_at(fr.HEADER, 0)
                os.fsync(self._fd)
                fsync_dir(os.path.dirname(os.path.abspath(self.path)))
            except OSError as e:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, 0)  # leave an empty file, not half a header
                raise _err(f"cannot create store {self.path}: {e.strerror or e}") from e
            return
        if len(head) < len(fr.HEADER) or not head.startswith(fr.MAGIC):
            raise _err(f"cannot open store {self.path}: not a ckpt-ledger log (bad magic)")
        if head[-1] > fr.FORMAT_VERSION:
            raise _err(f"cannot open store {self.path}: log format version {head[-1]} is newer "
                       f"than this ckpt-ledger understands ({fr.FORMAT_VERSION})")

    def _writer(self) -> AbstractContextManager[None]:
        return fr.Flock(self._fd, self.path, self.lock_timeout)

    def _writable(self) -> None:
        if self.readonly:
            raise read_only(self.url)

    def _write_at(self, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, offset)
            view, offset = view[n:], offset + n

    # --- scanning -----------------------------------------------------------------------

    def _refresh(self, locked: bool, cut: bool = False) -> None:
        """Verify and index the frames past ``_end``; note an unfinished tail in ``_tail``
        and, when ``cut`` (a writer holding the writer lock), cut it (see ``_cut``)."""
        size = os.fstat(self._fd).st_size
        if size <= self._end:
            self._tail = None
            return
        # Under a lock of the log nobody can shrink the file (only a writer holding it
        # exclusively cuts), so a mapping is safe and spares memory on a big log; without
        # one, read a copy (as long as the file still is).
        damage = why = None
        with fr.mapping(self._fd, size, self._end, locked) as (view, base):
            size = base + len(view)
            try:
                why = self._scan(view, size, base)
            except LedgerError as e:  # raised once the mapping is closed (its traceback
                damage = e.detail  # holds slices of it)
        if damage is not None:
            raise _err(damage)
        self._tail = None if why is None else (self._end, size - self._end, why)
        if cut and self._tail is not None:
            self._cut()

    def _scan(self, buf: memoryview, size: int, base: int) -> str | None:
        """Index complete batches and transactions from ``_end``: None when every byte up to
        ``size`` is indexed, else why the rest is an unfinished append. Damage raises
        STORE_ERROR. ``buf`` holds the file's bytes from offset ``base`` up to ``size``."""
        off, pos = self._end, len(self._offsets) + 1
        pending: Pending = []  # read, not yet indexed
        head: list[Any] | None = None  # the first frame of the unfinished batch
        txn: tuple[int, int] | None = None  # the positions of the unfinished transaction
        whole: str | None = None  # the digest its first batch declared (None: none did)
        versions: dict[str, int] = {}
        while off < size:
            rel = off - base
            if size - off < 8:
                return self._torn(buf, base, size, pending, txn, whole,
                                  "a frame header cut short")
            length, crc = fr.FRAME.unpack_from(buf, rel)
            if length == 0 or length > size - off - 8:
                cause = self._incomplete(buf, base, size, off, pos, length, crc)
                return self._torn(buf, base, size, pending, txn, whole, cause)
            body = buf[rel + 8 : rel + 8 + length]
            if zlib.crc32(body) != crc:
                self._damaged(buf, base, size, off, pos, "crc32 mismatch", off + 8 + length)
            f = fr.decode(body)
            if f is None:
                self._damaged(buf, base, size, off, pos, "not a well-formed record",
                              off + 8 + length)
            v = versions.get(f[1], len(self._streams.get(f[1], ())))
            why: str | None = fr.out_of_place(f, pos, v, head)
            if why is None and head is None:  # f begins a batch
                mark = _txn_range(f)
                if txn is not None and (mark is None or mark[:2] != txn):
                    if mark is not None:  # no writer begins a transaction inside another
                        why = "inconsistent transaction"
                    else:
                        # A transaction cut short between two of its batches and yet
                        # followed by a plain batch: only a ckpt-ledger that knows no
                        # transactions (it indexes each batch alone) writes on after such
                        # a torn end, so its readers have seen these batches: keep them.
                        self._index_all(pending)
                        self._end, pending, txn, whole = off, [], None, None
                if why is None:
                    why = _txn_out_of_place(f, mark, txn)
                if why is None and mark is not None:
                    if txn is None:
                        txn, whole = mark[:2], mark[2]
                    elif mark[2] is not None:  # only a transaction's first batch has one
                        why = "inconsistent transaction"
            if why is not None:  # a whole record, out of place: records follow from here
                self._damaged(buf, base, size, off, pos, why, off)
            versions[f[1]] = f[3]
            pending.append((off, length, f))
            head = head or f
            pos, off = pos + 1, off + 8 + length
            if f[0] == f[8] + f[9] - 1:  # the batch is complete
                head = None
                if txn is None or f[0] == txn[1]:  # and so is its transaction, if any
                    self._index_all(pending)
                    self._end, pending, txn, whole = off, [], None, None
        if pending:
            return self._torn(buf, base, size, pending, txn, whole,
                              "an append whose last records never came")
        return None

    def _incomplete(self, buf: memoryview, base: int, size: int, off: int, pos: int,
                    length: int, crc: int) -> str:
        """Why the frame at ``off`` (length 0, or running past the end) is a torn write;
        STORE_ERROR when it is damage instead."""
        rel = off - base
        rest = buf[rel:]
        if length == 0:
            if rest.tobytes().count(0) == len(rest):
                return "zero bytes where a record should begin"
            self._damaged(buf, base, size, off, pos, "frame length 0", off + 8)
        tail = buf[rel + 8 :]
        if zlib.crc32(tail) == crc and fr.decode(tail) is not None:
            self._damaged(buf, base, size, off, pos, f"its length field says {length} bytes, "
                          f"yet the {len(tail)} bytes left are a whole record", size)
        if fr.valid_frame_from(buf, rel + 8, size - base):
            self._damaged(buf, base, size, off, pos, f"frame length {length} runs past the "
                          "records after it", off + 8)
        return "a frame cut short at the end of the file"

    def _torn(self, buf: memoryview, base: int, size: int, pending: Pending,
              txn: tuple[int, int] | None, whole: str | None, why: str) -> str:
        """``why``, when the unfinished unit ``pending`` (and anything after it) can be a
        torn write; STORE_ERROR when its records match the digest it declared (complete,
        its fields edited) or it declares none."""
        if not pending:
            return why
        off, _, first = pending[0]
        declared = whole if txn is not None else first[11]
        if txn is None and not isinstance(declared, str):
            self._damaged(buf, base, size, off, first[0], "an unfinished batch that carries no "
                          "digest, so a torn write cannot be told from an edit", size)
        records = [NewRecord(f[1], f[2], f[4], f[5], f[6], f[7]) for _, _, f in pending]
        if declared is not None and declared == digest(records):
            unit = "transaction" if txn is not None else "batch"
            self._damaged(buf, base, size, off, first[0], f"the {unit} holds every record its "
                          "digest names, yet claims more (an edited batch size or transaction "
                          "marker, not a torn write)", size)
        return why

    def _damaged(self, buf: memoryview, base: int, size: int, off: int, pos: int, why: str,
                 after: int) -> NoReturn:
        """Raise the STORE_ERROR for damage at ``off`` (position ``pos``); ``after`` is where
        the next whole record would begin (``off`` itself for a whole record out of place)."""
        later = after < size and (fr.valid_frame_at(buf, after - base, size - base)
                                  or fr.valid_frame_from(buf, off - base + 1, size - base))
        where = ("later records follow it" if later else
                 "a complete record that fails its checks is not an interrupted write")
        raise _err(f"store {self.path} is damaged: record at position {pos} (offset {off}): "
                   f"{why}; {where}; nothing was changed")

    def _cut(self) -> None:
        """Cut the torn tail, its bytes first appended to ``<log>.torn`` (writer lock held)."""
        assert self._tail is not None
        off, n, why = self._tail
        data = os.pread(self._fd, n, off)
        try:
            fd = os.open(self.torn_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                         0o644)
            try:
                view = memoryview(_TORN_MAGIC + struct.pack(">QQ", off, len(data)) + data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_dir(os.path.dirname(os.path.abspath(self.torn_path)))
            os.ftruncate(self._fd, off)
            os.fsync(self._fd)
        except OSError as e:
            raise _err(f"cannot cut the interrupted append at offset {off} of store "
                       f"{self.path}: {e.strerror or e}") from e
        self._tail = None
        msg = (f"{self.path}: cut a torn append at offset {off} ({n} bytes) left by an "
               f"interrupted write ({why}); its bytes are kept in {self.torn_path}")
        warnings.warn(msg, TornTailWarning, stacklevel=4)
        log.warning(msg)

    def _index_all(self, frames: list[tuple[int, int, list[Any]]]) -> None:
        for off, length, f in frames:
            self._index(off, length, f)

    def _index(self, off: int, length: int, f: list[Any]) -> None:
        if len(f) > fr.LEGACY_FIELDS:
            self._last_hash = f[12]
        else:
            row = StoredRecord(f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], "")
            self._last_hash = record_hash(row, self._last_hash)
            self._legacy[f[0]] = self._last_hash
        self._offsets.append(off)
        self._lengths.append(length)
        self._streams.setdefault(f[1], []).append(f[0])
        if f[10] is not None:
            self._idempotency[f[10]] = (f[11], f[0], f[0] + f[9] - 1)

    def _record(self, position: int) -> StoredRecord:
        off, length = self._offsets[position - 1], self._lengths[position - 1]
        f = msgpack.unpackb(os.pread(self._fd, length, off + 8), raw=False)
        h = f[12] if len(f) > fr.LEGACY_FIELDS else self._legacy[position]
        return StoredRecord(f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], h)

    # --- the EventStore API ---------------------------------------------------------------

    def append(
        self,
        records: Sequence[NewRecord],
        expected_version: ExpectedVersion = ANY,
        idempotency_key: str | None = None,
    ) -> list[StoredRecord]:
        """Append records of one stream under the writer lock; fsync before returning."""
        stream_id = check_batch(records)
        if stream_id is None:
            return []
        self._writable()
        with self._mutex, self._writer():
            self._refresh(locked=True, cut=True)
            if idempotency_key is not None and idempotency_key in self._idempotency:
                dig, first, last = self._idempotency[idempotency_key]
                if dig != digest(records):
                    raise idempotency_mismatch(idempotency_key)
                return [self._record(p) for p in range(first, last + 1)]
            [new] = self._commit([(stream_id, records, expected_version)], idempotency_key)
            return new

    def append_many(
        self, batches: Sequence[tuple[Sequence[NewRecord], ExpectedVersion]]
    ) -> list[list[StoredRecord]]:
        """Append several one-stream batches as one transaction (one write, one fsync, under
        the writer lock): a reader indexes none of it until all of it is there."""
        checked = check_batches(batches)
        if all(b is None for b in checked):
            return [[] for _ in checked]
        self._writable()
        with self._mutex, self._writer():
            self._refresh(locked=True, cut=True)
            return self._commit(checked, None)

    def _commit(
        self, batches: Sequence[Batch | None], key: str | None
    ) -> list[list[StoredRecord]]:
        """Plan ``batches`` (checking every expected version), encode all their frames, then
        write them at once and fsync; on a failed write, truncate back. Hold the writer lock.

        Several non-empty batches make a transaction: the first frame of each carries, in
        place of the digest, the marker of the transaction's position range, the first
        batch's with the digest of all its records (see the module docstring); one batch is
        written as ``append`` writes it (``key`` on its first frame).
        """
        current = {b[0]: len(self._streams.get(b[0], ())) for b in batches if b is not None}
        out = plan(batches, current, len(self._offsets) + 1, self._last_hash)
        written = [(b, new) for b, new in zip(batches, out, strict=True) if b is not None]
        marker = first_marker = None
        if len(written) > 1:
            marker = _txn_marker(written[0][1][0].position, written[-1][1][-1].position)
            first_marker = f"{marker} {digest([r for (_, rs, _), _ in written for r in rs])}"
        frames = []
        for n, ((_, records, _), new) in enumerate(written):
            for i, r in enumerate(new):
                tag, sig = (None, None)
                if i == 0 and marker:
                    sig = first_marker if n == 0 else marker
                elif i == 0:
                    tag, sig = key, digest(records)
                frames.append(fr.encode(
                    [r.position, r.stream_id, r.stream_name, r.stream_version, r.type,
                     r.schema_version, r.recorded_at, r.payload, new[0].position, len(new),
                     tag, sig, r.hash]))
        try:
            self._write_at(b"".join(frames), self._end)
            os.fsync(self._fd)
        except OSError as e:
            try:
                os.ftruncate(self._fd, self._end)
                os.fsync(self._fd)
            except OSError:
                pass  # the next open truncates the torn end
            raise _err(f"cannot append to store {self.path}: {e.strerror or e}") from e
        self._refresh(locked=True)
        return out

    def read_all(self, after: int = 0, limit: int | None = None) -> Iterator[StoredRecord]:
        """Records with position > ``after``, oldest first, read in pages of 256."""
        pos = max(after, 0) + 1
        left = limit
        while left is None or left > 0:
            with self._mutex:
                self._refresh_unlocked()
                stop = min(len(self._offsets), pos - 1 + (256 if left is None else min(256, left)))
                page = [self._record(p) for p in range(pos, stop + 1)]
            yield from page
            if not page:
                return
            pos += len(page)
            left = None if left is None else left - len(page)

    def scan(self, after: int = 0) -> Iterator[list[ScanRow]]:
        """Every record after ``after`` as lean rows, in pages (see EventStore.scan)."""
        return scan_pages(self.read_all(after))

    def read_stream(self, stream_id: str, after_version: int = 0) -> Iterator[StoredRecord]:
        """Records of one stream with version > ``after_version``, oldest first."""
        with self._mutex:
            self._refresh_unlocked()
            positions = self._streams.get(stream_id, [])[max(after_version, 0) :]
        for i in range(0, len(positions), 256):
            with self._mutex:
                page = [self._record(p) for p in positions[i : i + 256]]
            yield from page

    def stream_version(self, stream_id: str) -> int:
        """The stream's current version (0 when it has no events)."""
        with self._mutex:
            self._refresh_unlocked()
            return len(self._streams.get(stream_id, ()))

    def last_position(self) -> int:
        """The highest position (0 when empty)."""
        with self._mutex:
            self._refresh_unlocked()
            return len(self._offsets)

    def _refresh_unlocked(self) -> None:
        if self._fd < 0:
            raise _err(f"store {self.url} is closed")
        self._refresh(locked=False)

    def lock(self, stream_id: str) -> AbstractContextManager[None]:
        """An exclusive flock on ``<log path>.lock``: one lock for every stream of the log,
        waited for at most ``lock_timeout`` seconds (ledger/log/locks.py)."""
        self._writable()
        return file_lock(self.lock_path, self.lock_timeout)

    def lock_all(self, stream_ids: Sequence[str]) -> AbstractContextManager[None]:
        """The one file lock, which covers every stream."""
        self._writable()
        return file_lock(self.lock_path, self.lock_timeout)

    def _side_path(self, key: str) -> str:
        """The file of a small per-domain key (an intent): one file each, so savers of
        different keys never overwrite each other and the snapshot is never rewritten."""
        return os.path.join(self.path + ".intents", hashlib.sha256(key.encode()).hexdigest())

    def save_snapshot(self, key: str, position: int, data: bytes) -> None:
        """Replace ``key``'s entry in ``<log>.snapshot`` (written to a temporary file,
        fsynced, renamed over it); concurrent savers: the last rename wins. Intent keys
        (``intent:...``) have a file each in ``<log>.intents/``; empty data removes it."""
        self._writable()
        if key.startswith(INTENT_PREFIX):
            side = self._side_path(key)
            try:
                if not data:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(side)
                    with contextlib.suppress(OSError):  # not empty: another domain's is open
                        os.rmdir(os.path.dirname(side))
                    return
                os.makedirs(os.path.dirname(side), exist_ok=True)
                with replacing(side, durable=False) as f:  # see ledger/log/intents.py
                    f.write(msgpack.packb([int(position), bytes(data)], use_bin_type=True))
            except OSError as e:
                raise _err(f"cannot write {side}: {e.strerror or e}") from e
            return
        with self._mutex:
            snaps = self._read_snapshots()
            snaps[key] = [int(position), bytes(data)]
            body = msgpack.packb(snaps, use_bin_type=True)
            blob = _SNAP_MAGIC + zlib.crc32(body).to_bytes(4, "big") + body
            try:
                with replacing(self.snapshot_path) as f:
                    f.write(blob)
            except OSError as e:
                raise _err(f"cannot write snapshot {self.snapshot_path}: "
                           f"{e.strerror or e}") from e

    def load_snapshot(self, key: str) -> tuple[int, bytes] | None:
        """``key``'s ``(position, data)`` from ``<log>.snapshot``; None when absent or
        damaged (a snapshot is only a cache)."""
        if key.startswith(INTENT_PREFIX):
            try:
                with open(self._side_path(key), "rb") as f:
                    position, data = msgpack.unpackb(f.read(1 << 20), raw=False)
                return int(position), bytes(data)
            except FileNotFoundError:
                return None
            except (OSError, ValueError, TypeError, msgpack.UnpackException):
                return None  # damaged: the host's state settles the domain anyway
        with self._mutex:
            entry = self._read_snapshots().get(key)
        if entry is None:
            return None
        return int(entry[0]), bytes(entry[1])

    def _read_snapshots(self) -> dict[str, list[Any]]:
        try:
            with open(self.snapshot_path, "rb") as f:
                blob = f.read()
        except OSError:
            return {}
        body = blob[len(_SNAP_MAGIC) + 4 :]
        if (not blob.startswith(_SNAP_MAGIC)
                or blob[len(_SNAP_MAGIC) : len(_SNAP_MAGIC) + 4]
                != zlib.crc32(body).to_bytes(4, "big")):
            return {}
        try:
            snaps = msgpack.unpackb(body, raw=False)
        except Exception:
            return {}
        if not isinstance(snaps, dict):
            return {}
        return {k: v for k, v in snaps.items() if isinstance(k, str) and isinstance(v, list)
                and len(v) == 2 and isinstance(v[0], int) and isinstance(v[1], bytes)}

    def torn_tail(self) -> str | None:
        """What lies past the last complete append, when anything does: an interrupted
        append (or one still being written), not counted, which the next write cuts."""
        with self._mutex:
            self._refresh_unlocked()
            if self._tail is None:
                return None
            off, n, why = self._tail
        return (f"an unfinished append of {n} bytes at offset {off} ({why}) is not counted; "
                f"the next write removes it (keeping its bytes in {self.torn_path})")

    def gone(self) -> str | None:
        """Why the file this handle reads is no longer the store at its path (deleted, or
        replaced by another file), or None while it still is."""
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return f"{self.path} was deleted"
        except OSError as e:
            return f"{self.path} cannot be reached: {e.strerror}"
        with self._mutex:
            if self._fd < 0:
                return f"store {self.url} is closed"
            mine = os.fstat(self._fd)
        if (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino):
            return f"{self.path} was replaced by another file"
        return None

    def close(self) -> None:
        """Close the file."""
        with self._mutex:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> MsgpackLogStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_TXN = "txn "  # the digest field of a transaction's batches: "txn <first>-<last>[ <digest>]"
_TXN_RANGE = re.compile(r"txn ([1-9][0-9]*)-([1-9][0-9]*)(?: ([0-9a-f]{64}))?")


def _txn_marker(first: int, last: int) -> str:
    """The marker of a transaction spanning positions ``first`` to ``last``."""
    return f"{_TXN}{first}-{last}"


def _txn_range(f: list[Any]) -> tuple[int, int, str | None] | None:
    """The positions of the transaction whose batch ``f`` begins, and the digest of all its
    records when ``f`` declares it (None: a batch alone).

    A malformed marker reads as ``(0, 0, None)``, which :func:`_txn_out_of_place` refuses.
    """
    sig = f[11]
    if f[10] is not None or not isinstance(sig, str) or not sig.startswith(_TXN):
        return None
    m = _TXN_RANGE.fullmatch(sig)
    if m is None:
        return (0, 0, None)
    return int(m[1]), int(m[2]), m[3]


def _txn_out_of_place(
    f: list[Any], mark: tuple[int, int, str | None] | None, txn: tuple[int, int] | None
) -> str | None:
    """Why batch ``f`` (marked ``mark``) cannot begin here, ``txn`` being the unfinished
    transaction (None when none is): None when it can."""
    if mark is None:
        return None
    first, last, _ = mark
    if (txn is None and first != f[0]) or first >= last or f[8] + f[9] - 1 > last:
        return "inconsistent transaction"
    return None


def open_url(url: str, readonly: bool = False) -> MsgpackLogStore:
    """Open ``msgpack:///rel.log`` or ``msgpack:////abs/ledger.log`` (``readonly``: only
    to read it; see the module docstring)."""
    if scheme_of(url) != "msgpack":
        raise LedgerError("STORE_URL", f"'{url}' is not a msgpack:/// URL")
    return MsgpackLogStore(path_of(url), url, readonly)
