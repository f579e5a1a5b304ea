"""Look at a would-be SQLite store without changing a byte of it.

:func:`inspect` runs before :class:`backends.sqlite.SqliteStore` opens a read-write
connection: it checks the path, the 100-byte SQLite header and (through a read-only,
``immutable`` connection when no WAL is pending) the application id, tables and schema
version, so a file that is not a usable ledger is refused with STORE_ERROR untouched.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from contextlib import closing

from ledger.domain.errors import LedgerError

from ._common import one_line

APPLICATION_ID = 0x636B706C  # "ckpl", in PRAGMA application_id
BUSY_TIMEOUT_MS = 30_000
RETRIES = 20  # immutable reads thrown away in a row (writers checkpointing) before giving up
_HEADER = b"SQLite format 3\x00"


def err(detail: str) -> LedgerError:
    """A one-line STORE_ERROR."""
    return LedgerError("STORE_ERROR", one_line(detail))


def inspect(path: str, schema_version: int, readonly: bool = False) -> int | None:
    """Refuse ``path`` unless it is absent, empty, or a ledger this code understands; its
    schema version (None when absent or empty; 0 for an empty SQLite database).

    ``readonly``: the file need not be writable (it will only be read)."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise err(f"cannot open store {path}: directory {parent} does not exist")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise err(f"cannot open store {path}: {e.strerror}") from e
    if stat.S_ISDIR(st.st_mode):
        raise err(f"cannot open store {path}: it is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise err(f"cannot open store {path}: not a regular file")
    try:
        with open(path, "rb") as f:
            header = f.read(100)
    except OSError as e:
        raise err(f"cannot read store {path}: {e.strerror}") from e
    if not readonly:
        try:
            os.close(os.open(path, os.O_RDWR))  # opening for writing changes nothing
        except OSError as e:
            raise err(f"cannot write store {path}: {e.strerror}") from e
    if not header:
        return None  # an empty file is an empty SQLite database
    if len(header) < 100 or not header.startswith(_HEADER):
        raise err(f"cannot open store {path}: file is not a database")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # With a non-empty -wal beside it, the main file may lag its header until recovery.
    valid = header[24:28] == header[92:96] and not _nonempty(path + "-wal")
    try:  # sized after the header was read: a writer's checkpoint may have grown it meanwhile
        size = os.stat(path).st_size
    except OSError as e:
        raise err(f"cannot read store {path}: {e.strerror}") from e
    if page_size < 512 or size % page_size or (valid and size < pages * page_size):
        raise err(f"cannot open store {path}: file is truncated or damaged ({size} bytes)")
    tables, app_id, version = _identity_of(path)
    check_identity(path, tables, app_id, version, schema_version)
    return int(version)


def _identity_of(path: str) -> tuple[set[str], int, int]:
    """The tables, application id and user version of the database at ``path``.

    immutable=1 reads without creating -wal/-shm sidecars; it would ignore a WAL that still
    holds commits, so a non-empty -wal is read through a plain read-only connection. An
    immutable read also ignores a writer that comes meanwhile and checkpoints into the file
    (it may then see a torn mix of pages): when the file changed or a WAL appeared while it
    ran, it is read again."""
    uri = "file:" + quote(os.path.abspath(path)) + "?"
    for _ in range(RETRIES):
        immutable = not _nonempty(path + "-wal")
        before = _file_state(path)
        try:
            with closing(sqlite3.connect(uri + ("mode=ro&immutable=1" if immutable else "mode=ro"),
                                         uri=True, timeout=BUSY_TIMEOUT_MS / 1000)) as ro:
                tables = {r[0] for r in
                          ro.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                app_id = ro.execute("PRAGMA application_id").fetchone()[0]
                version = ro.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as e:
            if immutable and (_file_state(path) != before or _nonempty(path + "-wal")):
                continue  # a writer came while it was read: read it again
            raise err(f"cannot open store {path}: {e}") from e
        return tables, app_id, version
    raise err(f"cannot open store {path}: it kept changing while being read")


def _file_state(path: str) -> tuple[int, int, int]:
    try:
        st = os.stat(path)
    except OSError as e:
        raise err(f"cannot read store {path}: {e.strerror}") from e
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def check_identity(
    path: str, tables: set[str], app_id: int, version: int, schema_version: int
) -> None:
    """Refuse a database that is not a ledger, or one newer than ``schema_version``."""
    if not tables and app_id == 0 and version == 0:
        return  # an empty SQLite database: becomes a new store
    if app_id != APPLICATION_ID or "events" not in tables:
        raise err(f"cannot open store {path}: a SQLite database but not a ckpt-ledger store")
    if version > schema_version:
        raise err(
            f"cannot open store {path}: written by a newer ckpt-ledger (store schema version "
            f"{version}; this version understands up to {schema_version})"
        )


def _nonempty(path: str) -> bool:
    try:
        return os.path.getsize(path) > 0
    except OSError:
        return False


def quote(path: str) -> str:
    """``path`` escaped for a ``file:`` URI."""
    return path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")
