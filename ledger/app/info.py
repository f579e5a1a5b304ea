"""``ckpt-ledger info``: which ledger and which hypervisor a command would use, what each is,
and where every setting came from. Reads only: a store that does not exist is not created.
"""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

from pydantic import BaseModel

from ledger.app.config import Setting, config_paths, read_config
from ledger.app.integrity import head
from ledger.app.ledger import Ledger
from ledger.app.plugins import open_hypervisor
from ledger.domain.errors import LedgerError
from ledger.log.records import Provenance
from ledger.version import __version__


class Info(BaseModel):
    """What ``info`` reports (the text output shows the same)."""

    version: str
    python: str
    optional: dict[str, str | None]  # package -> version (None: not installed)
    store: str
    store_from: str
    store_state: str  # "ok", "empty" (no events), or why it cannot be opened
    events: int = 0
    head: str | None = None  # POSITION:HASH of the newest event
    domains: int = 0
    hypervisor: str | None = None
    hypervisor_from: str
    hypervisor_is: str | None = None  # or why it cannot be reached
    host_domains: int | None = None
    actor: str
    actor_from: str
    lock_timeout: str
    lock_timeout_from: str
    config_files: dict[str, str]  # path -> "read", "absent" or why it is refused


def _installed(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def gather(store: Setting, hypervisor: Setting, actor: Setting, lock_timeout: Setting) -> Info:
    """The report for these settings (each resolved by the caller, with its origin)."""
    files: dict[str, str] = {}
    for path in config_paths():
        try:
            files[str(path)] = "absent" if read_config(path) is None else "read"
        except LedgerError as err:
            files[str(path)] = err.one_line()
    info = Info(
        version=__version__, python=platform.python_version(),
        optional={p: _installed(p) for p in ("libvirt-python", "psycopg")},
        store=store.value or "?", store_from=store.origin, store_state="ok",
        hypervisor=hypervisor.value, hypervisor_from=hypervisor.origin,
        actor=actor.value or Provenance.default().actor or "?", actor_from=actor.origin,
        lock_timeout=lock_timeout.value or "?", lock_timeout_from=lock_timeout.origin,
        config_files=files)
    try:
        with Ledger.open(store=store.value, readonly=True) as lg:
            position, digest = head(lg.store)
            info.events = position
            info.head = f"{position}:{digest}" if position else None
            info.domains = len(lg.domains())
            info.store_state = "ok" if position else "empty"
    except LedgerError as err:
        info.store_state = err.one_line()
    if hypervisor.value:
        try:
            hv = open_hypervisor(hypervisor.value)
            try:
                info.hypervisor_is = hv.describe()
                info.host_domains = len(hv.list_domains())
            finally:
                hv.close()
        except LedgerError as err:
            info.hypervisor_is = f"not reachable: {err.one_line()}"
    return info
