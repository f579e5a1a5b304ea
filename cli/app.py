"""The ``ckpt-ledger`` command: global options and the entry point.

Every command is a thin wrapper over one :class:`ledger.Ledger` method.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import typer
import typer.main

from cli.argv import hoist_global_options
from cli.errors import ABORT, EXIT, NO_ARGS, USAGE, bad_parameter
from ledger import Ledger, LedgerError, __version__
from ledger.app import defaults
from ledger.app.config import file_settings
from ledger.app.defaults import require_events

from . import (
    audit_cmd,
    backups_cmd,
    commands,
    demo,
    info_cmd,
    integrity_cmd,
    mock_cmd,
    ops_cmd,
    recovery_cmd,
    streams,
)
from .output import handles_errors

app = typer.Typer(
    name="ckpt-ledger",
    help="An append-only, event-sourced ledger of libvirt disk checkpoints.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},  # every command, as virsh -h
)


@dataclass
class Settings:
    """The global options, handed to every command through the click context."""

    store: str | None
    hypervisor: str | None
    actor: str | None
    correlation_id: str | None = None
    lock_timeout: float | None = None
    origins: dict[str, str] = field(default_factory=dict)  # setting -> where it came from
    no_progress: bool = False

    def open(self, readonly: bool = False, existing: bool = False) -> Ledger:
        """Open the ledger these options name (``readonly``: for a read command;
        ``existing``: refuse a store that does not exist or holds no events, as a recovery
        or verify command must, so a mistyped URL is never a silent success)."""
        if existing:
            with Ledger.open(store=self.store, readonly=True) as probe:
                require_events(probe.store)
        return Ledger.open(store=self.store, hypervisor=self.hypervisor, actor=self.actor,
                           correlation_id=self.correlation_id or None,
                           lock_timeout=self.lock_timeout, readonly=readonly)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"ckpt-ledger {__version__}")
        raise typer.Exit()


@app.callback()
@handles_errors
def root(
    ctx: typer.Context,
    store: str | None = typer.Option(
        None, "--store", envvar="CKPT_LEDGER_STORE", metavar="URL",
        help="Event store: sqlite:///path.db, msgpack:///f.log, memory://, postgresql://...; "
        "a bare path means SQLite (default: `ckpt-ledger info` shows it).",
    ),
    hypervisor: str | None = typer.Option(
        None, "--hypervisor", "-c", "--connect", envvar="CKPT_LEDGER_HYPERVISOR",
        metavar="URI",
        help="mock:///path/state.json or a libvirt URI (qemu:///system, test:///default); "
        "-c/--connect as virsh; default $LIBVIRT_DEFAULT_URI.",
    ),
    actor: str | None = typer.Option(
        None, "--actor", envvar="CKPT_LEDGER_ACTOR", metavar="WHO",
        help="Who is recorded as doing this (default user@host).",
    ),
    correlation_id: str | None = typer.Option(
        None, "--correlation-id", envvar="CKPT_LEDGER_CORRELATION_ID", metavar="ID",
        help="Stored with every event recorded (ties them to a backup job, a ticket ...).",
    ),
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_show_version,
        help="Print the version and exit."),
    verbose: int = typer.Option(
        0, "--verbose", "-v", count=True,
        help="Say more on stderr: -v what is done (INFO), -vv how (DEBUG)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors on stderr."),
    no_progress: bool = typer.Option(
        False, "--no-progress", envvar="CKPT_LEDGER_NO_PROGRESS",
        help="No progress bars (they go to stderr, and only on a terminal)."),
    log_file: Path | None = typer.Option(
        None, "--log-file", metavar="PATH", envvar="CKPT_LEDGER_LOG_FILE",
        help="Also append every log record (INFO and up; DEBUG with -vv), timestamped."),
    lock_timeout: str | None = typer.Option(
        None, "--lock-timeout", envvar=defaults.LOCK_TIMEOUT_ENV, metavar="SECONDS",
        help="How long to wait for a domain's lock held by another process before failing "
        f"(default {defaults.DEFAULT_LOCK_TIMEOUT:g}; 0 = fail at once; inf = for ever).",
    ),
) -> None:
    """An append-only, event-sourced ledger of libvirt disk checkpoints."""
    ctx.call_on_close(_unlog)
    _logging(verbose, quiet, log_file)
    files = file_settings()  # option > environment > config file > default
    origins = {
        "store": _origin(ctx, "store", "--store", "CKPT_LEDGER_STORE"),
        "hypervisor": _origin(ctx, "hypervisor", "--connect", "CKPT_LEDGER_HYPERVISOR"),
        "actor": _origin(ctx, "actor", "--actor", "CKPT_LEDGER_ACTOR"),
        "lock_timeout": _origin(ctx, "lock_timeout", "--lock-timeout",
                                defaults.LOCK_TIMEOUT_ENV),
    }
    if hypervisor is None and os.environ.get("LIBVIRT_DEFAULT_URI"):
        hypervisor, origins["hypervisor"] = os.environ["LIBVIRT_DEFAULT_URI"], \
            "$LIBVIRT_DEFAULT_URI"
    values = {"store": store, "hypervisor": hypervisor, "actor": actor,
              "lock_timeout": lock_timeout}
    for key, value in values.items():
        if value is None and key in files:
            values[key], origins[key] = files[key].value, files[key].origin
    try:
        seconds = None if values["lock_timeout"] is None else defaults.check_lock_timeout(
            values["lock_timeout"], "--lock-timeout" if origins["lock_timeout"] in (
                "--lock-timeout", f"${defaults.LOCK_TIMEOUT_ENV}") else
            f"lock_timeout in {origins['lock_timeout']}")
    except LedgerError as err:
        raise bad_parameter(err.detail) from None
    ctx.obj = Settings(store=values["store"], hypervisor=values["hypervisor"],
                       actor=values["actor"], correlation_id=correlation_id,
                       lock_timeout=seconds, origins=origins, no_progress=no_progress)


def _logging(verbose: int, quiet: bool, log_file: Path | None) -> None:
    """Standard ``logging`` for this command: messages on stderr (WARNING and up; INFO with
    -v, DEBUG with -vv, ERROR only with -q), and every record in ``log_file``."""
    if quiet:
        level = logging.ERROR
    else:
        level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    _unlog()
    root_logger = logging.getLogger()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    handlers[0].setLevel(level)
    handlers[0].setFormatter(logging.Formatter("%(message)s"))
    if log_file is not None:
        try:
            file_handler = logging.FileHandler(log_file, encoding="utf-8")
        except OSError as e:
            raise LedgerError("INVALID_ARG", f"cannot open log file {log_file}: "
                              f"{e.strerror or e}") from None
        file_handler.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
        file_handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s [pid %(process)d]: %(message)s"))
        handlers.append(file_handler)
    for handler in handlers:
        handler.ckpt_ledger = True  # type: ignore[attr-defined]
        root_logger.addHandler(handler)
    root_logger.setLevel(min(h.level for h in handlers))


def _unlog() -> None:
    """Take this command's log handlers off again (closing the log file)."""
    root_logger = logging.getLogger()
    for handler in list(root_logger.handlers):
        if getattr(handler, "ckpt_ledger", False):
            root_logger.removeHandler(handler)
            handler.close()
    root_logger.setLevel(logging.WARNING)


