"""The integrity commands: ``verify-log``, ``head``, ``rebuild``, ``export``, ``import-log``.

They work on the event store itself (ledger/app/integrity.py, ledger/app/rebuild.py) and never
need a hypervisor.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import typer

from ledger import EventStore, Ledger, LedgerError
from ledger.app.defaults import default_store_url, require_events
from ledger.app.integrity import (
    ExportFormat,
    export_log,
    head,
    import_log,
    parse_anchor,
    verify_store,
)
from ledger.app.plugins import open_store
from ledger.app.rebuild import rebuild

from .output import JSON, fail, handles_errors, print_json, progress_bar


@contextmanager
def _store(
    ctx: typer.Context, readonly: bool = False, existing: bool = False
) -> Iterator[EventStore]:
    """The store the options name (``existing``: refused when it holds no events)."""
    url = ctx.obj.store or default_store_url(create=not readonly)
    store: EventStore = open_store(url, readonly=readonly)
    try:
        if existing:
            require_events(store)
        yield store
    finally:
        store.close()


def register(app: typer.Typer) -> None:
    """Add ``verify-log``, ``head``, ``rebuild``, ``export`` and ``import-log`` to ``app``."""

    @app.command("verify-log")
    @handles_errors
    def verify_log(
        ctx: typer.Context,
        anchor: str | None = typer.Option(
            None, "--anchor", metavar="POSITION:HASH",
            help="Also require this position to hold this hash (from an earlier "
            "`ckpt-ledger head`): catches a rewritten or truncated log."),
        json_out: bool = JSON,
    ) -> None:
        """Check the hash chain of every event (and an anchor), and that the snapshot is
        what the events up to its position fold to.

        Exit status 0 when intact; 1 with one line naming the first bad position (or the
        snapshot's position and the first domain that differs) otherwise. Writes nothing.

        Example: ckpt-ledger verify-log --anchor 1200:3f9a...
        """
        pinned = parse_anchor(anchor) if anchor is not None else None
        with _store(ctx, readonly=True, existing=True) as store, \
                progress_bar(ctx, "Checking") as progress:
            report = verify_store(store, pinned, progress=progress)
        if json_out:
            print_json(report.to_dict(), "verify-log")
        elif report.ok:
            typer.echo(report.line())
        if not report.ok:
            raise fail(report.line())

    @app.command("head")
    @handles_errors
    def head_cmd(ctx: typer.Context, json_out: bool = JSON) -> None:
        """The newest event's position and hash, as POSITION:HASH (an anchor for verify-log).

        Example: ckpt-ledger head
        """
        with _store(ctx, readonly=True, existing=True) as store:
            position, digest = head(store)
        if json_out:
            print_json({"position": position, "hash": digest}, "head")
        else:
            typer.echo(f"{position}:{digest}")

    @app.command("rebuild")
    @handles_errors
    def rebuild_cmd(ctx: typer.Context, json_out: bool = JSON) -> None:
        """Recompute every projection from the events, compare with the snapshot, save anew.

        Example: ckpt-ledger rebuild
        """
        with _store(ctx) as store, progress_bar(ctx, "Folding") as progress:
            report = rebuild(store, progress=progress)
        if json_out:
            print_json(report.to_dict(), "rebuild")
        else:
            typer.echo(report.line())

    @app.command("export")
    @handles_errors
    def export_cmd(
        ctx: typer.Context,
        file: str = typer.Argument(..., metavar="FILE", help="Where to write (- for stdout)."),
        format_: str = typer.Option("jsonl", "--format", help="jsonl or msgpack.",
                                    metavar="FORMAT"),
        domain: str | None = typer.Option(
            None, "--domain", help="Only this domain's events (such a file cannot be "
            "imported with import-log).", metavar="DOMAIN"),
        json_out: bool = JSON,
    ) -> None:
        """Write every event, with its hash, to a deterministic file (same ledger, same bytes).

        Example: ckpt-ledger export ledger-2026-12-04.jsonl
        """
        if format_ not in ("jsonl", "msgpack"):
            raise LedgerError("INVALID_ARG", f"--format must be jsonl or msgpack, not "
                              f"'{format_}'")
        fmt: ExportFormat = "jsonl" if format_ == "jsonl" else "msgpack"
        stream_id = name = None
        if domain is not None:
            with Ledger.open(store=ctx.obj.store, snapshot_every=0, readonly=True) as lg:
                state = lg.states.get(domain) or lg.state(domain)
                stream_id, name = state.stream_id, state.name
        with _store(ctx, readonly=True) as store, progress_bar(ctx, "Exporting") as progress:
            summary = export_log(store, file, fmt, stream_id, name, progress)
        _say(summary.to_dict(), "export", json_out and file != "-",
             f"exported {summary.events} events (head {summary.head_position}:"
             f"{summary.head_hash}) to {file}", to_stderr=file == "-")

    @app.command("import-log")
    @handles_errors
    def import_log_cmd(
        ctx: typer.Context,
        file: str = typer.Argument(..., metavar="FILE", help="A file written by `export`."),
        json_out: bool = JSON,
    ) -> None:
        """Verify an export, then append what the store is missing (its history must be a
        prefix of the file's); anything else is refused and nothing is written.

        Example: ckpt-ledger --store sqlite:///new.db import-log ledger-2026-12-04.jsonl
        """
        with _store(ctx) as store, progress_bar(ctx, "Importing") as progress:
            summary = import_log(store, file, progress)
        _say(summary.to_dict(), "import-log", json_out,
             f"imported {summary.imported} events ({summary.present} already present); "
             f"head {summary.head_position}:{summary.head_hash}")


def _say(data: Mapping[str, Any], shape: str, as_json: bool, line: str,
         to_stderr: bool = False) -> None:
    if as_json:
        print_json(data, shape)
    elif to_stderr:
        sys.stderr.write(line + "\n")
    else:
        typer.echo(line)

