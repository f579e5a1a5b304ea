"""``python -m bench.run [--quick] [--profile]``: the benchmark table (``make bench``).

Every row is a ratio of two figures measured side by side in this run, each in a fresh
interpreter (``bench.worker``) on a fresh or cached file:

* rebuild: ``Ledger.open`` of a 1,000,000-event SQLite store (10,000 chained domains, made
  with the real rules, cached under ``bench/.data``) against a plain ``sqlite3`` scan +
  ``msgpack.unpackb`` of the same rows, and against ``eventsourcing`` replaying the same
  history (``repository.get`` of each domain's aggregate, its default SQLite recorder); the
  same three on a mixed history of 3,000 domains of both policies keeping a retention window
  (about 300,000 events: creates, deletes, disables, bitmap removals and merges);
* batched import of 100,000 events, the whole histories of 100 domains (10,000 events) per
  transaction for every contender: ``new_record`` + ``SqliteStore.append_many`` against
  ``packb`` + ``executemany``, and ``eventsourcing``'s ``app.save(*aggregates)``;
* durable single writes (WAL, ``synchronous=FULL``), each against a raw
  ``BEGIN; INSERT; COMMIT`` loop of the same CheckpointCreated rows: a create as the ledger
  records it (``new_record`` of its events + one ``SqliteStore.append``) under the
  independent policy (one event) and, informational, the chained one (four), and
  ``Ledger.create`` end to end on the mock hypervisor (informational);
* open with a snapshot against a full rebuild (both timed from the call of
  ``Ledger.open``, imports done);
* ``Ledger.plan`` through a 10,000-checkpoint chain beside 10 vs 10,000 other domains;
* replay into libvirt (``--libvirt-uri``, default the test driver): a 1,000-checkpoint chain
  against a raw REDEFINE loop, the ledger's own cost per checkpoint, and 20 domains x 100
  with ``jobs=4`` and ``jobs=1`` against the raw loop in turn (bench/on_libvirt.py);
* ``Ledger.create`` on libvirt + SQLite against the raw call + one durable INSERT, and its own
  cost on a memory store with libvirt's recorded answers given back at once (the row with a
  target), then between real libvirt calls and with each answer given back after a busy loop
  as long as libvirt's call (both diagnostic: the same code, slowed by the pause);
* peak RSS of the rebuild (``VmHWM``).

Every measurement is the median of 3 trials (5 for the rebuilds and the replay chain),
interleaved, each round starting with a different contender, each trial reading its files once
before its clock starts (so all start from the page cache). ``--quick`` is 10x smaller
everywhere. ``--profile`` prints where a 100,000-event rebuild spends its time instead.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .common import (
    FULL,
    QUICK,
    Scale,
    environment,
    es_history_path,
    es_mixed_history_path,
    history_path,
    load_average,
    median,
    mixed_history_path,
    remove_db,
    run_worker,
)


@dataclass
class Row:
    """One line of the table."""

    name: str
    ours: str
    reference: str
    ratio: str
    target: str
    result: str


def rate(r: dict[str, Any]) -> float:
    """Events per second of a worker result."""
    return float(r["events"]) / float(r["seconds"])


def verdict(ok: bool) -> str:
    """PASS or MISS."""
    return "PASS" if ok else "MISS"


def trials(n: int, *tasks: tuple[str, dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Run each task ``n`` times, interleaved, each round starting one task later than the one
    before (A B, B A, A B ...: a machine that slows or speeds up over minutes favours no
    task); results per task."""
    out: list[list[dict[str, Any]]] = [[] for _ in tasks]
    for round_ in range(n):
        for k in range(len(tasks)):
            i = (round_ + k) % len(tasks)
            task, kwargs = tasks[i]
            out[i].append(run_worker(task, **kwargs))
    return out


def med_rate(results: list[dict[str, Any]]) -> float:
    """The median events/s of several trials."""
    return median([rate(r) for r in results])