def _origin(ctx: typer.Context, param: str, option: str, env: str) -> str:
    """Where an option's value came from: the command line or its environment variable."""
    source = getattr(ctx.get_parameter_source(param), "name", "")
    return option if source == "COMMANDLINE" else f"${env}" if source == "ENVIRONMENT" else ""


commands.register(app)
audit_cmd.register(app)
recovery_cmd.register(app)
backups_cmd.register(app)
ops_cmd.register(app)
integrity_cmd.register(app)
info_cmd.register(app)
app.add_typer(mock_cmd.app, name="mock")
app.command("demo")(demo.demo_command)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: usage errors become one line and exit status 2.

    Output that cannot be written ends the command: into a closed pipe (``log | head -1``,
    normal use) silently with status 0; onto a full device or after an I/O error with
    ``error: cannot write output: ... [SYSTEM_ERROR]`` and status 1 (status 1 and nothing
    said when stderr itself fails).
    """
    with streams.watched() as raws:
        try:
            code = _run(argv)
            streams.flush()
            return code
        except (OSError, SystemExit):
            if not any(raw.error for raw in raws):
                raise
        if raws[-1].error is not None and raws[-1].fileno() == 2:
            streams.failed(raws)
            return 1  # stderr failed: nothing can be said
        error = streams.failed(raws)
        assert error is not None
        if isinstance(error, BrokenPipeError):
            return 0
        try:
            typer.echo(f"error: cannot write output: {error.strerror or error} [SYSTEM_ERROR]",
                       err=True)
            sys.stderr.flush()
        except OSError:
            streams.failed(raws)
        return 1


def _run(argv: list[str] | None) -> int:
    try:
        command = typer.main.get_command(app)
        args = hoist_global_options(list(sys.argv[1:] if argv is None else argv), command)
        result = command.main(args=args, prog_name="ckpt-ledger", standalone_mode=False)
    except NO_ARGS as err:
        ctx = getattr(err, "ctx", None)
        where = ctx.command_path if ctx is not None else "ckpt-ledger"
        typer.echo(f"error: missing command: try '{where} --help' [USAGE]", err=True)
        return 2
    except USAGE as err:
        message = err.format_message() if hasattr(err, "format_message") else str(err)
        typer.echo("error: " + " ".join(message.split()) + " [USAGE]", err=True)
        return 2
    except EXIT as err:
        return int(getattr(err, "exit_code", 1))
    except ABORT:
        typer.echo("error: aborted", err=True)
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
