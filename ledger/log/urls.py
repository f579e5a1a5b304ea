"""Store and hypervisor URLs: their scheme and the file path of a file URL."""

from __future__ import annotations

import os
import re

from ledger.domain.errors import LedgerError

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def scheme_of(url: str) -> str | None:
    """The URL's scheme, or None for a bare path."""
    m = _SCHEME.match(url)
    return m.group(1).lower() if m else None


def path_of(url: str) -> str:
    """The file path of ``scheme:///rel`` or ``scheme:////abs`` (SQLAlchemy's convention)."""
    m = _SCHEME.match(url)
    if not m:
        return url
    rest = url[m.end():]
    if rest.startswith("/"):
        rest = rest[1:]  # "sqlite:///rel.db" -> "rel.db"; "sqlite:////abs" -> "/abs"
    elif rest:
        raise LedgerError(
            "STORE_URL",
            f"'{url}' has a host part; a file URL is {m.group(1)}:///relative/path or "
            f"{m.group(1)}:////absolute/path",
        )
    if not rest:
        raise LedgerError("STORE_URL", f"'{url}' names no file")
    return os.path.expanduser(rest)
