"""Defaults: where the store is (``$CKPT_LEDGER_STORE``, a config file, else root's system
folder or the user's XDG data folder), and how long a command waits for a domain's lock.

Kept by hand rather than ``platformdirs``: the tool runs on Linux hosts only, root's default
is a system path (``/var/lib``) that platformdirs does not choose, and the XDG rules used here
are three lines with an origin to report."""

from __future__ import annotations

import os
from pathlib import Path

from ledger.app.config import Setting, setting
from ledger.domain.errors import LedgerError
from ledger.log.locks import DEFAULT_TIMEOUT as DEFAULT_LOCK_TIMEOUT
from ledger.log.locks import ENV as LOCK_TIMEOUT_ENV
from ledger.log.locks import check_timeout as check_lock_timeout
from ledger.log.store import EventStore

__all__ = ["DEFAULT_LOCK_TIMEOUT", "LOCK_TIMEOUT_ENV", "check_lock_timeout", "default_store",
           "default_store_url"]


SYSTEM_DIR = "/var/lib/ckpt-ledger"
SYSTEM_DIR_ENV = "CKPT_LEDGER_SYSTEM_DIR"


def default_store(create: bool = True) -> Setting:
    """The store when no ``--store`` is given, and where it came from:
    ``$CKPT_LEDGER_STORE``, else a config file's ``store`` (ledger/app/config.py), else
    the built-in default: for root (one ledger for root, sudo and cron alike)
    ``/var/lib/ckpt-ledger/ledger.db`` (``$CKPT_LEDGER_SYSTEM_DIR`` names another folder),
    for other users ``$XDG_DATA_HOME/ckpt-ledger/ledger.db`` (a relative ``$XDG_DATA_HOME``
    is ignored, as the XDG spec says; then ``~/.local/share``). An absolute
    ``$XDG_DATA_HOME`` is honoured for root too.

    The default's folder is made when ``create``; STORE_ERROR naming the folder and where
    it came from when it cannot be made or used.
    """
    chosen = setting("store", "CKPT_LEDGER_STORE")
    if chosen.value:
        return chosen
    xdg = os.environ.get("XDG_DATA_HOME", "")
    if os.path.isabs(xdg):
        folder, origin = Path(xdg) / "ckpt-ledger", f"default ($XDG_DATA_HOME={xdg})"
    elif os.geteuid() == 0:
        system = os.environ.get(SYSTEM_DIR_ENV) or SYSTEM_DIR
        folder, origin = Path(system), f"default for root ({system})"
        if os.environ.get(SYSTEM_DIR_ENV):
            origin = f"default for root (${SYSTEM_DIR_ENV}={system})"
    else:
        try:
            home = Path.home()
        except RuntimeError:  # no $HOME and no passwd entry
            home = Path("")
        if not home.is_absolute():
            raise LedgerError("STORE_ERROR", "no folder for the default store: neither "
                              "$XDG_DATA_HOME nor $HOME is an absolute path",
                              hint="pass --store URL or set CKPT_LEDGER_STORE")
        folder, origin = home / ".local" / "share" / "ckpt-ledger", f"default ($HOME={home})"
    url = "sqlite:///" + str(folder / "ledger.db")
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if not os.access(folder, os.W_OK | os.X_OK):
                raise PermissionError(13, os.strerror(13))
        except OSError as e:
            raise LedgerError("STORE_ERROR", f"cannot use {folder} for the default store (from "
                              f"{origin}): {e.strerror or e}",
                              hint="pass --store URL or set CKPT_LEDGER_STORE") from None
    return Setting(url, origin)


def default_store_url(create: bool = True) -> str:
    """The URL of :func:`default_store`."""
    url = default_store(create).value
    assert url is not None
    return url


def require_events(store: EventStore) -> None:
    """STORE_ERROR naming ``store`` when it holds no event: a command that recovers or
    verifies from a ledger must not succeed silently on a wrong (empty) one."""
    if store.last_position() == 0:
        raise LedgerError(
            "STORE_ERROR", f"store {store.url} holds no events: is it the right ledger?",
            hint="check --store or CKPT_LEDGER_STORE")
