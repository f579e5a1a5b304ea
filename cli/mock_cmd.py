"""``ckpt-ledger mock ...``: drive the simulated hypervisor (define, start, write ...)."""

from __future__ import annotations

import re

import typer

from adapters.mock import MockHypervisor
from ledger import LedgerError
from ledger.app.plugins import open_hypervisor

from .output import handles_errors, print_json

app = typer.Typer(help="The mock hypervisor: simulated domains, disks, bitmaps and writes.",
                  no_args_is_help=True)


def _mock(ctx: typer.Context) -> MockHypervisor:
    uri = ctx.obj.hypervisor
    if not uri:
        raise LedgerError("NO_CONNECT", "mock commands need a mock hypervisor",
                          hint="pass --hypervisor mock:///path/state.json")
    hv = open_hypervisor(uri)
    if not isinstance(hv, MockHypervisor):
        hv.close()
        raise LedgerError("STORE_URL", f"'{uri}' is not a mock hypervisor (mock:///path/state.json)")
    return hv


def _size(text: str, what: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower()
    mult = 1
    if t and t[-1] in units:
        mult, t = units[t[-1]], t[:-1]
    if not re.fullmatch(r"[0-9]{1,19}", t, re.ASCII):
        raise LedgerError("INVALID_ARG", f"{what} must be a number of bytes (e.g. 65536, 64k, "
                          "1M) below 2^63")
    return int(t) * mult


@app.command()
@handles_errors
def define(
    ctx: typer.Context,
    domain: str = typer.Argument(..., metavar="DOMAIN"),
    disk: list[str] = typer.Option(..., "--disk", metavar="NAME[:qcow2|raw][:ro|empty]",
                                   help="A 1 GiB disk; repeatable."),
    policy: str = typer.Option("independent", "--policy",
                               help="chained (libvirt 5.6-6.4) or independent (>= 6.5).",
                               metavar="POLICY"),
    shut_off: bool = typer.Option(False, "--shut-off", help="Define it shut off."),
    uuid: str | None = typer.Option(None, "--uuid", metavar="UUID"),
) -> None:
    """Define a domain on the mock hypervisor."""
    if policy not in ("chained", "independent"):
        raise LedgerError("INVALID_ARG", f"--policy must be chained or independent, not {policy!r}")
    info = _mock(ctx).define(domain, disk, policy, not shut_off, uuid)  # type: ignore[arg-type]
    state = "shut off" if shut_off else "running"
    typer.echo(f"Domain {info.name} defined ({info.uuid}, {policy} policy, {state})")


@app.command()
@handles_errors
def start(ctx: typer.Context, domain: str = typer.Argument(..., metavar="DOMAIN")) -> None:
    """Start a domain."""
    _mock(ctx).set_running(domain, True)
    typer.echo(f"Domain {domain} started")


@app.command()
@handles_errors
def stop(ctx: typer.Context, domain: str = typer.Argument(..., metavar="DOMAIN")) -> None:
    """Shut a domain off cleanly."""
    _mock(ctx).set_running(domain, False)
    typer.echo(f"Domain {domain} shut off")


@app.command()
@handles_errors
def write(
    ctx: typer.Context,
    domain: str = typer.Argument(..., metavar="DOMAIN"),
    disk: str = typer.Argument(..., metavar="DISK"),
    offset: str = typer.Argument(..., help="Bytes (suffix k, M, G allowed).", metavar="OFFSET"),
    length: str = typer.Argument(..., help="Bytes (suffix k, M, G allowed).", metavar="LENGTH"),
) -> None:
    """A guest write: dirties every recording bitmap on the disk."""
    n = _mock(ctx).write(domain, disk, _size(offset, "OFFSET"), _size(length, "LENGTH"))
    typer.echo(f"Wrote {length} bytes at {offset} on {disk} ({n} cluster{'' if n == 1 else 's'})")


@app.command()
@handles_errors
def extents(
    ctx: typer.Context,
    domain: str = typer.Argument(..., metavar="DOMAIN"),
    disk: str = typer.Argument(..., metavar="DISK"),
    bitmap: list[str] = typer.Argument(..., help="Bitmaps to merge.", metavar="BITMAP"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """The dirty byte ranges of the merged bitmaps (what an incremental backup would copy)."""
    ranges = _mock(ctx).extents(domain, disk, bitmap)
    if json_out:
        print_json({"disk": disk, "bitmaps": bitmap, "extents": [list(r) for r in ranges]},
                   "mock-extents")
        return
    for off, length in ranges:
        typer.echo(f"{off:>12} {length:>12}  dirty")


@app.command("remove-bitmap")
@handles_errors
def remove_bitmap(
    ctx: typer.Context,
    domain: str = typer.Argument(..., metavar="DOMAIN"),
    disk: str = typer.Argument(..., metavar="DISK"),
    bitmap: str = typer.Argument(..., metavar="BITMAP"),
) -> None:
    """Remove a bitmap behind the metadata's back (like qemu-img bitmap --remove)."""
    _mock(ctx).remove_bitmap(domain, disk, bitmap)
    typer.echo(f"Bitmap {bitmap} removed from {disk}")


@app.command("lose-metadata")
@handles_errors
def lose_metadata(ctx: typer.Context, domain: str = typer.Argument(..., metavar="DOMAIN")) -> None:
    """Forget every checkpoint's metadata, keep the bitmaps (a rebuilt host)."""
    _mock(ctx).forget_checkpoints(domain)
    typer.echo(f"Checkpoint metadata of {domain} forgotten; bitmaps kept")


@app.command("backup")
@handles_errors
def backup(
    ctx: typer.Context,
    domain: str = typer.Argument(..., metavar="DOMAIN"),
    folder: str = typer.Argument(..., help="Where the job writes each disk's data.",
                                 metavar="FOLDER"),
    incremental: str | None = typer.Option(None, "--incremental", metavar="CHECKPOINT",
                                           help="Only what was written since it."),
    checkpoint: str | None = typer.Option(None, "--checkpoint", metavar="NAME",
                                          help="Create this checkpoint with the job."),
    disk: list[str] = typer.Option([], "--disk", help="Disks to back up (default: all).",
                                   metavar="DISK"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """A push-mode backup job run to its end, as a backup tool starts one with libvirt's
    virDomainBackupBegin (the ledger learns of it at the next import)."""
    job = _mock(ctx).backup(domain, folder, incremental=incremental, checkpoint=checkpoint,
                            disks=disk or None)
    if json_out:
        print_json(job, "mock-job")
        return
    if job.outcome != "completed":
        raise LedgerError("OPERATION_FAILED", f"backup job {job.job} failed: {job.error}")
    kind = f"incremental since {incremental}" if incremental else "full"
    made = f", checkpoint {checkpoint} created" if checkpoint else ""
    typer.echo(f"Backup job {job.job} of {domain} completed ({kind}, {job.bytes} bytes{made})")


@app.command("checkpoints")
@handles_errors
def checkpoints(ctx: typer.Context, domain: str = typer.Argument(..., metavar="DOMAIN"),
                json_out: bool = typer.Option(False, "--json")) -> None:
    """The mock's own checkpoint metadata (parents first), to compare with the ledger."""
    hv = _mock(ctx)
    names = hv.list_checkpoints(domain)
    if json_out:
        print_json({"domain": domain, "checkpoints": names, "current": hv.current(domain)},
                   "mock-checkpoints")
    else:
        for n in names:
            typer.echo(n)