def at_least(name: str, ours: float, reference: float, factor: float,
             unit: str = " ev/s") -> Row:
    """A row of two rates whose target is ``ours >= factor * reference``."""
    return Row(name, f"{ours:,.0f}{unit}", f"{reference:,.0f}{unit}",
               f"{ours / reference:.2f}x", f">= {factor:g}x", verdict(ours >= factor * reference))


def own_cost(name: str, ours: list[dict[str, Any]], raw: list[dict[str, Any]], what: str,
             limit_ms: float) -> Row:
    """A row of the ledger's own milliseconds per item (its time minus ``hv_seconds``, the
    time inside the hypervisor) beside the raw call's, whose target is ``<= limit_ms``."""
    own = median([(float(r["seconds"]) - float(r["hv_seconds"])) / float(r["events"]) * 1000
                   for r in ours])
    per = median([float(r["seconds"]) / float(r["events"]) * 1000 for r in raw])
    return Row(name, f"{own:.3f} ms", f"{what} {per:.2f} ms", f"{own / per:.1%}",
               f"<= {limit_ms:g} ms", verdict(own <= limit_ms))


def libvirt_missing(rows: list[Row], name: str) -> bool:
    """True (and an n/a row) when libvirt-python cannot be imported."""
    try:
        import libvirt  # noqa: F401
    except ImportError:
        rows.append(Row(name, "n/a", "", "", "", "n/a: libvirt-python is not installed"))
        return True
    return False


