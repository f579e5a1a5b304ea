"""Defaults: where the store is (``$CKPT_LEDGER_STORE``, else the XDG data folder), and
how long a command waits for a domain's lock."""

from __future__ import annotations

import os
from pathlib import Path

from ledger.domain.errors import LedgerError
from ledger.log.locks import DEFAULT_TIMEOUT as DEFAULT_LOCK_TIMEOUT
from ledger.log.locks import ENV as LOCK_TIMEOUT_ENV
from ledger.log.locks import check_timeout as check_lock_timeout
from ledger.log.store import EventStore

__all__ = ["DEFAULT_LOCK_TIMEOUT", "LOCK_TIMEOUT_ENV", "check_lock_timeout", "default_store_url"]


def default_store_url(create: bool = True) -> str:
    """``$CKPT_LEDGER_STORE``, else ``$XDG_DATA_HOME/ckpt-ledger/ledger.db`` (a relative
    ``$XDG_DATA_HOME`` is ignored, as the XDG spec says; then ``~/.local/share``).

    Its folder is made when ``create``; STORE_ERROR naming the folder and the variable it
    came from when it cannot be made or used.
    """
    env = os.environ.get("CKPT_LEDGER_STORE")
    if env:
        return env
    xdg = os.environ.get("XDG_DATA_HOME", "")
    if os.path.isabs(xdg):
        base, origin = Path(xdg), f"$XDG_DATA_HOME={xdg}"
    else:
        try:
            home = Path.home()
        except RuntimeError:  # no $HOME and no passwd entry
            home = Path("")
        if not home.is_absolute():
            raise LedgerError("STORE_ERROR", "no folder for the default store: neither "
                              "$XDG_DATA_HOME nor $HOME is an absolute path",
                              hint="pass --store URL or set CKPT_LEDGER_STORE")
        base, origin = home / ".local" / "share", f"$HOME={home}"
    folder = base / "ckpt-ledger"
    if not create:
        return "sqlite:///" + str(folder / "ledger.db")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(13, os.strerror(13))
    except OSError as e:
        raise LedgerError("STORE_ERROR", f"cannot use {folder} for the default store (from "
                          f"{origin}): {e.strerror or e}",
                          hint="pass --store URL or set CKPT_LEDGER_STORE") from None
    return "sqlite:///" + str(folder / "ledger.db")


def require_events(store: EventStore) -> None:
    """STORE_ERROR naming ``store`` when it holds no event: a command that recovers or
    verifies from a ledger must not succeed silently on a wrong (empty) one."""
    if store.last_position() == 0:
        raise LedgerError(
            "STORE_ERROR", f"store {store.url} holds no events: is it the right ledger?",
            hint="check --store or CKPT_LEDGER_STORE")
