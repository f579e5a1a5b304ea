"""The mock hypervisor's state file: an append-only journal of its operations.

Format (version 3): lines of ``CRC JSON`` (the crc32 of the JSON text as 8 hex digits, a
space, the JSON, a newline). The first line is the header
``{"format":"ckpt-ledger mock host","version":3}``; every later line is one operation,
``{"n":N,"op":...}`` with N = 1, 2, 3 ... (what the operations are and how they fold is the
caller's: adapters/mock.py).

Why a journal: an operation appends one line and fsyncs it, so it costs O(1) in the number
of checkpoints on the host, where rewriting a whole state file costs O(n). Each process
keeps, per file, the state it has folded with the file's identity, the offset it folded up
to and the last line it folded (re-read each time, with the header, to prove the file is
still the one it folded): a new process folds the whole journal once, a long-lived one
only the lines appended since it last looked (the lines it has folded are not checked
again: damage to them is found by the next process that folds the file afresh).

Several processes: every operation holds ``flock`` on ``<path>.lock`` (shared to read,
exclusive to write) while it folds the new lines, decides and appends; a read writes
nothing. Crashes: an operation is one line, written at the end the writer verified and
fsynced before the call returns, so it is there whole or it is a torn tail. A torn tail
(lines that fail their CRC with no valid line after them: an interrupted write) is
ignored by reads and cut by the next write; a failing line followed by a valid one, or a
valid line out of sequence, is damage: STATE_ERROR, and the file is left alone. A new
file is created whole with its header (a temporary file linked into place, which never
replaces a file), so a file that does not begin with the header is not the mock's:
STATE_ERROR, never written. A refused operation appends nothing.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ledger.domain.errors import LedgerError
from ledger.log.files import fsync_dir

FORMAT = "ckpt-ledger mock host"
VERSION = 3
MAX_SIZE = 256 * 1024 * 1024
CACHED_FILES = 64  # the folded states a process keeps (least recently used dropped)

S = TypeVar("S")
_HEX = frozenset(b"0123456789abcdef")
log = logging.getLogger(__name__)


def state_error(path: str, why: str) -> LedgerError:
    """The one error of an unusable state file."""
    return LedgerError("STATE_ERROR", f"mock state file {path} is unusable: {why}")


def encode(obj: dict[str, Any]) -> bytes:
    """One journal line."""
    body = json.dumps(obj, separators=(",", ":")).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def decode(line: bytes) -> dict[str, Any] | None:
    """The object of one line (without its newline), or None if it fails its check."""
    if len(line) < 11 or line[8:9] != b" " or not _HEX.issuperset(line[:8]):
        return None
    body = line[9:]
    if int(line[:8], 16) != zlib.crc32(body):
        return None
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


HEADER = encode({"format": FORMAT, "version": VERSION})


@dataclass
class _Folded(Generic[S]):
    """What a process has folded of one file."""

    ident: tuple[int, int]  # (st_dev, st_ino)
    end: int  # the offset just past the last line folded
    seq: int  # its operation number (0: the header)
    last_start: int
    last: bytes  # the last line folded, newline included
    state: S


class Transaction(Generic[S]):
    """One operation: the folded ``state`` to decide on and the record to append, if any."""

    def __init__(self, state: S) -> None:
        self.state = state
        self.record: dict[str, Any] | None = None

    def append(self, record: dict[str, Any]) -> None:
        """Append ``record`` (one operation, without ``n``) when the operation succeeds."""
        assert self.record is None, "one line per operation"
        self.record = record


_FOLDED: dict[str, _Folded[Any]] = {}
_THREADS = threading.Lock()  # flock excludes processes; this, the threads of this one


class Journal(Generic[S]):
    """The journal at ``path``; ``fold(state, record)`` applies one operation to a state
    made by ``new_state()`` (any exception it raises means the line is not an operation)."""

    def __init__(self, path: str, new_state: Callable[[], S],
                 fold: Callable[[S, dict[str, Any]], None]) -> None:
        self.path = path
        self.new_state = new_state
        self.fold = fold

    def _error(self, why: str) -> LedgerError:
        return state_error(self.path, why)

    # ----------------------------------------------------------------- operations
    @contextmanager
    def reading(self) -> Iterator[S]:
        """The state as of the last complete operation; nothing is written."""
        with self._locked(fcntl.LOCK_SH) as (fd, folded):
            yield folded.state if folded is not None else self.new_state()

    @contextmanager
    def writing(self) -> Iterator[Transaction[S]]:
        """An operation: decide on ``tx.state``, ``tx.append(record)``; the record is
        appended (and folded) when the block ends without an exception."""
        with self._locked(fcntl.LOCK_EX) as (fd, folded):
            tx: Transaction[S] = Transaction(
                folded.state if folded is not None else self.new_state())
            yield tx
            if tx.record is not None:
                self._append(fd, folded, tx.record)

    # ---------------------------------------------------------------------- locking
    @contextmanager
    def _locked(self, how: int) -> Iterator[tuple[int | None, _Folded[S] | None]]:
        try:
            lock = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise self._error(err.strerror or str(err)) from None
        try:
            with _THREADS:
                try:
                    fcntl.flock(lock, how)
                    fd = os.open(self.path, os.O_RDONLY)
                except FileNotFoundError:
                    _FOLDED.pop(self.path, None)
                    yield None, None
                    return
                except OSError as err:
                    raise self._error(err.strerror or str(err)) from None
                try:
                    try:
                        folded = self._refresh(fd)
                    except OSError as err:
                        raise self._error(f"cannot read it: {err.strerror or err}") from None
                    yield fd, folded
                finally:
                    os.close(fd)
        finally:
            os.close(lock)  # releases the flock

    # ---------------------------------------------------------------------- reading
    def _refresh(self, fd: int) -> _Folded[S]:
        """The folded state of the open file, brought up to its last complete line."""
        st = os.fstat(fd)
        if st.st_size > MAX_SIZE:
            raise self._error("larger than 256 MiB")
        ident = (st.st_dev, st.st_ino)
        folded = _FOLDED.pop(self.path, None)  # back in only if all goes well
        if folded is None or not self._still(fd, folded, ident, st.st_size):
            folded = self._begin(fd, ident, st.st_size)
        if st.st_size > folded.end:
            self._fold_from(fd, folded, st.st_size)
        _FOLDED[self.path] = folded
        if len(_FOLDED) > CACHED_FILES:
            del _FOLDED[next(iter(_FOLDED))]
        return folded

    @staticmethod
    def _still(fd: int, folded: _Folded[S], ident: tuple[int, int], size: int) -> bool:
        """Is this the file ``folded`` was folded from (and has it kept what was folded)?"""
        return (folded.ident == ident and size >= folded.end
                and os.pread(fd, len(folded.last), folded.last_start) == folded.last
                and os.pread(fd, len(HEADER), 0) == HEADER)

    def _begin(self, fd: int, ident: tuple[int, int], size: int) -> _Folded[S]:
        """A fresh fold: the header checked, nothing else folded yet."""
        head = os.pread(fd, len(HEADER), 0)
        if head != HEADER:
            raise self._error(self._not_a_journal(fd, size))
        return _Folded(ident, len(HEADER), 0, 0, HEADER, self.new_state())

    def _not_a_journal(self, fd: int, size: int) -> str:
        """Why a file without the header is not the mock's journal (for the message)."""
        if size == 0:
            return "it is empty (not a mock hypervisor state)"
        data = os.pread(fd, min(size, 1 << 20), 0)
        first = decode(data.split(b"\n", 1)[0])
        if first is not None and first.get("format") == FORMAT:
            return f"unknown state version {first.get('version')!r}"
        try:
            doc = json.loads(data)
        except ValueError:
            old = re.match(rb'\{"version":(-?\d{1,9}),"domains":\{', data)  # a big one
            doc = {"version": int(old.group(1)), "domains": {}} if old else None
        if isinstance(doc, dict) and isinstance(doc.get("domains"), dict):
            return (f"it is a state of version {doc.get('version')!r} (one JSON document), "
                    f"which this ckpt-ledger does not read: it keeps a journal (version "
                    f"{VERSION}); define the domains in a new state file")
        return "not a mock hypervisor state (no journal header)"

    def _fold_from(self, fd: int, folded: _Folded[S], size: int) -> None:
        """Fold the complete lines past ``folded.end``; stop at a torn tail."""
        start = folded.end
        data = os.pread(fd, size - start, start)
        pos = 0
        while pos < len(data):
            nl = data.find(b"\n", pos)
            if nl < 0:
                return  # an unterminated last line: a torn tail
            rec = decode(data[pos:nl])
            where = f"line {folded.seq + 2} (offset {start + pos})"
            if rec is None:
                if _valid_line_in(data, nl + 1):
                    raise self._error(f"{where} is damaged; valid lines follow it")
                return  # a torn tail
            if rec.get("n") != folded.seq + 1:
                raise self._error(f"{where} is operation {rec.get('n')!r}, expected "
                                  f"{folded.seq + 1}")
            try:
                self.fold(folded.state, rec)
            except LedgerError as err:
                raise self._error(f"{where} is not a valid operation ({err.one_line()})"
                                  ) from None
            except Exception as err:
                raise self._error(f"{where} is not a valid operation ({type(err).__name__}: "
                                  f"{' '.join(str(err).split())[:200]})") from None
            folded.seq += 1
            folded.last_start, folded.last = start + pos, data[pos:nl + 1]
            folded.end = start + nl + 1
            pos = nl + 1

    # ---------------------------------------------------------------------- writing
    def _append(self, fd: int | None, folded: _Folded[S] | None,
                record: dict[str, Any]) -> None:
        """Append one operation (cutting a torn tail first), fsync it, fold it."""
        if fd is None or folded is None:
            folded = self._create()
        line = encode({"n": folded.seq + 1, **record})
        if folded.end + len(line) > MAX_SIZE:
            raise self._error("the journal would grow past 256 MiB")
        try:
            wfd = os.open(self.path, os.O_WRONLY)
        except OSError as err:
            raise self._error(err.strerror or str(err)) from None
        try:
            st = os.fstat(wfd)
            if (st.st_dev, st.st_ino) != folded.ident:
                raise self._error("it was replaced while locked")
            if st.st_size > folded.end:
                log.warning("%s: cutting a torn last line at offset %d (%d bytes) left by "
                            "an interrupted write", self.path, folded.end,
                            st.st_size - folded.end)
                os.ftruncate(wfd, folded.end)
            _write_at(wfd, line, folded.end)
            os.fsync(wfd)
        except OSError as err:
            try:
                os.ftruncate(wfd, folded.end)
                os.fsync(wfd)
            except OSError:
                pass  # what is left is a torn tail, cut by the next write
            raise self._error(f"cannot append to it: {err.strerror or err}") from None
        finally:
            os.close(wfd)
        rec = decode(line[:-1])
        try:
            assert rec is not None
            self.fold(folded.state, rec)
        except BaseException:
            _FOLDED.pop(self.path, None)  # the next operation folds the file afresh
            raise
        folded.seq += 1
        folded.last_start, folded.last = folded.end, line
        folded.end += len(line)
        _FOLDED[self.path] = folded

    def _create(self) -> _Folded[S]:
        """Make the file, whole, holding the header; never replace one that exists."""
        folder = os.path.dirname(self.path)
        try:
            tfd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(self.path)}.",
                                        suffix=".tmp", dir=folder)
        except OSError as err:
            raise self._error(err.strerror or str(err)) from None
        try:
            try:
                _write_at(tfd, HEADER, 0)
                os.fsync(tfd)
                os.fchmod(tfd, 0o644)
                os.link(tmp, self.path)
                st = os.fstat(tfd)
            finally:
                os.close(tfd)
                os.unlink(tmp)
            fsync_dir(folder)
        except FileExistsError:
            raise self._error("it appeared while locked (written without the lock)") from None
        except OSError as err:
            raise self._error(f"cannot create it: {err.strerror or err}") from None
        return _Folded((st.st_dev, st.st_ino), len(HEADER), 0, 0, HEADER, self.new_state())


def _valid_line_in(data: bytes, pos: int) -> bool:
    """Does a complete line that passes its check start at or after ``pos``?"""
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl < 0:
            return False
        if decode(data[pos:nl]) is not None:
            return True
        pos = nl + 1
    return False


def _write_at(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
