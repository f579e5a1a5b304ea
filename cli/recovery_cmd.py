"""import, import-xml, replay and verify: learning from and restoring to a hypervisor."""

from __future__ import annotations

from pathlib import Path

import typer

from ledger import Ledger
from ledger.app.recovery import SNAPSHOT_MISMATCH

from .output import JSON, handles_errors, print_json, progress_bar, table

DRIFT_EXIT = 3
DEFAULT_JOBS = 4  # libvirtd serves domains in parallel; four keep two cores busy


def _open(ctx: typer.Context, readonly: bool = False, existing: bool = False) -> Ledger:
    lg: Ledger = ctx.obj.open(readonly=readonly, existing=existing)
    return lg


def register(app: typer.Typer) -> None:
    """Add the recovery commands to ``app``."""

    @app.command("import")
    @handles_errors
    def import_(
        ctx: typer.Context,
        domains: list[str] = typer.Argument(None, help="Domains (default: all on the host).",
                                            metavar="DOMAIN"),
        json_out: bool = JSON,
    ) -> None:
        """Bring the ledger up to what the host shows: checkpoints made or changed by other
        tools are recorded as observed; ones gone with their bitmaps as deleted outside; ones
        whose bitmaps remain are kept (the host lost its metadata: replay restores them).

        Example: ckpt-ledger -c qemu:///system import web01
        """
        with _open(ctx) as lg, progress_bar(ctx, "Importing") as progress:
            reports = lg.import_(domains or (), progress=progress)
        if json_out:
            print_json(reports, "import")
            return
        for r in reports:
            typer.echo(f"{r.domain}: {len(r.added)} added, {len(r.changed)} changed outside the "
                       f"ledger, {len(r.unchanged)} already known")
            for n in r.added:
                typer.echo(f"  {n}: on the host, not in the ledger (recorded as observed)")
            for n in r.changed:
                typer.echo(f"  {n}: changed outside the ledger (recorded as observed)")
            for n in r.replaced:
                typer.echo(f"  {n}: the name now belongs to another checkpoint (the old one "
                           "recorded gone, the new one observed)")
            for n in r.deleted_outside:
                typer.echo(f"  {n}: deleted outside the ledger, its bitmaps gone too "
                           "(recorded gone: replay will not restore it)")
            for n in r.deleted:
                typer.echo(f"  {n}: deleted by an interrupted delete (recorded gone)")
            for n in r.missing_on_host:
                typer.echo(f"  {n}: not on the host, its bitmaps still in the images (host "
                           "metadata lost: replay restores it)")
            for s in r.settled:
                typer.echo(f"  interrupted {s} (recorded)")
            if r.backups:
                typer.echo(f"  {len(r.backups)} backup job(s) the host ran, recorded as "
                           "observed (ckpt-ledger backups)")

    @app.command("import-xml")
    @handles_errors
    def import_xml(
        ctx: typer.Context,
        domain: str = typer.Argument(..., metavar="DOMAIN"),
        directory: Path = typer.Argument(..., help="A folder of checkpoint *.xml files.",
                                         metavar="DIR"),
        json_out: bool = JSON,
    ) -> None:
        """Import checkpoint XML files (libvirt's or virtnbdbackup's), parents first.

        Example: ckpt-ledger import-xml web01 /backup/web01/checkpoints
        """
        with _open(ctx) as lg, progress_bar(ctx, "Importing") as progress:
            report = lg.import_xml(domain, directory, progress=progress)
        if json_out:
            print_json(report, "import")
        else:
            typer.echo(f"{domain}: {len(report.added)} added, {len(report.changed)} changed, "
                       f"{len(report.unchanged)} already known")

    @app.command()
    @handles_errors
    def replay(
        ctx: typer.Context,
        domains: list[str] = typer.Argument(None, help="Domains (default: every one).",
                                            metavar="DOMAIN"),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan, touch nothing."),
        validate: bool = typer.Option(False, "--validate",
                                      help="REDEFINE_VALIDATE: libvirt checks the bitmaps."),
        overwrite: bool = typer.Option(False, "--overwrite",
                                       help="Replace checkpoints the host defines differently."),
        as_of: str | None = typer.Option(None, "--as-of", metavar="POSITION|TIME",
                                         help="Replay the chain as it stood then."),
        jobs: int = typer.Option(DEFAULT_JOBS, "--jobs", "-j", min=1, max=64,
                                 help="Domains replayed at once (each in order)."),
        json_out: bool = JSON,
    ) -> None:
        """Redefine the ledger's checkpoints into the hypervisor after a host loss.

        Several domains are replayed at once (--jobs); a domain that fails is reported and
        the others go on; the exit status is 1 when any failed.

        Example: ckpt-ledger -c qemu:///system replay --dry-run
        """
        with _open(ctx, existing=True) as lg, progress_bar(ctx, "Redefining") as progress:
            reports = lg.replay(domains or (), dry_run=dry_run, validate=validate,
                                overwrite=overwrite, as_of=as_of,
                                progress=None if dry_run else progress, jobs=jobs)
        failed = [r for r in reports if r.error]
        if json_out:
            print_json(reports, "replay")
            if failed:
                raise typer.Exit(1)
            return
        for r in reports:
            if r.error:
                typer.echo(f"{r.domain}: failed: {r.error}")
                continue
            verb = "would redefine" if r.dry_run else "redefined"
            todo = [s.name for s in r.steps if s.action == "redefine"]
            skipped = [s.name for s in r.steps if s.action == "skip"]
            typer.echo(f"{r.domain}: {verb} {len(todo)}, skipped {len(skipped)} already defined")
            rows = [(s.name, s.action, s.why or "") for s in r.steps]
            if rows:
                typer.echo(table(["Checkpoint", "Action", "Why"], rows))
            for n in r.unknown_on_host:
                typer.echo(f"  {n}: on the host but not in the ledger (left alone)")
        if failed:
            typer.echo(f"replay failed for {len(failed)} of {len(reports)} domain(s): "
                       + ", ".join(r.domain for r in failed), err=True)
            raise typer.Exit(1)

    @app.command()
    @handles_errors
    def verify(
        ctx: typer.Context,
        domains: list[str] = typer.Argument(None, help="Domains (default: every one).",
                                            metavar="DOMAIN"),
        record: bool = typer.Option(False, "--record", help="Append what was observed."),
        json_out: bool = JSON,
    ) -> None:
        """Compare the ledger, libvirt's metadata and the bitmaps in the images.

        Exit status 0 when all agree, 3 when they do not.

        Example: ckpt-ledger -c qemu:///system verify web01
        """
        with _open(ctx, readonly=not record, existing=True) as lg:
            reports = lg.verify(domains or (), record=record)
        if json_out:
            print_json(reports, "verify")
        else:
            for r in reports:
                typer.echo(f"{r.domain}: {'OK' if r.ok else f'{len(r.findings)} problem(s)'}")
                rows = [(f.kind, f.checkpoint or "-", f.disk or "-", f.bitmap or "-", f.detail)
                        for f in r.findings]
                if rows:
                    typer.echo(table(["Kind", "Checkpoint", "Disk", "Bitmap", "Detail"], rows))
                for cp, disks in r.unusable_plans.items():
                    for disk, why in disks.items():
                        typer.echo(f"  plan since {cp} on {disk}: full backup needed ({why})")
                if any(f.kind == SNAPSHOT_MISMATCH for f in r.findings):
                    typer.echo("  run `ckpt-ledger rebuild` to replace the snapshot")
                if r.recorded:
                    typer.echo(f"  recorded {r.recorded} observation(s) in the ledger")
        if not all(r.ok for r in reports):
            raise typer.Exit(DRIFT_EXIT)
