"""Shared helpers: scales, cache paths, timing, subprocess workers, formatting."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
DATA = Path(os.environ.get("CKPT_BENCH_DATA", ROOT / ".data"))
GEN_VERSION = 2  # bump when the generated history changes shape (2: event schema 2)


@dataclass(frozen=True)
class Scale:
    """How big each benchmark is (``full`` or ``--quick``, 10x smaller)."""

    name: str
    domains: int  # domains in the rebuild history (100 events each)
    import_events: int  # events in the batched import (100 per domain)
    creates: int  # durable single creates / appends / commits
    chain: int  # checkpoints in the plan domain's chain
    others: tuple[int, int]  # other domains beside the plan domain: few vs many
    replay_chain: int  # checkpoints in the replayed chain
    replay_domains: tuple[int, int]  # domains x checkpoints replayed at once
    mixed_domains: int  # domains in the mixed history (both policies, ~99 events each)
    repeats: int = 3  # trials of each short measurement (median reported)
    # trials of the replay chain against the raw loop: both sides are libvirt's time, which
    # drifts by tens of percent over minutes on this machine, more than the 5% the row judges
    libvirt_repeats: int = 5
    # trials of each rebuild: the ledger's rebuild (a few hundred MB of projections) swings by
    # up to 15% from one fresh interpreter to the next here, eventsourcing's by a few percent
    rebuild_repeats: int = 5

    @property
    def events(self) -> int:
        """Events in the rebuild history."""
        return self.domains * EVENTS_PER_DOMAIN


EVENTS_PER_DOMAIN = 100
FULL = Scale("full", domains=10_000, import_events=100_000, creates=1_000, chain=10_000,
             others=(10, 10_000), replay_chain=1_000, replay_domains=(20, 100), mixed_domains=3_000)
QUICK = Scale("quick", domains=1_000, import_events=10_000, creates=100, chain=1_000,
              others=(10, 1_000), replay_chain=100, replay_domains=(10, 20), mixed_domains=300)
SCALES = {s.name: s for s in (FULL, QUICK)}


def store_schema_version() -> int:
    """The SQLite backend's schema version (part of the cache key: a new column, new file)."""
    try:
        from backends import sqlite as backend

        return int(getattr(backend, "SCHEMA_VERSION", 0))
    except Exception:  # pragma: no cover - the backend is being edited
        return 0


def history_path(scale: Scale) -> Path:
    """The cached SQLite store holding the rebuild history for ``scale``."""
    return DATA / f"history-{scale.events}-g{GEN_VERSION}-s{store_schema_version()}.db"


def es_history_path(scale: Scale) -> Path:
    """The cached eventsourcing SQLite database replaying the same history."""
    return DATA / f"es-history-{scale.events}-g{GEN_VERSION}.db"


def mixed_history_path(scale: Scale) -> Path:
    """The cached SQLite store holding the mixed history (bench/gen.py: mixed_commands)."""
    return DATA / f"mixed-{scale.mixed_domains}-g{GEN_VERSION}-s{store_schema_version()}.db"


def es_mixed_history_path(scale: Scale) -> Path:
    """The cached eventsourcing SQLite database replaying the mixed history."""
    return DATA / f"es-mixed-{scale.mixed_domains}-g{GEN_VERSION}.db"


def remove_db(path: Path) -> None:
    """Delete a SQLite file with its WAL, shared-memory and lock sidecars."""
    for suffix in ("", "-wal", "-shm", "-journal", ".lock"):
        p = Path(str(path) + suffix)
        if p.exists():
            p.unlink()


def warm(path: Path) -> None:
    """Read ``path`` once so that every contender starts from the OS page cache."""
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


@contextmanager
def timer() -> Iterator[Callable[[], float]]:
    """``with timer() as t: ...`` then ``t()`` is the elapsed seconds."""
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


def maxrss_mb() -> float:
    """Peak resident set size of this process, in MB: ``VmHWM`` of /proc/self/status.

    Not ``getrusage``'s ``ru_maxrss``: Linux carries that over an ``exec`` from the parent,
    so a worker started by a big parent would report the parent's peak.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    import resource  # pragma: no cover - not Linux

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(task: str, **kwargs: Any) -> dict[str, Any]:
    """Run ``bench.worker`` ``task`` in a fresh interpreter; return the JSON it printed."""
    cmd = [sys.executable, "-m", "bench.worker", task, json.dumps(kwargs)]
    proc = subprocess.run(cmd, cwd=ROOT.parent, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bench worker {task} failed:\n{proc.stderr[-4000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    return dict(json.loads(lines[-1]))


def median(values: list[float]) -> float:
    """The median (the single value for one trial)."""
    return float(statistics.median(values))


def load_average() -> str:
    """``1m 5m 15m`` load averages."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def environment() -> dict[str, str]:
    """Versions that the ratios were measured with."""
    from importlib.metadata import PackageNotFoundError, version

    import msgpack
    import pydantic

    try:
        es = version("eventsourcing")
    except PackageNotFoundError:
        es = "missing"
    return {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "pydantic": pydantic.VERSION,
        "msgpack": ".".join(map(str, msgpack.version)),
        "eventsourcing": es,
        "cpus": str(os.cpu_count()),
    }


def scale_dict(scale: Scale) -> dict[str, Any]:
    """``scale`` as JSON-able kwargs for a worker."""
    return asdict(scale)


def scale_from(kwargs: dict[str, Any]) -> Scale:
    """The inverse of :func:`scale_dict`."""
    data = dict(kwargs)
    data["others"] = tuple(data["others"])
    return Scale(**data)
