"""Reading a SQLite ledger without writing a byte or creating a file (read-only handles).

A ``mode=ro`` connection to a WAL database creates its ``-wal`` and ``-shm`` files when they
are absent, and leaves them behind (and fails on a full disk, where it cannot create them).
So the connection depends on what is there when a read begins:

* a ``-wal`` that holds frames, or one with its ``-shm`` (a writer has the store open, or
  died with commits still in the WAL): one ``mode=ro`` connection, kept, reading through
  the WAL as SQLite readers do (it creates nothing, as both files exist; like any reader it
  keeps the last writer from removing them on close: the next writer does);
* otherwise the file holds every commit: each read runs on a fresh ``immutable=1``
  connection (no locks, no sidecar files). Such a connection ignores writers, so the read
  is thrown away and run again (through the WAL, as above, once there is one) when a writer
  appeared meanwhile (a ``-wal`` exists after it) or the file's identity, size or times
  changed (a writer came, wrote and checkpointed into the file). A writer that comes and
  goes within one tick of the file system's clock while a read runs could still pass
  unseen; a ``mode=ro`` connection would leave files behind and cannot open on a full disk.

A connection opened at the start keeps the file itself open, so that a file deleted or
replaced at the store's path is never mistaken for it (its inode cannot be reused while
held): every read checks that the path still names that file, and refuses otherwise.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from typing import Any

from ._sqlite_inspect import BUSY_TIMEOUT_MS, RETRIES, err, quote


class ReadOnlyDatabase:
    """Queries on the SQLite file at ``path`` that never write to it (see the module)."""

    def __init__(self, path: str, url: str) -> None:
        self.path = path
        self.url = url
        self._uri = "file:" + quote(os.path.abspath(path))
        self._ro: sqlite3.Connection | None = None
        self._pin = self._connect(immutable=True)  # holds the file open; never queried
        try:
            self._identity = self._stat()[:2]
        except BaseException:
            self._pin.close()
            raise

    def _connect(self, immutable: bool) -> sqlite3.Connection:
        mode = "mode=ro&immutable=1" if immutable else "mode=ro"
        try:
            return sqlite3.connect(f"{self._uri}?{mode}", uri=True, isolation_level=None,
                                   timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
        except sqlite3.Error as e:
            raise err(f"cannot open store {self.path}: {e}") from e

    def _stat(self) -> tuple[int, int, int, int, int]:
        """The file's (device, inode, size, mtime, ctime); STORE_ERROR when the path no
        longer names the file this handle opened. (The file is not opened: closing a
        descriptor would drop the locks SQLite holds on it in this process.)"""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise err(f"cannot read store {self.url}: {self.path} was deleted") from None
        except OSError as e:
            raise err(f"cannot read store {self.url}: {e.strerror}") from e
        now = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if hasattr(self, "_identity") and now[:2] != self._identity:
            raise err(f"cannot read store {self.url}: {self.path} was replaced by another file")
        return now

    def gone(self) -> str | None:
        """Why the path no longer names the file this handle opened, or None."""
        try:
            self._stat()
        except Exception as e:
            return str(e)
        return None

    def _through_wal(self) -> bool:
        try:
            wal = os.path.getsize(self.path + "-wal")
        except OSError:
            return False
        return wal > 0 or os.path.exists(self.path + "-shm")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """All rows of one statement, read as the module docstring says."""
        for _ in range(RETRIES):
            if self._ro is None and self._through_wal():
                self._stat()  # the path still names this store's file
                self._ro = self._connect(immutable=False)
            if self._ro is not None:
                self._stat()
                try:
                    return list(self._ro.execute(sql, params).fetchall())
                except sqlite3.Error as e:
                    raise err(f"cannot read store {self.path}: {e}") from e
            before = self._stat()
            conn = self._connect(immutable=True)
            try:
                rows: list[tuple[Any, ...]] | None = list(conn.execute(sql, params).fetchall())
                failure = None
            except sqlite3.Error as e:
                rows, failure = None, e
            finally:
                conn.close()
            if self._stat() != before or self._through_wal():
                continue  # a writer came while it was read: read it again
            if failure is not None:
                raise err(f"cannot read store {self.path}: {failure}") from failure
            assert rows is not None
            return rows
        raise err(f"cannot read store {self.path}: it kept changing while being read")

    def query_as_bytes(self, sql: str, params: Sequence[Any], text: type[bytes]
                       ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """The column names and rows of one statement with text read as ``text`` (a bytes
        type: to find a row whose text is not UTF-8)."""
        conn = self._ro if self._ro is not None else self._connect(immutable=True)
        try:
            conn.text_factory = text
            cur = conn.execute(sql, params)
            return [d[0] for d in cur.description], list(cur.fetchall())
        finally:
            conn.text_factory = str
            if conn is not self._ro:
                conn.close()

    def close(self) -> None:
        """Close every connection."""
        if self._ro is not None:
            self._ro.close()
            self._ro = None
        self._pin.close()
