"""copy and follow: move a whole ledger between backends, and tail it as events commit."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import typer

from ledger import EventStore, Ledger, LedgerError
from ledger.app.copying import CopyReport, copy_store, verify_copy
from ledger.app.defaults import default_store_url
from ledger.app.plugins import open_store, scheme_of
from ledger.app.staging import staged_target

from .output import handles_errors, print_json, progress_bar

FOLLOW_COLUMNS = (("Position", 8), ("Recorded at", 20), ("Domain", 16), ("Type", 19),
                  ("Version", 7), ("Actor", 0))


MAX_POSITION = (1 << 63) - 1  # the stores' position type: a signed 64-bit integer


def _open_for_copy(url: str, role: str) -> EventStore:
    """The store at ``url`` (the source read-only); memory:// is refused (it lives and dies
    in one process)."""
    if scheme_of(url) == "memory":
        raise LedgerError(
            "STORE_URL",
            f"cannot copy {role} '{url}': a memory:// store lives inside one process, so the "
            "CLI cannot reach it (use sqlite:///, msgpack:/// or postgresql://)",
        )
    store: EventStore = open_store(url, readonly=role == "from")
    return store


def _adding(told: Callable[[int, int], None] | None, total: int
            ) -> Callable[[int], None] | None:
    """A callback of ``n`` more done (what copy_store and verify_copy tell) for a
    :func:`progress_bar` told ``(done, total)``."""
    if told is None:
        return None
    done = 0

    def more(n: int) -> None:
        nonlocal done
        done += n
        told(done, total)

    return more


def _summary(report: CopyReport) -> str:
    v = report.verify
    line = (f"copied {report.events} events in {report.streams} streams "
            f"from {report.source} to {report.target}")
    if v is None:
        return line
    if v.identical:
        return line + f"; verified: identical (sha256 {v.source_digest[:16]})"
    return line


def _row(cells: list[Any]) -> str:
    out = []
    for (_, width), cell in zip(FOLLOW_COLUMNS, cells, strict=True):
        out.append(str(cell).ljust(width))
    return (" " + "   ".join(out)).rstrip()


def register(app: typer.Typer) -> None:
    """Add ``copy`` and ``follow`` to ``app``."""

    @app.command("copy")
    @handles_errors
    def copy_cmd(
        ctx: typer.Context,
        source: str = typer.Option(..., "--from", metavar="URL",
                                   help="The store to copy (sqlite, msgpack or postgresql)."),
        target: str = typer.Option(..., "--to", metavar="URL",
                                   help="An empty store to copy into (created if absent)."),
        json_out: bool = typer.Option(False, "--json", help="Print only JSON on stdout."),
    ) -> None:
        """Copy a whole ledger to another backend, then verify the copy record by record.

        Stream ids and names, stream versions, types, schema versions, recording times,
        payloads and positions are kept. The target must be empty. The source's hash chain
        is verified before anything is written; exit status 1, and the target left as it
        was, if it is broken or the copy does not hold exactly the source's events.

        Example: ckpt-ledger copy --from sqlite:///ledger.db --to postgresql://db/ledger
        """
        src = _open_for_copy(source, "from")
        try:
            with staged_target(target, lambda url: _open_for_copy(url, "to")) as dst:
                label = str(getattr(dst, "display", None) or target)
                total = src.last_position()
                with progress_bar(ctx, "Copying") as told:
                    report = copy_store(src, dst, verify=False,
                                        progress=_adding(told, total))
                with progress_bar(ctx, "Verifying") as told:
                    result = verify_copy(src, dst, upto=total, progress=_adding(told, total))
                if not result.identical:
                    why = result.mismatch.describe() if result.mismatch else "the digests differ"
                    raise LedgerError("STORE_ERROR", f"the copy differs from the source: {why}; "
                                      f"the target {target} was left as it was")
        finally:
            src.close()
        report = replace(report, verify=result, target=label)
        if json_out:
            print_json(report.to_dict(), "copy")
        else:
            typer.echo(_summary(report))

    @app.command("follow")
    @handles_errors
    def follow_cmd(
        ctx: typer.Context,
        after: int | None = typer.Option(
            None, "--after", metavar="POSITION", min=0, max=MAX_POSITION,
            help="Start after this position (default: the current end, so only new "
            "events; 0 for every event)."),
        domain: str | None = typer.Option(None, "--domain", "-d",
                                          help="Only this domain's events (name or UUID).",
                                          metavar="DOMAIN"),
        jsonl: bool = typer.Option(False, "--jsonl", help="One JSON object per line."),
        timeout: float | None = typer.Option(
            None, "--timeout", metavar="SECONDS", min=0.0,
            help="Stop after this many seconds without a new event (default: never)."),
    ) -> None:
        """Print events as they are committed, until Ctrl-C (or --timeout of quiet).

        PostgreSQL stores are tailed with LISTEN/NOTIFY; other stores are polled five times
        a second.
        """
        store = open_store(ctx.obj.store or default_store_url(create=False), readonly=True)
        with Ledger(store, readonly=True) as lg:
            start = store.last_position() if after is None else after
            if not jsonl:
                names = [name for name, _ in FOLLOW_COLUMNS]
                typer.echo(_row(names))
                typer.echo("-" * (len(_row(names)) + 8))
                sys.stdout.flush()
            try:
                for view in lg.follow(after=start, timeout=timeout):
                    if domain is not None and domain not in (view.domain, view.stream_id):
                        continue
                    if jsonl:
                        line = json.dumps(view.model_dump(mode="json"), ensure_ascii=False)
                    else:
                        line = _row([view.position, view.recorded_at, view.domain, view.type,
                                     view.stream_version, view.actor])
                    sys.stdout.write(line + "\n")
                    sys.stdout.flush()
            except KeyboardInterrupt:
                return
