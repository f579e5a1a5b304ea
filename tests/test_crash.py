"""Crash safety: a writer process creating checkpoints, killed with SIGKILL at random moments.

200 kills in all (100 against SQLite, 100 against the msgpack log; ``CKPT_LEDGER_CRASH_KILLS``
sets the per-backend count, ``CKPT_LEDGER_FULL=1`` makes it 500). Writers are forked from a
warm "zygote" (tests/proc_worker.py) so a kill cycle costs milliseconds, not an interpreter
start. Each cycle: fork a writer, let it open the ledger, wait a random 20-300 ms while it
creates checkpoints (printing each name once ``create`` has returned), SIGKILL it. Then:

* the store opens cleanly (a torn msgpack tail is left for the next append to cut: allowed);
* positions are 1..n, every stream's versions are 1..k, no checkpoint was created twice;
* every create the writer reported is in the ledger;
* a long-lived ledger caught up incrementally, a freshly opened one and a plain fold of
  every event into new DomainStates agree (``to_dict()``);
* the mock hypervisor has at most one checkpoint the ledger lacks (the create in flight
  when the kill came, hypervisor done, append not), never the reverse, and
  ``Ledger.import_()`` reconciles it.

The store and host start afresh every ``PER_STORE`` cycles so that creates stay fast. The
waits come from a random generator seeded from the clock; the seed is printed (pytest shows
it with a failure) and ``CKPT_LEDGER_CRASH_SEED=<seed>`` replays the same waits.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.mock import MockHypervisor
from ledger import Ledger
from ledger.domain.state import DomainState
from ledger.log.records import StoredRecord, decode_record

try:
    from .helpers import assert_gapless
    from .proc_worker import open_store
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    from helpers import assert_gapless  # type: ignore[no-redef]
    from proc_worker import open_store  # type: ignore[no-redef]

WORKER = Path(__file__).with_name("proc_worker.py")
FULL = os.environ.get("CKPT_LEDGER_FULL") == "1"
KILLS = int(os.environ.get("CKPT_LEDGER_CRASH_KILLS") or (500 if FULL else 100))
PER_STORE = 25  # kill cycles per store before starting a fresh store and host
WAIT_MS = (20, 300)


class Zygote:
    """tests/proc_worker.py in ``zygote`` mode: forks writers on request."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), "zygote"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, bufsize=1,
        )

    def fork(self, out: Path, fn: str, *args: Any) -> int:
        """Start ``fn(*args)`` in a child writing to ``out``; its pid."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"out": str(out), "fn": fn, "args": args}) + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def zygote() -> Iterator[Zygote]:
    z = Zygote()
    yield z
    z.close()


def _gone(pid: int, timeout: float = 10.0) -> None:
    """Wait until ``pid`` no longer exists (the zygote reaps it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.001)
    raise AssertionError(f"writer {pid} survived SIGKILL")


