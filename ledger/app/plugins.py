"""Find the store or hypervisor for a URL without importing backends/ or adapters/.

Backends and adapters register an opener under the entry-point groups
``ckpt_ledger.stores`` and ``ckpt_ledger.hypervisors`` (see pyproject.toml), keyed by URL
scheme. A hypervisor URI whose scheme has no opener goes to the ``libvirt`` opener, since
libvirt accepts many schemes (``qemu+ssh``, ``test`` ...).

An opener whose module cannot be imported (an optional dependency not installed, or
installed but unusable) is one :class:`LedgerError` naming the extra that provides it
(:data:`EXTRAS`), never an ``ImportError``.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from ledger.domain.errors import CodeName, LedgerError
from ledger.log.urls import scheme_of as scheme_of

# opener name -> (the module it needs, the pyproject extra that installs it)
EXTRAS: dict[str, tuple[str, str]] = {
    "postgresql": ("psycopg", "postgres"),
    "libvirt": ("libvirt-python", "libvirt"),
}


def _openers(group: str) -> dict[str, Callable[[], Any]]:
    found: dict[str, Callable[[], Any]] = {}
    for ep in entry_points(group=group):
        found[ep.name] = ep.load
    return found


def _load(loaders: dict[str, Callable[[], Any]], key: str, what: str, code: CodeName) -> Any:
    """The opener ``key``; ``code`` naming the extra to install when it cannot be imported."""
    try:
        return loaders[key]()
    except ImportError as e:
        needs, extra = EXTRAS.get(key, (e.name or "a module", key))
        why = " ".join(str(e).split())
        raise LedgerError(code, f"{what} needs {needs}, which cannot be imported ({why}): "
                          f"pip install 'ckpt-ledger[{extra}]'") from None


def open_store(url: str, readonly: bool = False) -> Any:
    """Open the event store at ``url`` (a bare path means SQLite).

    ``readonly``: open it only to read (the backend's ``open_url(url, readonly=True)``):
    nothing is created, migrated, repaired or written, a store that does not exist is
    refused with STORE_ERROR, and every write through the handle is refused.
    """
    if not isinstance(url, str) or not url.strip():
        raise LedgerError("STORE_URL", "the store URL is empty")
    scheme = scheme_of(url) or "sqlite"
    if scheme in ("postgres", "postgresql+psycopg"):
        scheme = "postgresql"
    loaders = _openers("ckpt_ledger.stores")
    if scheme not in loaders:
        known = ", ".join(sorted(f"{k}://" for k in loaders))
        raise LedgerError(
            "STORE_URL", f"unknown store URL scheme '{scheme}' in '{url}' (known: {known})"
        )
    opener = _load(loaders, scheme, f"the {scheme}:// store", "STORE_ERROR")
    return opener(url, readonly=True) if readonly else opener(url)


def open_hypervisor(uri: str) -> Any:
    """Open the hypervisor at ``uri``: ``mock:///path/state.json`` or any libvirt URI."""
    if not isinstance(uri, str) or not uri.strip():
        raise LedgerError("STORE_URL", "the hypervisor URI is empty")
    scheme = scheme_of(uri)
    if scheme is None and uri.lower().startswith("mock:"):
        scheme = "mock"  # mock:relative/state.json: a URI without an authority part
    if scheme is None:
        raise LedgerError(
            "STORE_URL",
            f"'{uri}' is not a hypervisor URI (try mock:///path/state.json or qemu:///system)",
        )
    loaders = _openers("ckpt_ledger.hypervisors")
    key = scheme if scheme in loaders else "libvirt"
    if key not in loaders:
        raise LedgerError("STORE_URL", f"no hypervisor adapter for '{uri}'")
    opener = _load(loaders, key, f"the hypervisor URI '{uri}'", "HYPERVISOR_ERROR")
    return opener(uri)