def log(msg: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- rows
def bench_rebuild(scale: Scale, rows: list[Row]) -> None:
    """Rebuild rows (the chained history and the mixed one) and the RSS row."""
    hist = history_path(scale)
    ours = _rebuild_rows(rows, hist, es_history_path(scale), scale.domains, False,
                         scale.rebuild_repeats, "")
    rss = median([float(r["rss_mb"]) for r in ours])
    base = median([float(r["rss_before_mb"]) for r in ours])
    rows.append(Row(f"rebuild {scale.events // 1000:,}k events: peak RSS (VmHWM)",
                    f"{rss:,.0f} MB", f"es {ours[-1]['es_rss_mb']:,.0f} MB",
                    f"(at start {base:,.0f} MB)", "< 400 MB", verdict(rss < 400)))
    _rebuild_rows(rows, mixed_history_path(scale), es_mixed_history_path(scale),
                  scale.mixed_domains, True, scale.rebuild_repeats, " mixed, both policies,")
    bench_snapshot(hist, median([float(r["seconds"]) for r in ours]), scale.repeats, rows)


def _rebuild_rows(rows: list[Row], hist: Path, es_hist: Path, domains: int, mixed: bool,
                  repeats: int, what: str) -> list[dict[str, Any]]:
    """Rebuild of the history at ``hist`` (made once, cached) by the ledger, eventsourcing
    and the raw floor; appends the two ratio rows, returns the ledger's trials (each with
    eventsourcing's median RSS as ``es_rss_mb``)."""
    if not hist.exists():  # in a worker, like every measurement: this process stays small
        log(f"generating the{what or ' chained'} history of {domains:,} domains into {hist} "
            "(once; cached)")
        run_worker("generate", history=str(hist), domains=domains, mixed=mixed)
    if not es_hist.exists():
        log(f"copying the history into eventsourcing: {es_hist} (once; cached)")
        run_worker("generate_es", history=str(hist), es_history=str(es_hist))
    log(f"rebuild{what.rstrip(',')}: ours, eventsourcing and the raw floor x{repeats}")
    ours, es, raw = trials(repeats, ("rebuild_ours", {"history": str(hist)}),
                           ("rebuild_es", {"history": str(hist), "es_history": str(es_hist)}),
                           ("rebuild_raw", {"history": str(hist)}))
    r_ours = med_rate(ours)
    n = f"{int(ours[0]['events']) // 1000:,}k"
    rows.append(at_least(f"rebuild{what} {n} events vs raw scan+unpack", r_ours,
                         med_rate(raw), 0.5))
    rows.append(at_least(f"rebuild{what} {n} events vs eventsourcing", r_ours,
                         med_rate(es), 5))
    es_rss = median([float(r["rss_mb"]) for r in es])
    return [{**r, "es_rss_mb": es_rss} for r in ours]


def bench_snapshot(hist: Path, rebuild_seconds: float, repeats: int, rows: list[Row]) -> None:
    """Open-with-snapshot row (n/a when snapshots cannot be written yet)."""
    log("open with snapshot: preparing a copy with a snapshot")
    copy = hist.with_name(hist.stem + "-snapshot.db")
    remove_db(copy)
    try:
        prep = run_worker("snapshot_prepare", history=str(hist), copy=str(copy))
        if not prep.get("available"):
            rows.append(Row("open with snapshot vs full rebuild", "n/a", "n/a", "n/a",
                            "< 2%", f"n/a: {prep.get('why')}"))
            return
        (opens,) = trials(repeats, ("open_snapshot", {"copy": str(copy)}))
    finally:
        remove_db(copy)
    seconds = median([float(r["seconds"]) for r in opens])
    loaded = all(r["status"] == "loaded" and r["folded"] == 0 for r in opens)
    share = seconds / rebuild_seconds
    rows.append(Row("open with snapshot vs full rebuild", f"{seconds:.3f} s",
                    f"{rebuild_seconds:.2f} s", f"{share:.2%}", "< 2%",
                    verdict(share < 0.02 and loaded) + ("" if loaded else " (not loaded)")))


def bench_import(scale: Scale, rows: list[Row]) -> None:
    """Batched import rows."""
    hist = str(history_path(scale))
    kw = {"history": hist, "events": scale.import_events}
    log(f"batched import of {scale.import_events:,} events x{scale.repeats}")
    ours, raw, es = trials(scale.repeats, ("import_ours", kw), ("import_raw", kw),
                           ("import_es", kw))
    r_ours = med_rate(ours)
    n = f"{scale.import_events // 1000:,}k"
    rows.append(at_least(f"import {n} events, 10k/txn, vs raw executemany", r_ours,
                         med_rate(raw), 0.6))
    rows.append(at_least(f"import {n} events, 10k/txn, vs eventsourcing", r_ours,
                         med_rate(es), 3))


def bench_durable(scale: Scale, rows: list[Row]) -> None:
    """Durable single-write rows: a create as the ledger records it under each policy, and
    Ledger.create end to end (informational: the mock hypervisor's own file dominates)."""
    hist = str(history_path(scale))
    n = scale.creates
    log(f"durable single writes: {n:,} each x{scale.repeats}")
    independent, chained, raw, ledger = trials(
        scale.repeats, ("create_append", {"history": hist, "creates": n}),
        ("create_append", {"history": hist, "creates": n, "policy": "chained"}),
        ("raw_commit", {"history": hist, "creates": n}), ("create_ledger", {"creates": n}))
    r_ind, r_chained = med_rate(independent), med_rate(chained)
    r_raw, r_ledger = med_rate(raw), med_rate(ledger)
    rows.append(Row(f"{n:,} durable creates, independent (1 event each) vs raw commit loop",
                    f"{r_ind:,.0f}/s", f"{r_raw:,.0f}/s", f"{r_ind / r_raw:.2f}x",
                    ">= 0.8x", verdict(r_ind >= 0.8 * r_raw)))
    rows.append(Row(f"{n:,} durable creates, chained (4 events each) vs raw commit loop",
                    f"{r_chained:,.0f}/s", f"{r_raw:,.0f}/s", f"{r_chained / r_raw:.2f}x", "-",
                    "info"))
    rows.append(Row(f"{n:,} x Ledger.create on the mock hypervisor, end to end",
                    f"{r_ledger:,.0f}/s", f"{r_raw:,.0f}/s", f"{r_ledger / r_raw:.2f}x", "-",
                    "info"))


def bench_plan(scale: Scale, rows: list[Row]) -> None:
    """Plan row: the same plan beside few vs many other domains."""
    few, many = scale.others
    log(f"plan through a {scale.chain:,}-checkpoint chain, {few} vs {many:,} other domains")
    r_few, r_many = trials(scale.repeats, ("plan", {"chain": scale.chain, "others": few}),
                           ("plan", {"chain": scale.chain, "others": many}))
    t_few = median([float(r["seconds"]) for r in r_few])
    t_many = median([float(r["seconds"]) for r in r_many])
    ratio = t_many / t_few
    rows.append(Row(f"plan, {scale.chain:,}-cp chain: {many:,} vs {few} other domains",
                    f"{t_many * 1000:.2f} ms", f"{t_few * 1000:.2f} ms", f"{ratio:.2f}x",
                    "0.8-1.25x", verdict(0.8 <= ratio <= 1.25)))


def bench_replay(scale: Scale, rows: list[Row]) -> None:
    """Replay rows in libvirt's test driver (``--libvirt-uri`` for another): one long chain
    against the raw REDEFINE loop, the ledger's own cost per checkpoint, and many domains
    replayed at once against the raw loop doing them one after another."""
    uri = LIBVIRT_URI[0]
    if libvirt_missing(rows, "replay"):
        return
    chain = scale.replay_chain
    log(f"replay of a {chain:,}-checkpoint chain into {uri} x{scale.libvirt_repeats}")
    one = {"uri": uri, "domains_": 1, "chain": chain}
    ours, raw = trials(scale.libvirt_repeats, ("replay_ours", one), ("replay_raw", one))
    rows.append(at_least(f"replay, {chain:,}-cp chain, {uri} vs raw REDEFINE loop",
                         med_rate(ours), med_rate(raw), 0.95, " cp/s"))
    rows.append(own_cost(f"replay, {chain:,}-cp chain: the ledger's own cost per checkpoint",
                         ours, raw, "REDEFINE", 0.3))
    count, each = scale.replay_domains
    log(f"replay of {count} domains x {each} checkpoints, --jobs 4 vs one at a time "
        f"x{scale.repeats}")
    many = {"uri": uri, "domains_": count, "chain": each}
    par, seq, raw_many = trials(scale.repeats, ("replay_ours", {**many, "jobs": 4}),
                                ("replay_ours", {**many, "jobs": 1}), ("replay_raw", many))
    r_rawm = med_rate(raw_many)
    rows.append(at_least(f"replay, {count} domains x {each} cp, --jobs 4 vs raw loop in turn",
                         med_rate(par), r_rawm, 1.5, " cp/s"))
    rows.append(at_least(f"replay, {count} domains x {each} cp, --jobs 1 vs raw loop in turn",
                         med_rate(seq), r_rawm, 0.95, " cp/s"))


def bench_create_libvirt(scale: Scale, rows: list[Row]) -> None:
    """Create rows on libvirt: ``Ledger.create`` against the raw call + one durable INSERT,
    and the ledger's own cost of a create on a memory store (no durable commit): its code
    with libvirt's answers given back at once (the row with a target), between real libvirt
    calls, and with each answer given back after a busy loop as long as libvirt's call."""
    uri = LIBVIRT_URI[0]
    if libvirt_missing(rows, "create"):
        return
    n = scale.creates // 5
    log(f"{n} x Ledger.create on {uri} vs the raw call + a durable INSERT x{scale.repeats}")
    kw = {"uri": uri, "creates": n}
    ours, mem, raw = trials(scale.repeats, ("create_libvirt_ours", kw),
                            ("create_libvirt_ours", {**kw, "store": "memory"}),
                            ("create_libvirt_raw", kw))
    rows.append(at_least(f"{n} x Ledger.create, {uri} + SQLite vs raw call + durable INSERT",
                         med_rate(ours), med_rate(raw), 0.9, "/s"))
    answered, paused = trials(scale.repeats, ("create_answered_ours", kw),
                              ("create_answered_ours", {**kw, "pause": True}))
    rows.append(own_cost("Ledger.create: its own cost (libvirt's answers given at once, no commit)",
                         answered, raw, "raw create", 0.15))
    for label, got in (("  the same between real libvirt calls (a cold CPU)", mem),
                       ("  the same after a busy loop as long as libvirt's call", paused)):
        row = own_cost(label, got, raw, "raw create", 0.15)
        rows.append(replace(row, target="", result="diagnostic"))


LIBVIRT_URI = ["test:///default"]

BENCHES: dict[str, Callable[[Scale, list[Row]], None]] = {
    "rebuild": bench_rebuild, "import": bench_import, "durable": bench_durable,
    "plan": bench_plan, "replay": bench_replay, "create": bench_create_libvirt,
}


# --------------------------------------------------------------------------- table
def table(rows: list[Row]) -> str:
    """The rows as an aligned text table."""
    head = Row("benchmark", "ours", "reference", "ratio", "target", "result")
    cells = [[head.name, head.ours, head.reference, head.ratio, head.target, head.result]]
    cells += [[r.name, r.ours, r.reference, r.ratio, r.target, r.result] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(5)]
    lines = []
    for k, c in enumerate(cells):
        parts = [c[0].ljust(widths[0])] + [c[i].rjust(widths[i]) for i in range(1, 5)]
        lines.append("  ".join(parts) + "  " + c[5])
        if k == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


def profile(top: int) -> None:
    """cProfile a 100,000-event rebuild (``Ledger.open``); print the top costs."""
    import cProfile
    import pstats

    from ledger.app.ledger import Ledger

    from .gen import ensure_history

    hist = history_path(QUICK)
    ensure_history(hist, QUICK.domains)
    prof = cProfile.Profile()
    prof.enable()
    lg = Ledger.open(f"sqlite:///{hist}", use_snapshot=False, snapshot_every=0)
    prof.disable()
    print(f"cProfile of Ledger.open on {lg.position:,} events ({hist.name})")
    lg.close()
    stats = pstats.Stats(prof, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and print the table."""
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10x smaller (100k-event rebuild)")
    ap.add_argument("--only", action="append", choices=sorted(BENCHES),
                    help="run only this benchmark (repeatable)")
    ap.add_argument("--profile", action="store_true",
                    help="cProfile a 100k-event rebuild instead of the table")
    ap.add_argument("--top", type=int, default=25, help="rows of the profile to print")
    ap.add_argument("--libvirt-uri", default=LIBVIRT_URI[0],
                    help="where the replay and create rows run (default: libvirt's test "
                         "driver; the create rows need domains that take checkpoints: "
                         "use it with --only replay for libvirtd)")
    args = ap.parse_args(argv)
    LIBVIRT_URI[0] = args.libvirt_uri
    if args.profile:
        profile(args.top)
        return 0
    scale = QUICK if args.quick else FULL
    load_before = load_average()
    started = time.perf_counter()
    rows: list[Row] = []
    for name, bench in BENCHES.items():
        if args.only and name not in args.only:
            continue
        try:
            bench(scale, rows)
        except Exception as e:  # report the rest of the table all the same
            log(f"{name} failed: {e}")
            rows.append(Row(name, "error", "", "", "", f"ERROR: {str(e).splitlines()[0]}"))
    env = environment()
    cmd = "python -m bench.run" + (" --quick" if args.quick else "")
    print(f"ckpt-ledger benchmark ({scale.name}: `{cmd}`), "
          f"{time.perf_counter() - started:,.0f} s")
    print(" ".join(f"{k} {v}" for k, v in env.items()))
    print(f"load average before {load_before}, after {load_average()}")
    print(table(rows))
    print("ratios are ours / reference (plan: many / few, RSS: absolute); medians of "
          f"{scale.repeats} interleaved trials ({scale.rebuild_repeats} for the rebuilds, "
          f"{scale.libvirt_repeats} for the replay chain), "
          "each in a fresh interpreter.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