def _wait_ready(out: Path, pid: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out.exists() and out.read_bytes().startswith(b"ready\n"):
            return
        time.sleep(0.002)
    err = Path(str(out) + ".err")
    raise AssertionError(f"writer {pid} never became ready: "
                         f"{err.read_text() if err.exists() else ''}")


def _fold(records: list[StoredRecord]) -> dict[str, dict[str, Any]]:
    """A plain rebuild: every event folded into new DomainStates."""
    states: dict[str, DomainState] = {}
    for rec in records:
        event, _ = decode_record(rec)
        state = states.setdefault(rec.stream_id, DomainState(stream_id=rec.stream_id))
        state.apply(event, rec.stream_version, rec.position)
    return {sid: st.to_dict() for sid, st in states.items()}


def _check_store(url: str) -> tuple[list[StoredRecord], int]:
    """Reopen the store; check positions and versions. The records and how many torn-tail
    warnings the open raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = open_store(url)
    torn = [w for w in caught if "torn" in str(w.message)]
    assert len(torn) == len(caught), [str(w.message) for w in caught]
    try:
        records = list(store.read_all())
    finally:
        store.close()
    assert_gapless(records)
    return records, len(torn)


def _created(records: list[StoredRecord]) -> Counter[tuple[str, str]]:
    """How many CheckpointCreated events each (domain, checkpoint) has."""
    out: Counter[tuple[str, str]] = Counter()
    for rec in records:
        if rec.type == "CheckpointCreated":
            event, _ = decode_record(rec)
            out[(rec.stream_name, getattr(event, "name", ""))] += 1
    return out


@pytest.mark.slow
@pytest.mark.timeout(max(300, KILLS * 3))
@pytest.mark.parametrize("backend", ["sqlite", "msgpack"])
def test_sigkill_during_creates(backend: str, tmp_path: Path, zygote: Zygote) -> None:
    seed = int(os.environ.get("CKPT_LEDGER_CRASH_SEED") or time.time_ns())
    print(f"kill timings: seed {seed} (CKPT_LEDGER_CRASH_SEED={seed} replays them)")
    rng = random.Random(seed)
    started = time.monotonic()
    stats: Counter[str] = Counter()
    live: Ledger | None = None
    hv: MockHypervisor | None = None
    url = ""
    for cycle in range(KILLS):
        if cycle % PER_STORE == 0:  # a fresh store and host
            if live is not None:
                stats["events"] += live.position
                live.close()
            folder = tmp_path / f"s{cycle // PER_STORE}"
            folder.mkdir()
            ext = "db" if backend == "sqlite" else "log"
            url = f"{backend}:///{folder}/ledger.{ext}"
            state = str(folder / "host.json")
            hv = MockHypervisor(state)
            hv.define("vm", ["vda", "vdb"])
            live = Ledger.open(open_store(url), MockHypervisor(state))
        assert live is not None and hv is not None
        hv.define(f"d{cycle}", ["vda"])  # each cycle's first create on it also enrols it
        domains = ["vm", f"d{cycle}"]
        out = tmp_path / f"out{cycle}.txt"
        pid = zygote.fork(out, "crash_writer", url, state, domains, f"k{cycle}")
        _wait_ready(out, pid)
        time.sleep(rng.uniform(*WAIT_MS) / 1000)
        os.kill(pid, signal.SIGKILL)
        _gone(pid)

        lines = out.read_text().splitlines()[1:]
        reported = {tuple(line.split()) for line in lines if line.count(" ") == 1}
        stats["reported"] += len(reported)
        records, torn = _check_store(url)
        stats["torn tails"] += torn

        created = _created(records)
        twice = [k for k, n in created.items() if n > 1]
        assert not twice, f"cycle {cycle}: created twice: {twice}"
        missing = reported - set(created)
        assert not missing, f"cycle {cycle}: reported but not in the ledger: {missing}"

        live.catch_up()
        fresh = Ledger.open(open_store(url))
        try:
            rebuilt = _fold(records)
            assert {s: st.to_dict() for s, st in live.states.items()} == rebuilt
            assert {s: st.to_dict() for s, st in fresh.states.items()} == rebuilt
        finally:
            fresh.close()

        # the hypervisor may be one create ahead of the ledger, never behind
        extra: list[tuple[str, str]] = []
        for d in domains:
            on_host = set(hv.list_checkpoints(d))
            known = set(live.state(d).checkpoints) if d in live.by_name else set()
            assert known <= on_host, f"cycle {cycle}: {d}: ledger ahead of host"
            extra += [(d, n) for n in sorted(on_host - known)]
        assert len(extra) <= 1, f"cycle {cycle}: more than the in-flight create: {extra}"
        if extra:
            assert extra[0] not in reported
            i = len(reported)  # the writer's next create, the one the kill interrupted
            assert extra[0] == (domains[i % len(domains)], f"k{cycle}-{i}"), extra
            stats["in flight"] += 1
            reports = live.import_(domains)
            assert sum(len(r.added) for r in reports) == 1, reports
            for d in domains:
                assert set(live.state(d).checkpoints) == set(hv.list_checkpoints(d))
    if live is not None:
        stats["events"] += live.position
        live.close()
    took = time.monotonic() - started
    print(f"\n{backend}: {KILLS} kills in {took:.1f} s (seed {seed}); {dict(stats)}")
    assert stats["reported"] > 0
