"""The contract every event store owes (ledger/log/store.py), as one shared test class.

Like eventsourcing's ``ApplicationRecorderTestCase`` (docs/event-store.md §1.7), each backend's
test module subclasses :class:`StoreContract` and provides a ``store_factory`` fixture that
returns a :class:`StoreFactory`: ``factory()`` opens a fresh, empty store; ``reopen(store)``
closes it and opens the same location again (durability); ``another(store)`` opens a second
handle on the same store (concurrency); ``url_of(store)`` is what a child process opens.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from ledger.app.integrity import head, verify_chain
from ledger.domain.errors import LedgerError, VersionConflict
from ledger.log.chain import GENESIS, is_hash, record_hash
from ledger.log.records import NewRecord, StoredRecord
from ledger.log.store import ANY, NO_STREAM, EventStore

CLI = Path(sys.executable).parent / "ckpt-ledger"  # the installed console script


def rec(stream: str = "s1", payload: bytes = b"p", type_: str = "T", name: str = "") -> NewRecord:
    """A NewRecord for ``stream`` with ``payload``."""
    return NewRecord(stream, name or f"vm-{stream}", type_, 1, 1700000000.25, payload)


def recs(stream: str, n: int, tag: str = "") -> list[NewRecord]:
    """``n`` records for ``stream`` with distinct payloads."""
    return [rec(stream, f"{stream}:{tag}{i}".encode()) for i in range(n)]


class StoreFactory:
    """Opens stores of one backend; subclasses override what their backend can do."""

    module: str = ""  # the backend module a child process imports
    durable = True  # reopen() sees what was written
    multiprocess = True  # several processes can share one store

    def __call__(self) -> EventStore:
        """A fresh, empty store."""
        raise NotImplementedError

    def reopen(self, store: EventStore) -> EventStore:
        """Close ``store`` and open its location again."""
        store.close()
        return self.open_same(store)

    def another(self, store: EventStore) -> EventStore:
        """A second, independent handle on the same store."""
        return self.open_same(store)

    def open_same(self, store: EventStore) -> EventStore:
        """Open ``store``'s URL with its backend's ``open_url``."""
        module = importlib.import_module(self.module)
        opened: EventStore = module.open_url(self.url_of(store))
        return opened

    def url_of(self, store: EventStore) -> str:
        """The URL that reopens ``store``."""
        return store.url

    def inject_failure(self, store: EventStore) -> AbstractContextManager[None] | None:
        """Make the next append fail after its first record is written (None: can't)."""
        return None

    def readonly(self, store: EventStore) -> EventStore:
        """A read-only handle on ``store`` (its backend's ``open_url(..., readonly=True)``)."""
        module = importlib.import_module(self.module)
        opened: EventStore = module.open_url(self.url_of(store), readonly=True)
        return opened

    def missing(self) -> str | None:
        """The URL of a store that does not exist yet (None: every URL names a store)."""
        return None

    def footprint(self, url: str) -> object:
        """Everything a read of the store at ``url`` must leave as it is (the files beside
        it, their bytes; a database's schema and rows), comparable with ``==``; None when
        the backend keeps nothing outside the process."""
        return None


def _versions(store: EventStore, stream: str) -> list[int]:
    return [r.stream_version for r in store.read_stream(stream)]


def _positions(store: EventStore) -> list[int]:
    return [r.position for r in store.read_all()]


def _shared_append(store: EventStore, stream: str, payload: bytes) -> int:
    """Append one record to a contended stream, retrying on VersionConflict."""
    retries = 0
    while True:
        version = store.stream_version(stream)
        try:
            store.append([rec(stream, payload)], expected_version=version)
            return retries
        except VersionConflict:
            retries += 1
            time.sleep(random.random() * 0.002 * min(retries, 5))  # jittered backoff


def process_worker(module: str, url: str, worker: int, n: int) -> int:
    """Run in a spawned process: ``n`` shared-stream and ``n`` own-stream appends."""
    store: EventStore = importlib.import_module(module).open_url(url)
    try:
        retries = 0
        own = f"own-{worker}"
        for i in range(n):
            retries += _shared_append(store, "shared", f"w{worker}:{i}".encode())
            store.append([rec(own, f"{own}:{i}".encode())], expected_version=i)
        return retries
    finally:
        store.close()


class StoreContract:
    """The shared contract; a backend's test class inherits it and adds hostile tests."""

    @pytest.fixture
    def store(self, store_factory: StoreFactory) -> Iterator[EventStore]:
        """A fresh store, closed afterwards."""
        s = store_factory()
        yield s
        s.close()

    # --- shape -----------------------------------------------------------------------

    def test_is_an_event_store(self, store: EventStore) -> None:
        assert isinstance(store, EventStore)
        assert isinstance(store.url, str) and store.url

    def test_empty_store(self, store: EventStore) -> None:
        assert store.last_position() == 0
        assert list(store.read_all()) == []
        assert list(store.read_stream("nope")) == []
        assert store.stream_version("nope") == 0

    def test_empty_append_writes_nothing(self, store: EventStore) -> None:
        assert store.append([]) == []
        assert store.last_position() == 0

    def test_append_returns_stored_records(self, store: EventStore) -> None:
        out = store.append([rec("a", b"1", "A"), rec("a", b"2", "B")])
        assert [(r.position, r.stream_version, r.type, r.payload) for r in out] == [
            (1, 1, "A", b"1"), (2, 2, "B", b"2")]
        assert all(isinstance(r, StoredRecord) for r in out)
        assert out[0].stream_id == "a" and out[0].stream_name == "vm-a"
        assert out[0].schema_version == 1 and out[0].recorded_at == 1700000000.25
        assert list(store.read_all()) == out

    # --- ordering, positions, versions -----------------------------------------------

    def test_positions_global_gapless_versions_per_stream(self, store: EventStore) -> None:
        written: list[StoredRecord] = []
        for i in range(6):
            stream = "abc"[i % 3]
            written += store.append(recs(stream, 2, tag=str(i)))
        all_ = list(store.read_all())
        assert all_ == written
        assert [r.position for r in all_] == list(range(1, 13))
        for stream in "abc":
            assert _versions(store, stream) == [1, 2, 3, 4]
            assert store.stream_version(stream) == 4
            assert list(store.read_stream(stream)) == [r for r in written if r.stream_id == stream]
        assert store.last_position() == 12

    def test_read_stream_after_version(self, store: EventStore) -> None:
        store.append(recs("a", 5))
        store.append(recs("b", 1))
        assert _versions_after(store, "a", 3) == [4, 5]
        assert _versions_after(store, "a", 5) == []
        assert _versions_after(store, "a", 0) == [1, 2, 3, 4, 5]

    def test_read_all_after_and_limit(self, store: EventStore) -> None:
        store.append(recs("a", 1200))  # more than one page for paging backends
        assert [r.position for r in store.read_all(after=1195)] == [1196, 1197, 1198, 1199, 1200]
        assert [r.position for r in store.read_all(after=10, limit=3)] == [11, 12, 13]
        assert list(store.read_all(limit=0)) == []
        assert list(store.read_all(after=1200)) == []
        assert list(store.read_all(after=5000)) == []
        assert _positions(store) == list(range(1, 1201))
        assert [r.position for r in store.read_all(after=100, limit=700)] == list(range(101, 801))
        assert _versions(store, "a") == list(range(1, 1201))

    # --- scan: the lean bulk read a catch-up folds ------------------------------------------

    def test_scan_is_read_all_without_the_unread_fields(self, store: EventStore) -> None:
        assert [row for page in store.scan() for row in page] == []
        for i in range(5):  # interleaved streams, more rows than one page of any backend
            store.append(recs("a", 700, tag=f"{i}-"))
            store.append([rec("b", f"b{i}".encode())])
        pages = list(store.scan())
        assert all(pages)  # no empty page
        rows = [row for page in pages for row in page]
        assert rows == [(r.position, r.stream_id, r.stream_version, r.schema_version, r.payload)
                        for r in store.read_all()]
        assert all(type(row[4]) is bytes for row in rows)
        assert [row[0] for page in store.scan(after=3499) for row in page] == [3500, 3501, 3502,
                                                                               3503, 3504, 3505]
        assert list(store.scan(after=3505)) == [] and list(store.scan(after=9999)) == []

    def test_scan_stays_gapless_while_appends_go_on(self, store: EventStore) -> None:
        store.append(recs("a", 2500))
        scan = store.scan()
        first = next(scan)
        store.append(recs("b", 3))  # written while the scan is under way
        rest = [row for page in scan for row in page]
        positions = [row[0] for row in first] + [row[0] for row in rest]
        # gapless and in order; whether the new rows show up is the backend's own affair
        assert positions[:2500] == list(range(1, 2501)) and positions[2500:] in ([],
                                                                             [2501, 2502, 2503])

    # --- expected version --------------------------------------------------------------

    def test_expected_version_int(self, store: EventStore) -> None:
        store.append(recs("a", 2), expected_version=0)
        store.append(recs("a", 1, "x"), expected_version=2)
        for wrong in (0, 1, 2, 4):
            with pytest.raises(VersionConflict) as ei:
                store.append(recs("a", 2, "bad"), expected_version=wrong)
            assert ei.value.code == "VERSION_CONFLICT"
            assert ei.value.actual == 3 and ei.value.expected == wrong
            assert ei.value.stream_id == "a"
        assert _versions(store, "a") == [1, 2, 3]
        assert store.last_position() == 3

    def test_no_stream(self, store: EventStore) -> None:
        store.append(recs("a", 1), expected_version=NO_STREAM)
        with pytest.raises(VersionConflict):
            store.append(recs("a", 1, "x"), expected_version=NO_STREAM)
        store.append(recs("b", 1), expected_version=NO_STREAM)
        assert store.last_position() == 2

    def test_any(self, store: EventStore) -> None:
        store.append(recs("a", 1), expected_version=ANY)
        store.append(recs("a", 1, "x"), expected_version=ANY)
        store.append(recs("a", 1, "y"))
        assert _versions(store, "a") == [1, 2, 3]

    def test_bad_expected_version_rejected(self, store: EventStore) -> None:
        for bad in (-1, "exists", 1.5):
            with pytest.raises(LedgerError):
                store.append(recs("a", 1), expected_version=bad)  # type: ignore[arg-type]
        assert store.last_position() == 0

    # --- atomicity ---------------------------------------------------------------------

    def test_conflict_leaves_nothing(self, store: EventStore) -> None:
        store.append(recs("a", 1))
        with pytest.raises(VersionConflict):
            store.append(recs("a", 5, "x"), expected_version=0)
        assert store.last_position() == 1
        assert store.append(recs("b", 1))[0].position == 2

    def test_mixed_streams_rejected(self, store: EventStore) -> None:
        with pytest.raises(LedgerError) as ei:
            store.append([rec("a"), rec("b")])
        assert ei.value.code == "INVALID_ARG"
        assert store.last_position() == 0

    def test_failure_mid_batch_leaves_nothing(
        self, store: EventStore, store_factory: StoreFactory
    ) -> None:
        store.append(recs("a", 2))
        failing = store_factory.inject_failure(store)
        if failing is None:
            pytest.skip("this backend has no way to fail half-way through an append")
        with failing, pytest.raises(LedgerError) as ei:
            store.append(recs("a", 3, "x"), expected_version=2)
        assert ei.value.code == "STORE_ERROR"
        assert store.last_position() == 2 and store.stream_version("a") == 2
        store.append(recs("a", 1, "y"), expected_version=2)
        assert _positions(store) == [1, 2, 3] and _versions(store, "a") == [1, 2, 3]
        if store_factory.durable:
            again = store_factory.another(store)
            try:
                assert _positions(again) == [1, 2, 3]
            finally:
                again.close()

    # --- idempotency ---------------------------------------------------------------------

    def test_idempotent_retry_returns_original(self, store: EventStore) -> None:
        first = store.append(recs("a", 3), expected_version=NO_STREAM, idempotency_key="k1")
        store.append(recs("b", 1))
        again = store.append(recs("a", 3), expected_version=NO_STREAM, idempotency_key="k1")
        assert again == first
        assert store.last_position() == 4
        later = [NewRecord(r.stream_id, r.stream_name, r.type, r.schema_version, 5.0, r.payload)
                 for r in recs("a", 3)]  # a retry carries a new timestamp
        assert store.append(later, idempotency_key="k1") == first
        assert store.last_position() == 4

    def test_idempotency_key_with_other_content(self, store: EventStore) -> None:
        store.append(recs("a", 2), idempotency_key="k1")
        for other in (recs("a", 2, "x"), recs("a", 1), recs("b", 2), [rec("a", b"a:0", "U")]):
            with pytest.raises(LedgerError) as ei:
                store.append(other, idempotency_key="k1")
            assert ei.value.code == "OPERATION_FAILED"
        assert store.last_position() == 2
        assert store.append(recs("a", 2, "x"), idempotency_key="k2")[0].position == 3

    def test_conflicting_append_does_not_consume_key(self, store: EventStore) -> None:
        store.append(recs("a", 1))
        with pytest.raises(VersionConflict):
            store.append(recs("a", 1, "x"), expected_version=0, idempotency_key="k")
        out = store.append(recs("a", 1, "x"), expected_version=1, idempotency_key="k")
        assert out[0].position == 2

    # --- durability and payloads ---------------------------------------------------------

    def test_durable_across_reopen(self, store_factory: StoreFactory) -> None:
        if not store_factory.durable:
            pytest.skip("not a durable backend")
        store = store_factory()
        first = store.append(recs("a", 3), idempotency_key="k")
        store.append(recs("b", 2))
        before = list(store.read_all())
        store = store_factory.reopen(store)
        try:
            assert list(store.read_all()) == before
            assert store.stream_version("a") == 3 and store.last_position() == 5
            assert store.append(recs("a", 3), idempotency_key="k") == first
            assert store.append(recs("a", 1, "x"), expected_version=3)[0].position == 6
        finally:
            store.close()

    def test_payloads_round_trip(self, store_factory: StoreFactory) -> None:
        big = os.urandom(1 << 20)
        payloads = [b"", bytes(range(256)), b"\x00" * 17, big, "é✓".encode()]
        store = store_factory()
        try:
            written = store.append([rec("ü-strøm", p, name="vm ✓") for p in payloads])
            if store_factory.durable:
                store = store_factory.reopen(store)
            got = list(store.read_stream("ü-strøm"))
            assert [r.payload for r in got] == payloads
            assert all(type(r.payload) is bytes for r in got)
            assert got == written and got[0].stream_name == "vm ✓"
        finally:
            store.close()

    # --- concurrency ---------------------------------------------------------------------

    def test_concurrent_threads(self, store_factory: StoreFactory) -> None:
        n_threads, n = 4, 25
        first = store_factory()
        handles = [first] + [store_factory.another(first) for _ in range(n_threads - 1)]
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                s = handles[i]
                for j in range(n):
                    _shared_append(s, "shared", f"w{i}:{j}".encode())
                    s.append([rec(f"own-{i}", f"own-{i}:{j}".encode())], expected_version=j)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        try:
            assert not errors, errors
            _check_concurrent(first, n_threads, n)
        finally:
            for h in {id(h): h for h in handles}.values():
                h.close()

    def test_concurrent_processes(self, store_factory: StoreFactory) -> None:
        if not store_factory.multiprocess:
            pytest.skip("this backend lives in one process")
        n_procs, n = 4, 50
        store = store_factory()
        try:
            ctx = multiprocessing.get_context("spawn")
            url = store_factory.url_of(store)
            with ctx.Pool(n_procs) as pool:
                args = [(store_factory.module, url, w, n) for w in range(n_procs)]
                pool.starmap(process_worker, args)
            _check_concurrent(store, n_procs, n)
        finally:
            store.close()

    def test_lock_excludes(self, store_factory: StoreFactory) -> None:
        first = store_factory()
        handles = [first, store_factory.another(first)]
        inside: list[int] = []
        overlaps: list[int] = []

        def work(i: int) -> None:
            for _ in range(5):
                with handles[i].lock("a"):
                    inside.append(i)
                    if len(inside) > 1:
                        overlaps.append(i)
                    time.sleep(0.002)
                    inside.remove(i)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for h in {id(h): h for h in handles}.values():
            h.close()
        assert overlaps == []


    def test_lock_all_excludes_each_of_its_streams_and_never_deadlocks(
            self, store_factory: StoreFactory) -> None:
        """``lock_all`` holds every stream it names against ``lock`` of any of them from
        another handle, and two ``lock_all`` of overlapping sets, named in opposite orders,
        take turns instead of deadlocking."""
        first = store_factory()
        second = store_factory.another(first)
        second.lock_timeout = 0.2  # type: ignore[attr-defined]
        with first.lock_all(["b", "a", "c"]):
            for stream in ("a", "c"):
                with pytest.raises(LedgerError) as ei, second.lock(stream):
                    pass
                assert ei.value.code == "OPERATION_TIMEOUT"
        with second.lock("a"):
            pass  # released
        second.lock_timeout = 30  # type: ignore[attr-defined]
        turns: list[str] = []

        def work(handle: EventStore, order: list[str], tag: str) -> None:
            for _ in range(5):
                with handle.lock_all(order):
                    turns.append(tag)
                    time.sleep(0.002)

        threads = [threading.Thread(target=work, args=(first, ["a", "b", "c"], "1")),
                   threading.Thread(target=work, args=(second, ["c", "b", "a"], "2"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(turns) == ["1"] * 5 + ["2"] * 5
        for h in {id(h): h for h in (first, second)}.values():
            h.close()

    def test_lock_held_elsewhere_times_out_naming_the_holder(
            self, store_factory: StoreFactory) -> None:
        """``lock`` waits at most ``lock_timeout`` seconds (ledger/log/locks.py), then fails with
        OPERATION_TIMEOUT naming who holds it; once released, it is taken at once."""
        first = store_factory()
        second = store_factory.another(first)
        second.lock_timeout = 0.3  # type: ignore[attr-defined]
        held, done = threading.Event(), threading.Event()

        def hold() -> None:
            with first.lock("a"):
                held.set()
                done.wait(30)

        t = threading.Thread(target=hold, name="holder-thread")
        t.start()
        try:
            assert held.wait(30)
            start = time.monotonic()
            with pytest.raises(LedgerError) as ei, second.lock("a"):
                pass
            took = time.monotonic() - start
            assert ei.value.code == "OPERATION_TIMEOUT" and 0.3 <= took < 3, (ei.value, took)
            assert "held by" in str(ei.value) and "\n" not in str(ei.value), str(ei.value)
        finally:
            done.set()
            t.join()
        start = time.monotonic()
        with second.lock("a"):
            assert time.monotonic() - start < 1
        for h in {id(h): h for h in (first, second)}.values():
            h.close()

    # --- hash chain (ledger/log/chain.py) ----------------------------------------------------

    def test_hashes_chain_across_appends_and_batches(self, store: EventStore) -> None:
        written: list[StoredRecord] = []
        written += store.append(recs("a", 1))
        written += store.append(recs("b", 4))  # a batch
        written += store.append([rec("a", b"", "E")], expected_version=1)
        written += store.append(recs("c", 2), idempotency_key="k")
        assert store.append(recs("c", 2), idempotency_key="k") == written[-2:]  # same hashes
        got = list(store.read_all())
        assert got == written
        prev = _assert_chained(got)
        assert head(store) == (8, prev)
        assert verify_chain(got).ok and verify_chain(store.read_all(), (8, prev)).ok
        assert list(store.read_stream("b")) == got[1:5]

    def test_hash_chain_continues_after_reopen(self, store_factory: StoreFactory) -> None:
        if not store_factory.durable:
            pytest.skip("not a durable backend")
        store = store_factory()
        store.append(recs("a", 3))
        pos, first_head = head(store)
        store = store_factory.reopen(store)
        try:
            assert head(store) == (pos, first_head)
            more = store.append(recs("b", 2))
            assert more[0].hash == record_hash(more[0], first_head)
            other = store_factory.another(store)
            try:
                assert list(other.read_all()) == list(store.read_all())
                later = other.append(recs("c", 1))  # the other handle links to our head
                assert later[0].hash == record_hash(later[0], more[-1].hash)
            finally:
                if other is not store:
                    other.close()
            report = verify_chain(store.read_all(), (3, first_head))
            assert report.ok and report.head_position == 6, report
        finally:
            store.close()

    def test_empty_head(self, store: EventStore) -> None:
        assert head(store) == (0, GENESIS)
        assert verify_chain(store.read_all()).ok

    # --- append_many ---------------------------------------------------------------------

    def test_append_many_several_streams(self, store: EventStore) -> None:
        store.append(recs("a", 1))
        out = store.append_many([(recs("a", 2, "x"), 1), (recs("b", 3), NO_STREAM),
                                 (recs("c", 1), ANY), (recs("d", 1), 0)])
        assert [[r.position for r in batch] for batch in out] == [[2, 3], [4, 5, 6], [7], [8]]
        assert [[r.stream_version for r in batch] for batch in out] == [
            [2, 3], [1, 2, 3], [1], [1]]
        assert [[r.stream_id for r in batch] for batch in out] == [
            ["a", "a"], ["b", "b", "b"], ["c"], ["d"]]
        assert all(isinstance(r, StoredRecord) for batch in out for r in batch)
        assert [r.payload for r in out[1]] == [b"b:0", b"b:1", b"b:2"]
        got = list(store.read_all())
        assert got[1:] == [r for batch in out for r in batch]
        assert _positions(store) == list(range(1, 9)) and store.last_position() == 8
        assert _versions(store, "a") == [1, 2, 3] and _versions(store, "b") == [1, 2, 3]
        assert store.stream_version("c") == 1 and store.stream_version("d") == 1
        assert list(store.read_stream("b")) == out[1]

    def test_append_many_same_stream_twice(self, store: EventStore) -> None:
        out = store.append_many([(recs("a", 2), 0), (recs("b", 1), 0), (recs("a", 1, "x"), 2),
                                 (recs("a", 1, "y"), ANY)])
        assert [[(r.position, r.stream_version) for r in b] for b in out] == [
            [(1, 1), (2, 2)], [(3, 1)], [(4, 3)], [(5, 4)]]
        assert _versions(store, "a") == [1, 2, 3, 4]
        assert [r.payload for r in store.read_stream("a")] == [b"a:0", b"a:1", b"a:x0", b"a:y0"]
        with pytest.raises(VersionConflict) as ei:  # checked against the earlier batch's end
            store.append_many([(recs("c", 1), 0), (recs("c", 1, "x"), 0)])
        assert (ei.value.stream_id, ei.value.expected, ei.value.actual) == ("c", 0, 1)
        assert store.last_position() == 5 and store.stream_version("c") == 0

    def test_append_many_conflict_in_last_batch_leaves_nothing(self, store: EventStore) -> None:
        store.append(recs("a", 2))
        store.append(recs("b", 1))
        before = list(store.read_all())
        with pytest.raises(VersionConflict) as ei:
            store.append_many([(recs("a", 3, "x"), 2), (recs("c", 2), NO_STREAM),
                               (recs("b", 1, "x"), 0)])
        assert ei.value.code == "VERSION_CONFLICT"
        assert (ei.value.stream_id, ei.value.expected, ei.value.actual) == ("b", 0, 1)
        assert list(store.read_all()) == before  # positions, versions and hashes unchanged
        assert store.last_position() == 3
        assert _versions(store, "a") == [1, 2] and _versions(store, "b") == [1]
        assert store.stream_version("c") == 0 and list(store.read_stream("c")) == []
        later = store.append(recs("c", 1), expected_version=NO_STREAM)
        assert later[0].position == 4 and later[0].hash == record_hash(later[0], before[-1].hash)
        assert verify_chain(store.read_all()).ok

    def test_append_many_rejects_a_bad_batch_before_writing(self, store: EventStore) -> None:
        store.append(recs("a", 1))
        bad: list[list[object]] = [[rec("b"), rec("c")], [rec("b"), b"not a record"]]
        for batch in bad:
            with pytest.raises(LedgerError) as ei:
                store.append_many([(recs("a", 1, "x"), 1),
                                   (batch, ANY)])  # type: ignore[list-item]
            assert ei.value.code == "INVALID_ARG"
        with pytest.raises(LedgerError) as ei:
            store.append_many([(recs("a", 1, "x"), 1),
                               (recs("b", 1), -1)])
        assert ei.value.code == "INVALID_ARG"
        assert store.last_position() == 1 and _versions(store, "a") == [1]
        assert store.stream_version("b") == 0

    def test_append_many_empty(self, store: EventStore) -> None:
        assert store.append_many([]) == []
        assert store.append_many([([], ANY), ([], 0)]) == [[], []]
        assert store.last_position() == 0
        out = store.append_many([([], ANY), (recs("a", 1), 0), ([], ANY)])
        assert [[r.position for r in b] for b in out] == [[], [1], []]
        assert store.last_position() == 1

    def test_append_many_chains_hashes(self, store: EventStore) -> None:
        first = store.append(recs("a", 2))
        many = store.append_many([(recs("b", 2), 0), (recs("a", 1, "x"), 2), (recs("c", 3), 0)])
        after = store.append(recs("b", 1, "y"), expected_version=2)
        written = first + [r for b in many for r in b] + after
        got = list(store.read_all())
        assert got == written
        prev = _assert_chained(got)
        assert many[0][0].hash == record_hash(many[0][0], first[-1].hash)
        assert after[0].hash == record_hash(after[0], many[-1][-1].hash)
        assert verify_chain(store.read_all()).ok and head(store) == (9, prev)

    def test_append_many_durable_across_reopen(self, store_factory: StoreFactory) -> None:
        if not store_factory.durable:
            pytest.skip("not a durable backend")
        store = store_factory()
        store.append(recs("a", 1))
        store.append_many([(recs("a", 2, "x"), 1), (recs("b", 2), 0), (recs("a", 1, "y"), 3)])
        before = list(store.read_all())
        store = store_factory.reopen(store)
        try:
            assert list(store.read_all()) == before and store.last_position() == 6
            assert store.stream_version("a") == 4 and store.stream_version("b") == 2
            more = store.append_many([(recs("b", 1, "z"), 2), (recs("c", 1), 0)])
            assert [r.position for b in more for r in b] == [7, 8]
            assert more[0][0].hash == record_hash(more[0][0], before[-1].hash)
            other = store_factory.another(store)
            try:
                assert list(other.read_all()) == list(store.read_all())
            finally:
                other.close()
            assert verify_chain(store.read_all()).ok
        finally:
            store.close()

    def test_append_many_failure_mid_call_leaves_nothing(
        self, store: EventStore, store_factory: StoreFactory
    ) -> None:
        store.append(recs("a", 2))
        before = list(store.read_all())
        failing = store_factory.inject_failure(store)  # fails on the call's second record
        if failing is None:
            pytest.skip("this backend has no way to fail half-way through an append")
        with failing, pytest.raises(LedgerError) as ei:
            store.append_many([(recs("b", 1), 0), (recs("a", 2, "x"), 2)])
        assert ei.value.code == "STORE_ERROR" and "\n" not in str(ei.value)
        assert list(store.read_all()) == before
        assert store.stream_version("a") == 2 and store.stream_version("b") == 0
        store.append_many([(recs("b", 1, "y"), 0), (recs("a", 1, "y"), 2)])
        assert _positions(store) == [1, 2, 3, 4] and _versions(store, "a") == [1, 2, 3]
        assert verify_chain(store.read_all()).ok
        if store_factory.durable:
            again = store_factory.another(store)
            try:
                assert list(again.read_all()) == list(store.read_all())
            finally:
                again.close()

    def test_append_many_is_seen_whole_or_not_at_all(self, store_factory: StoreFactory) -> None:
        first = store_factory()
        writers = [first, store_factory.another(first)]
        reader = store_factory.another(first)
        errors: list[BaseException] = []
        done = threading.Event()
        n = 30

        def write(i: int) -> None:
            try:
                for j in range(n):
                    while True:  # a shared stream: retry on conflict, like _shared_append
                        v = writers[i].stream_version("shared")
                        try:
                            writers[i].append_many([
                                (recs(f"x{i}", 2, f"{j}-"), 2 * j),
                                ([rec("shared", f"w{i}:{j}".encode())], v),
                                (recs(f"y{i}", 1, f"{j}-"), j)])
                            break
                        except VersionConflict:
                            time.sleep(random.random() * 0.002)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        def read() -> None:
            try:
                while not done.is_set():
                    got = list(reader.read_all())
                    assert [r.position for r in got] == list(range(1, len(got) + 1))
                    for i in range(2):  # every call shows all four records or none
                        xs = sum(r.stream_id == f"x{i}" for r in got)
                        ys = sum(r.stream_id == f"y{i}" for r in got)
                        mine = sum(r.payload.startswith(f"w{i}:".encode()) for r in got)
                        assert xs == 2 * ys == 2 * mine, (i, xs, ys, mine)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
        threads.append(threading.Thread(target=read))
        for t in threads:
            t.start()
        for t in threads[:2]:
            t.join()
        done.set()
        threads[2].join()
        try:
            assert not errors, errors
            all_ = list(first.read_all())
            assert [r.position for r in all_] == list(range(1, 8 * n + 1))
            assert verify_chain(all_).ok
            assert _versions(first, "shared") == list(range(1, 2 * n + 1))
            for i in range(2):
                assert _versions(first, f"x{i}") == list(range(1, 2 * n + 1))
                assert _versions(first, f"y{i}") == list(range(1, n + 1))
        finally:
            for h in {id(h): h for h in [*writers, reader]}.values():
                h.close()

    # --- snapshots -----------------------------------------------------------------------

    def test_snapshots_round_trip(self, store_factory: StoreFactory) -> None:
        store = store_factory()
        try:
            assert store.load_snapshot("p") is None
            store.append(recs("a", 3))
            store.save_snapshot("p", 2, b"\x00two")
            store.save_snapshot("other", 1, b"")
            assert store.load_snapshot("p") == (2, b"\x00two")
            store.save_snapshot("p", 3, bytes(range(256)) * 10)  # replaces
            assert store.load_snapshot("p") == (3, bytes(range(256)) * 10)
            assert store.load_snapshot("other") == (1, b"")
            assert store.load_snapshot("nope") is None
            if store_factory.durable:
                store = store_factory.reopen(store)
                assert store.load_snapshot("p") == (3, bytes(range(256)) * 10)
                assert store.load_snapshot("other") == (1, b"")
            assert store.last_position() == 3  # snapshots are not events
            assert [r.position for r in store.read_all()] == [1, 2, 3]
        finally:
            store.close()

    def test_write_ahead_intents_per_domain(self, store_factory: StoreFactory) -> None:
        """A domain's intent (ledger/log/intents.py) is saved, read back (by a second handle
        too), cleared, and independent of other domains' and of the projection snapshot;
        saving one never touches the events."""
        from ledger.log.intents import Intent, load_intent, save_intent

        store = store_factory()
        try:
            store.append(recs("a", 2))
            store.save_snapshot("p", 2, b"snapshot")
            mine = Intent("create", "c3", 1.5, "alice", "nightly", {"children": False})
            theirs = Intent("delete", "c1", 2.5, None, None, {"children": True})
            assert load_intent(store, "a") is None
            save_intent(store, "a", mine)
            save_intent(store, "b", theirs)
            assert load_intent(store, "a") == mine and load_intent(store, "b") == theirs
            other = store_factory.another(store)
            try:
                assert load_intent(other, "a") == mine
                save_intent(other, "b", None)
            finally:
                if other is not store:
                    other.close()
            assert load_intent(store, "b") is None and load_intent(store, "a") == mine
            if store_factory.durable:
                store = store_factory.reopen(store)
                assert load_intent(store, "a") == mine
            save_intent(store, "a", None)
            assert load_intent(store, "a") is None
            assert store.load_snapshot("p") == (2, b"snapshot")
            assert [r.position for r in store.read_all()] == [1, 2]
        finally:
            store.close()

    # --- a long-lived Ledger on the store ------------------------------------------------

    def test_a_long_lived_ledger_answers_with_what_others_appended(
        self, store_factory: StoreFactory, tmp_path: Path
    ) -> None:
        """Every read of a Ledger first folds what another Ledger on the same store (and,
        where the store is shared between processes, another process) appended since:
        new checkpoints, a domain it never saw, deletes."""
        from adapters.mock import MockHypervisor
        from ledger import Ledger

        state_file = tmp_path / "host.json"
        hv = f"mock:///{state_file}"
        mock = MockHypervisor(str(state_file))
        mock.define("d", ["vda"], "chained")
        for dom in ("e", "f"):
            mock.define(dom, ["vda"])
        store = store_factory()
        second = store_factory.another(store)
        try:
            lg = Ledger.open(store, hv, snapshot_every=0)
            for cp in ("c1", "c2", "c3"):
                lg.create("d", cp)
            kept = lg.state("d")
            assert (lg.plan("d", "c3").disks["vda"].mode, lg.domains()) == ("incremental", ["d"])

            other = Ledger.open(second, hv, snapshot_every=0)
            other.create("d", "c4")
            other.create("e", "e1")
            other.delete("d", "c1")
            vda = lg.plan("d", "c3").disks["vda"]
            assert (vda.mode, vda.bitmaps) == ("differential", ["c3", "c4"])
            assert lg.domains() == ["d", "e"]
            assert [v.name for v in lg.list("d")] == ["c2", "c3", "c4"]
            assert lg.show("d", "c4").current and lg.list("e")[0].name == "e1"
            assert [b.bitmap for b in lg.bitmaps("d").disks["vda"]] == ["c2", "c3", "c4"]
            assert lg.history("d", "c1")[-1].what == "deleted"
            assert lg.log("e")[-1].type == "CheckpointCreated"
            assert "<name>c4</name>" in lg.xml("d", "c4")
            assert kept is lg.state("d") and "c4" in kept.checkpoints  # the live projection
            self._answers_as_a_fresh_ledger(lg, second)

            if store_factory.multiprocess:  # the CLI in another process
                url = store_factory.url_of(store)
                for args in (("create", "f", "f1"), ("delete", "d", "c2")):
                    done = subprocess.run(
                        [str(CLI), "--store", url, "--hypervisor", hv, *args],
                        capture_output=True, text=True, timeout=60)
                    assert done.returncode == 0, done.stderr
                assert lg.domains() == ["d", "e", "f"]
                assert [v.name for v in lg.list("f")] == ["f1"]
                assert [v.name for v in lg.list("d")] == ["c3", "c4"]
                assert lg.plan("f", "f1").disks["vda"].bitmaps == ["f1"]
                assert lg.history("d", "c2")[-1].what == "deleted"
                self._answers_as_a_fresh_ledger(lg, second)
        finally:
            for h in {id(h): h for h in (store, second)}.values():
                h.close()

    @staticmethod
    def _answers_as_a_fresh_ledger(lg: object, store: EventStore) -> None:
        """``lg`` answers every read as a Ledger that has just folded the whole store."""
        from ledger import Ledger

        assert isinstance(lg, Ledger)
        fresh = Ledger(store)
        fresh.catch_up()
        assert lg.domains() == fresh.domains()
        for dom in fresh.domains():
            assert lg.list(dom) == fresh.list(dom)
            assert lg.bitmaps(dom) == fresh.bitmaps(dom)
            assert lg.log(dom) == fresh.log(dom)
            for view in fresh.list(dom):
                assert lg.show(dom, view.name) == view
                assert lg.plan(dom, view.name) == fresh.plan(dom, view.name)
                assert lg.history(dom, view.name) == fresh.history(dom, view.name)
        assert lg.log() == fresh.log()


    # --- read-only handles -------------------------------------------------------------

    def test_readonly_handle_reads_and_refuses_to_write(self, store_factory: StoreFactory) -> None:
        """A read-only handle reads what the store holds (records, heads, snapshots) and what
        other handles append later; every write through it (append, append_many,
        save_snapshot, lock) is refused with STORE_ERROR saying it is read-only."""
        store = store_factory()
        ro = None
        try:
            store.append(recs("a", 2))
            store.append_many([(recs("b", 1), NO_STREAM), (recs("a", 1), 2)])
            store.save_snapshot("p", 4, b"snap")
            ro = store_factory.readonly(store)
            if store_factory.durable:
                assert list(ro.read_all()) == list(store.read_all())
                assert [list(p) for p in ro.scan()] == [list(p) for p in store.scan()]
                assert list(ro.read_stream("a")) == list(store.read_stream("a"))
                assert ro.stream_version("a") == 3 and ro.last_position() == 4
                assert ro.load_snapshot("p") == (4, b"snap")
                assert head(ro) == head(store)
            writes = {
                "append": lambda: ro.append(recs("a", 1)),
                "append_many": lambda: ro.append_many([(recs("c", 1), ANY)]),
                "save_snapshot": lambda: ro.save_snapshot("p", 5, b"other"),
                "lock": lambda: ro.lock("a").__enter__(),
            }
            for name, write in writes.items():
                with pytest.raises(LedgerError) as ei:
                    write()
                assert ei.value.code == "STORE_ERROR", name
                assert "read-only" in str(ei.value) and "\n" not in str(ei.value), name
            assert store.last_position() == 4 and store.load_snapshot("p") == (4, b"snap")
            if store_factory.durable:
                new = store.append(recs("a", 1), expected_version=3)
                assert ro.last_position() == 5 and ro.stream_version("a") == 4
                assert list(ro.read_all(after=4)) == new
        finally:
            if ro is not None:
                ro.close()
            store.close()

    def test_readonly_open_of_a_missing_store_is_refused(
        self, store_factory: StoreFactory
    ) -> None:
        """A read-only open of a store that does not exist is one STORE_ERROR line naming
        its URL, and creates nothing (no file, no schema)."""
        url = store_factory.missing()
        if url is None:
            pytest.skip("every URL of this backend names a store")
        before = store_factory.footprint(url)
        module = importlib.import_module(store_factory.module)
        with pytest.raises(LedgerError) as ei:
            module.open_url(url, readonly=True)
        assert ei.value.code == "STORE_ERROR" and "\n" not in str(ei.value)
        assert url in str(ei.value) and "does not exist" in str(ei.value), str(ei.value)
        assert store_factory.footprint(url) == before

    def test_readonly_reads_change_nothing(self, store_factory: StoreFactory) -> None:
        """Opening a store read-only, reading everything and closing it leaves every byte
        and every file (or row) of the store as it was, and creates nothing beside it."""
        store = store_factory()
        url = store_factory.url_of(store)
        try:
            store.append(recs("a", 3))
            store.append_many([(recs("b", 2), NO_STREAM), (recs("a", 1), 3)])
            store.save_snapshot("p", 6, b"snap")
        finally:
            store.close()
        before = store_factory.footprint(url)
        if before is None:
            pytest.skip("this backend keeps nothing outside the process")
        module = importlib.import_module(store_factory.module)
        for _ in range(2):
            ro = module.open_url(url, readonly=True)
            try:
                assert [r.position for r in ro.read_all()] == list(range(1, 7))
                assert sum(len(p) for p in ro.scan()) == 6
                assert len(list(ro.read_stream("a"))) == 4 and ro.stream_version("b") == 2
                assert ro.last_position() == 6 and ro.load_snapshot("p") == (6, b"snap")
                assert head(ro)[0] == 6
            finally:
                ro.close()
            assert store_factory.footprint(url) == before


def _assert_chained(records: list[StoredRecord]) -> str:
    """Every record's hash links it to the one before (the first to GENESIS); the last hash."""
    prev = GENESIS
    for r in records:
        assert is_hash(r.hash) and r.hash == record_hash(r, prev)
        prev = r.hash
    return prev


def _versions_after(store: EventStore, stream: str, after: int) -> list[int]:
    return [r.stream_version for r in store.read_stream(stream, after_version=after)]


def _check_concurrent(store: EventStore, workers: int, n: int) -> None:
    """After ``workers`` x ``n`` contended + own appends: nothing lost, nothing out of order."""
    all_ = list(store.read_all())
    assert [r.position for r in all_] == list(range(1, 2 * workers * n + 1))
    report = verify_chain(all_)  # concurrent writers still link every event to the last
    assert report.ok, report.line()
    assert store.last_position() == 2 * workers * n
    shared = list(store.read_stream("shared"))
    assert [r.stream_version for r in shared] == list(range(1, workers * n + 1))
    for w in range(workers):
        mine = [r.payload for r in shared if r.payload.startswith(f"w{w}:".encode())]
        assert mine == [f"w{w}:{j}".encode() for j in range(n)]
        own = list(store.read_stream(f"own-{w}"))
        assert [r.stream_version for r in own] == list(range(1, n + 1))
        assert [r.payload for r in own] == [f"own-{w}:{j}".encode() for j in range(n)]


def domain_history(
    store: EventStore, domains: int = 2, checkpoints: int = 4, seed: int = 0,
    t0: float = 1700000000.125,
) -> list[StoredRecord]:
    """Append a realistic history (real events the projections fold): each domain is
    enrolled, gets a chain of checkpoints, loses one, and has a bitmap disabled."""
    from ledger.domain.events import (
        BitmapDisabled,
        CheckpointCreated,
        CheckpointDeleted,
        DomainEnrolled,
    )
    from ledger.domain.model import CheckpointDisk, DomainDisk
    from ledger.log.records import Provenance, new_record

    rng = random.Random(seed)
    prov = Provenance(actor="tester", host="testhost", reason=f"seed {seed}")
    out: list[StoredRecord] = []
    t = t0
    for d in range(domains):
        uuid = f"{seed:04d}{d:04d}-0000-4000-8000-{rng.randrange(16**12):012x}"
        name = f"vm{d}"
        disks = (DomainDisk(name="vda"), DomainDisk(name="vdb"))

        def put(ev: object, _uuid: str = uuid, _name: str = name) -> None:
            nonlocal t
            t += rng.random()
            out.extend(store.append([new_record(_uuid, _name, ev, prov, t)]))  # type: ignore[arg-type]

        put(DomainEnrolled(name=name, uuid=uuid, disks=disks, policy="independent"))
        parent = None
        for c in range(checkpoints):
            cp = f"cp{c}"
            put(CheckpointCreated(
                name=cp, parent=parent, creation_time=int(t), description=f"{name} {cp}",
                disks=(CheckpointDisk(name="vda", bitmap=cp), CheckpointDisk(name="vdb",
                       checkpoint="no")), xml=f"<domaincheckpoint><name>{cp}</name>"
                f"</domaincheckpoint>"))
            if parent is not None and rng.random() < 0.5:
                put(BitmapDisabled(disk="vda", bitmap=parent, checkpoint=cp))
            parent = cp
        if checkpoints > 1:
            put(CheckpointDeleted(name="cp0", deleted=("cp0",), reparented={"cp1": None}))
    return out


def files_footprint(folder: str) -> dict[str, str]:
    """Every file in ``folder`` with the sha256 of its bytes (what a read must not change)."""
    import hashlib

    out = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                out[name] = hashlib.sha256(f.read()).hexdigest()
    return out


__all__ = ["StoreContract", "StoreFactory", "domain_history", "files_footprint",
           "process_worker", "rec", "recs"]
