"""``ckpt-ledger backups`` and ``record-backup``: a domain's backup history."""

from __future__ import annotations

import signal
import threading
from typing import Literal

import typer

from ledger import Ledger, LedgerError
from ledger.app.audit import summary
from ledger.app.views import BackupDisk, BackupView

from .output import JSON, handles_errors, print_json, shown, table

Outcome = Literal["completed", "failed", "aborted"]


def parse_backup_disk(spec: str) -> BackupDisk:
    """``vda[,incremental=CHECKPOINT][,target=PATH]``."""
    name, *opts = spec.split(",")
    fields: dict[str, str] = {}
    for opt in opts:
        key, eq, value = opt.partition("=")
        if not eq or key not in ("incremental", "target") or key in fields or not value:
            raise LedgerError("INVALID_ARG", f"bad --disk {spec!r}: expected "
                              "NAME[,incremental=CHECKPOINT][,target=PATH]")
        fields[key] = value
    return BackupDisk(name=name, **fields)


def _size(view: BackupView) -> str:
    if view.bytes is None:
        return "-"
    n, unit = float(view.bytes), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            break
        n /= 1024
    return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"


def register(app: typer.Typer) -> None:
    """Add the backup history commands to ``app``."""

    @app.command()
    @handles_errors
    def backups(
        ctx: typer.Context,
        domain: str = typer.Argument(..., metavar="DOMAIN"),
        between: tuple[int, int] = typer.Option(
            (0, 0), "--between", metavar="N M",
            help="Every event from backup N's start to backup M's end, instead."),
        json_out: bool = JSON,
    ) -> None:
        """The domain's backup jobs: number, when, who, full or incremental and since which
        checkpoint, the checkpoint it created, bytes, duration and outcome.

        Example: ckpt-ledger backups web01 --between 17 18
        """
        lg: Ledger = ctx.obj.open(readonly=True)
        with lg:
            if between != (0, 0):
                events = lg.between_backups(domain, *between)
            else:
                jobs = lg.backups(domain)
        if between != (0, 0):
            if json_out:
                print_json(events, "event")
                return
            typer.echo(table(["Pos", "Recorded", "Event", "What", "Actor"],
                             [[e.position, e.recorded_at, e.type, summary(e.event),
                               e.actor] for e in events]))
            return
        if json_out:
            print_json(jobs, "backup")
            return
        rows = [[j.number, j.started_at,
                 f"{j.tool} (observed)" if j.source == "observed" and j.tool else
                 "observed on the host" if j.source == "observed" else
                 j.actor + (f" ({j.tool})" if j.tool else ""),
                 j.kind + (f" since {', '.join(j.since)}" if j.since else ""),
                 j.checkpoint or "-", _size(j),
                 "-" if j.seconds is None else f"{j.seconds:.1f} s",
                 j.outcome + (f": {j.error}" if j.error else "")] for j in jobs]
        typer.echo(table(["#", "Started", "Who", "Kind", "Created", "Bytes", "Took", "Outcome"],
                         rows))

    @app.command()
    @handles_errors
    def watch(
        ctx: typer.Context,
        domains: list[str] = typer.Argument(None, help="Domains (default: every one).",
                                            metavar="DOMAIN"),
        interval: float = typer.Option(10.0, "--interval", metavar="SECONDS",
                                       help="Poll at least this often (libvirt's job and "
                                       "lifecycle events wake it at once)."),
        once: bool = typer.Option(False, "--once", help="One poll, then exit."),
    ) -> None:
        """Record what other tools do on the host as they do it: checkpoints created,
        redefined or deleted, and backup jobs (started, ended, how), all as observed.
        Runs until SIGTERM or Ctrl-C; reconnects when libvirtd restarts.

        Example: ckpt-ledger -c qemu:///system watch --interval 10
        """
        if not 0.05 <= interval <= 86400:
            raise LedgerError("INVALID_ARG", "--interval must be 0.05 to 86400 seconds")
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        lg: Ledger = ctx.obj.open()
        with lg:
            recorded = lg.watch(domains or (), interval=interval, stop=stop, once=once,
                                say=lambda line: typer.echo(line, err=True))
        typer.echo(f"watch stopped: {recorded} event(s) recorded", err=True)

    @app.command("record-backup")
    @handles_errors
    def record_backup(
        ctx: typer.Context,
        domain: str = typer.Argument(..., metavar="DOMAIN"),
        job: str = typer.Argument(..., help="The job's id (the tool's, unique per domain).",
                                  metavar="JOB"),
        mode: str = typer.Option("push", "--mode", help="push or pull.", metavar="MODE"),
        disk: list[str] = typer.Option(
            [], "--disk", metavar="SPEC",
            help="NAME[,incremental=CHECKPOINT][,target=PATH]; repeatable."),
        checkpoint: str | None = typer.Option(None, "--checkpoint",
                                              help="The checkpoint the job created.",
                                              metavar="CHECKPOINT"),
        tool: str | None = typer.Option(None, "--tool", help="The tool that ran it.",
                                        metavar="TOOL"),
        target: str | None = typer.Option(None, "--target", help="Where the backup went.",
                                          metavar="TARGET"),
        outcome: str | None = typer.Option(
            None, "--outcome", help="completed, failed or aborted: the job ended.",
            metavar="OUTCOME"),
        size: int | None = typer.Option(None, "--bytes", min=0, max=(1 << 63) - 1,
                                        help="Bytes it moved."),
        seconds: float | None = typer.Option(None, "--seconds", help="How long it ran."),
        error: str | None = typer.Option(None, "--error", help="Why it failed.", metavar="ERROR"),
        reason: str | None = typer.Option(None, "--reason", metavar="WHY"),
        json_out: bool = JSON,
    ) -> None:
        """Record a backup job a tool ran (its start; with --outcome its end too; a job
        already recorded as started is only ended).

        Example: ckpt-ledger record-backup web01 job-42 --outcome completed
        """
        if mode not in ("push", "pull"):
            raise LedgerError("INVALID_ARG", f"--mode must be push or pull, not {mode!r}")
        if outcome is not None and outcome not in ("completed", "failed", "aborted"):
            raise LedgerError("INVALID_ARG", "--outcome must be completed, failed or aborted")
        disks = [parse_backup_disk(s) for s in disk]
        lg: Ledger = ctx.obj.open()
        with lg:
            view = lg.record_backup(
                domain, job, mode="pull" if mode == "pull" else "push", disks=disks,
                checkpoint=checkpoint, tool=tool, target=target,
                outcome=outcome,  # type: ignore[arg-type]  # checked above
                size=size, seconds=seconds, error=error, reason=reason)
        if json_out:
            print_json(view, "backup")
        else:
            typer.echo(shown(f"Backup {view.number} of {domain} ({view.job}) recorded: "
                             f"{view.outcome}"))
