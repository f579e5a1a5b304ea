"""The memory:// store: the shared contract, plus what is particular to it."""

from __future__ import annotations

import pytest

from backends.memory import MemoryStore, open_url
from ledger.app.plugins import open_store
from ledger.domain.errors import LedgerError
from ledger.log.store import EventStore

try:
    from .store_contract import StoreContract, StoreFactory, recs
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    from store_contract import StoreContract, StoreFactory, recs  # type: ignore[no-redef]


class MemoryFactory(StoreFactory):
    """Fresh MemoryStores; a second handle is the same object."""

    module = "backends.memory"
    durable = False
    multiprocess = False

    def __call__(self) -> EventStore:
        return open_url("memory://")

    def another(self, store: EventStore) -> EventStore:
        return store


@pytest.fixture
def store_factory() -> MemoryFactory:
    """The memory backend's factory."""
    return MemoryFactory()


class TestMemoryStore(StoreContract):
    """The contract, run against MemoryStore."""


def test_open_store_routes_memory_urls() -> None:
    store = open_store("memory://")
    assert isinstance(store, MemoryStore)
    store.close()


def test_each_open_is_a_new_store() -> None:
    a, b = open_url("memory://"), open_url("memory://")
    a.append(recs("a", 1))
    assert b.last_position() == 0


def test_wrong_scheme_is_a_url_error() -> None:
    with pytest.raises(LedgerError) as ei:
        open_url("sqlite:///x.db")
    assert ei.value.code == "STORE_URL"


def test_closed_store_refuses() -> None:
    store = open_url("memory://")
    store.close()
    with pytest.raises(LedgerError) as ei:
        store.append(recs("a", 1))
    assert ei.value.code == "STORE_ERROR"
