"""The audit commands: ``log`` (filtered history), ``history`` (one checkpoint's life) and
``timeline`` (an SVG/HTML picture of a domain's bitmaps over time)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from ledger import Ledger, LedgerError
from ledger.app.audit import LogFilter, summary
from ledger.present.timeline import render_html, render_svg
from ledger.present.timeline import write as write_page

from .errors import usage_error
from .output import JSON, handles_errors, print_json, shown, stream_table

POINT_HELP = "An event POSITION or a time (ISO 8601, e.g. 2026-11-29T18:00:00Z; naive = UTC)."


def _open(ctx: typer.Context) -> Ledger:
    """The ledger, read-only: every command here only reads."""
    lg: Ledger = ctx.obj.open(readonly=True)
    return lg


def check_out(out: Path) -> str:
    """The output format (``svg`` or ``html``) of ``--out``; INVALID_ARG when unusable."""
    kind = out.suffix.lower().lstrip(".")
    if kind not in ("svg", "html"):
        raise LedgerError("INVALID_ARG", f"--out {out} must end in .svg or .html")
    folder = out.parent
    if not folder.is_dir():
        raise LedgerError("INVALID_ARG", f"--out {out}: directory {folder} does not exist")
    if out.is_dir():
        raise LedgerError("INVALID_ARG", f"--out {out} is a directory")
    return kind


def _stream_json(rows: Iterator[dict[str, Any]], lines: bool) -> None:
    """``rows`` on stdout as they come: one per line, or as one JSON array laid out as
    ``print_json`` lays it out."""
    write = sys.stdout.write
    if lines:
        for row in rows:
            write(json.dumps(row, ensure_ascii=False) + "\n")
        return
    first = True
    for row in rows:
        text = json.dumps(row, indent=2, ensure_ascii=False).replace("\n", "\n  ")
        write(("[\n  " if first else ",\n  ") + text)
        first = False
    write("[]\n" if first else "\n]\n")


def register(app: typer.Typer) -> None:
    """Add ``log``, ``history`` and ``timeline`` to ``app``."""

    @app.command()
    @handles_errors
    def log(
        ctx: typer.Context,
        domain: str | None = typer.Option(None, "--domain", metavar="NAME",
                                          help="Only this domain's events."),
        disk: list[str] = typer.Option([], "--disk", metavar="DISK",
                                       help="Events about this disk; repeatable."),
        checkpoint: list[str] = typer.Option(
            [], "--checkpoint", metavar="NAME", help="Events about this checkpoint; repeatable."),
        type_: list[str] = typer.Option(
            [], "--type", metavar="TYPE", help="Only this event type (CheckpointCreated ...); "
            "repeatable."),
        actor: list[str] = typer.Option(
            [], "--actor", metavar="ACTOR",
            help="Only events recorded by this actor (shell wildcards); repeatable."),
        since: str | None = typer.Option(None, "--since", metavar="POS|TIME", help=POINT_HELP),
        until: str | None = typer.Option(None, "--until", metavar="POS|TIME", help=POINT_HELP),
        json_out: bool = JSON,
        jsonl: bool = typer.Option(False, "--jsonl", help="One JSON event per line."),
    ) -> None:
        """Every event, oldest first, or those matching the filters (all must hold).

        Example: ckpt-ledger log --domain web01 --since 2026-12-01 --type CheckpointDeleted
        """
        if json_out and jsonl:
            raise usage_error("--json and --jsonl are mutually exclusive")
        flt = LogFilter.from_options(domain, disk, checkpoint, type_, actor, since, until)
        with _open(ctx) as lg:
            events = lg.iter_log(filter=flt)  # streamed: any length in constant memory
            if json_out or jsonl:
                _stream_json((e.model_dump(mode="json") for e in events), lines=jsonl)
                return
            stream_table(
                ["Pos", "Recorded", "Domain", "Event", "What", "Actor", "Reason"],
                ([e.position, e.recorded_at, e.domain, e.type, summary(e.event), e.actor,
                  e.reason or ""] for e in events), optional_last=True)

    @app.command()
    @handles_errors
    def history(
        ctx: typer.Context,
        domain: str = typer.Argument(..., metavar="DOMAIN"),
        name: str = typer.Argument(..., help="The checkpoint (it may have been deleted).",
                                   metavar="NAME"),
        json_out: bool = JSON,
    ) -> None:
        """The whole life of one checkpoint: created, its bitmaps' changes, reparented, deleted.

        Example: ckpt-ledger history web01 chk1
        """
        with _open(ctx) as lg:
            facts = lg.history(domain, name)
        if json_out:
            print_json(facts, "history-entry")
            return
        for f in facts:
            why = f" ({f.reason})" if f.reason else ""
            typer.echo(shown(f"#{f.position:<4} {f.recorded_at}  {f.what:<18} {f.detail}  "
                             f"[{f.actor} on {f.host}, {f.tool}]{why}"))

    @app.command()
    @handles_errors
    def timeline(
        ctx: typer.Context,
        domain: str = typer.Argument(..., metavar="DOMAIN"),
        out: Path = typer.Option(..., "--out", "-o", metavar="FILE.svg|FILE.html",
                                 help="Where to write the picture (.svg, or .html embedding it)."),
    ) -> None:
        """Draw the domain's bitmaps over time: one lane per disk, one bar per bitmap.

        Example: ckpt-ledger timeline web01 --out web01.svg
        """
        kind = check_out(out)
        with _open(ctx) as lg:
            events = lg.log(domain)
        svg = render_svg(events, domain)
        text = svg if kind == "svg" else render_html(svg, f"ckpt-ledger timeline: {domain}")
        write_page(out, text)
        typer.echo(f"Timeline of {domain} ({len(events)} events) written to {out}")
