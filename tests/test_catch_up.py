"""A long-lived Ledger answers from the store as it is now: every read first folds what was
appended since (by another Ledger or process), at the cost of one look at the store's head.

The same rule on every backend, with a second process, is in tests/store_contract.py.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.mock import MockHypervisor
from backends.sqlite import SqliteStore
from ledger import Ledger, LedgerError


@pytest.fixture
def hv(tmp_path: Path) -> str:
    mock = MockHypervisor(str(tmp_path / "host.json"))
    mock.define("d", ["vda", "vdb"], "chained")
    mock.define("e", ["vda"])
    return f"mock:///{tmp_path / 'host.json'}"


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "l.db")


@pytest.fixture
def two(db: str, hv: str) -> Iterator[tuple[Ledger, Ledger]]:
    """A long-lived ledger holding d's c1, c2, and a second one on the same file."""
    with Ledger.open(SqliteStore(db), hv, snapshot_every=0) as lg, \
            Ledger.open(SqliteStore(db), hv, snapshot_every=0) as other:
        lg.create("d", "c1")
        lg.create("d", "c2")
        yield lg, other


class Counting:
    """A real SqliteStore whose ``last_position`` and ``scan`` calls are counted."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.heads = 0
        self.scans: list[int] = []  # the ``after`` of each scan

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def last_position(self) -> int:
        self.heads += 1
        return self.store.last_position()

    def scan(self, after: int = 0) -> Any:
        self.scans.append(after)
        return self.store.scan(after)


def _reads(lg: Ledger) -> None:
    """Every read of the Ledger API once."""
    lg.domains()
    lg.state("d")
    lg.list("d")
    lg.show("d", "c1")
    lg.xml("d", "c1")
    lg.bitmaps("d")
    lg.plan("d", "c1")
    lg.log("d")
    lg.history("d", "c1")
    lg.state_at("d", 1)


def test_a_read_with_nothing_new_only_looks_at_the_head(db: str, hv: str) -> None:
    with Ledger.open(SqliteStore(db), hv, snapshot_every=0) as writer:
        writer.create("d", "c1")
        counting = Counting(SqliteStore(db))
        lg = Ledger.open(counting, snapshot_every=0)
        counting.heads, counting.scans = 0, []
        _reads(lg)
        assert counting.scans == [] and counting.heads >= 10  # no fold: each read one look
        folded = lg.folded
        writer.create("d", "c2")
        new = writer.position - lg.position
        assert new > 0
        _reads(lg)
        # the first read folded only the new events, the others found nothing new
        assert counting.scans == [lg.position - new] and lg.folded == folded + new
        lg.close()


def test_every_read_sees_what_another_ledger_appended(two: tuple[Ledger, Ledger]) -> None:
    lg, other = two
    assert lg.domains() == ["d"]
    before = lg.plan("d", "c2").disks["vda"]
    assert (before.mode, before.bitmaps) == ("incremental", ["c2"])
    other.create("d", "c3")
    other.create("e", "e1")
    after = lg.plan("d", "c2").disks["vda"]
    assert (after.mode, after.bitmaps) == ("differential", ["c2", "c3"])
    assert lg.domains() == ["d", "e"]  # a domain it never saw
    assert lg.state_at("e", other.position).name == "e"
    other.delete("d", "c1")
    with pytest.raises(LedgerError) as err:
        lg.show("d", "c1")
    assert err.value.code == "NO_DOMAIN_CHECKPOINT"
    assert lg.history("d", "c1")[-1].what == "deleted"
    assert lg.position == other.position


def test_a_state_handed_out_is_the_live_projection(two: tuple[Ledger, Ledger]) -> None:
    """state() returns the live projection: the next read that folds new events changes it
    in place; a clone() keeps what it was."""
    lg, other = two
    live = lg.state("d")
    kept = live.clone()
    other.create("d", "c3")
    assert "c3" not in live.checkpoints  # nothing read yet
    lg.list("d")
    assert "c3" in live.checkpoints and live.current == "c3" and live is lg.state("d")
    assert "c3" not in kept.checkpoints and kept.current == "c2"


def test_following_and_reading_in_one_loop(two: tuple[Ledger, Ledger]) -> None:
    """follow/watch-style use: each event followed is already in the answers of reads."""
    lg, other = two
    start = lg.position
    other.create("d", "c3")
    other.create("e", "e1")
    seen = []
    for view in lg.follow(after=start, timeout=0.3, poll=0.05):
        if view.type == "CheckpointCreated":
            seen.append([v.name for v in lg.list(view.domain)])
    assert seen == [["c1", "c2", "c3"], ["e1"]]


def test_a_store_that_lost_events_is_refused_with_one_line(two: tuple[Ledger, Ledger],
                                                           db: str) -> None:
    lg, _ = two
    folded = lg.position
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as raw:
        raw.execute("DELETE FROM events WHERE position > ?", [folded - 2])
    for read in (lambda: lg.list("d"), lg.domains, lambda: lg.plan("d", "c1"),
                 lambda: lg.log("d")):
        with pytest.raises(LedgerError) as err:
            read()
        assert err.value.code == "STORE_ERROR"
        line = err.value.one_line()
        assert "\n" not in line and f"position {folded - 2}" in line and str(folded) in line


def test_a_writer_folds_its_own_append_without_reading_it_back(db: str, hv: str) -> None:
    counting = Counting(SqliteStore(db))
    with Ledger.open(counting, hv, snapshot_every=0) as lg:
        lg.create("d", "c1")
        counting.scans = []
        before = lg.position
        made = lg.create("d", "c2")
        # the one scan is the catch-up under the lock (nothing new); the append's own events
        # are folded from what the append returned
        assert counting.scans == [before]
        assert lg.position > before and made.current and made.parent == "c1"
        with Ledger.open(SqliteStore(db), snapshot_every=0) as fresh:  # the same state folded
            assert fresh.state("d").to_dict() == lg.state("d").to_dict()  # from the store


def test_a_writer_whose_append_follows_another_writers_events_folds_those_first(
    two: tuple[Ledger, Ledger], db: str,
) -> None:
    lg, other = two
    other.create("e", "e1")  # lg has not read these: its next append lands after them
    made = lg.create("d", "c3")
    assert made.parent == "c2" and made.current
    with SqliteStore(db) as store:
        assert lg.position == store.last_position()
    assert lg.state("e").current == "e1"
    with Ledger.open(SqliteStore(db), snapshot_every=0) as fresh:  # folded from the store
        for name in ("d", "e"):
            assert fresh.state(name).to_dict() == lg.state(name).to_dict()
