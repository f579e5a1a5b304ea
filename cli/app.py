"""The ``ckpt-ledger`` command: global options and the entry point.

Every command is a thin wrapper over one :class:`ledger.Ledger` method.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import click
import typer

from ledger import Ledger

from . import commands, demo, mock_cmd, recovery_cmd
from .output import fail

app = typer.Typer(
    name="ckpt-ledger",
    help="An append-only, event-sourced ledger of libvirt disk checkpoints.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@dataclass
class Settings:
    """The global options, handed to every command through the click context."""

    store: str | None
    hypervisor: str | None
    actor: str | None

    def open(self, need_hypervisor: bool = False) -> Ledger:
        """Open the ledger these options name."""
        return Ledger.open(store=self.store, hypervisor=self.hypervisor, actor=self.actor)


@app.callback()
def root(
    ctx: typer.Context,
    store: str | None = typer.Option(
        None, "--store", envvar="CKPT_LEDGER_STORE", metavar="URL",
        help="Event store: sqlite:///path.db (default under $XDG_DATA_HOME), msgpack:///f.log, "
        "memory://, postgresql://...; a bare path means SQLite.",
    ),
    hypervisor: str | None = typer.Option(
        None, "--hypervisor", envvar="CKPT_LEDGER_HYPERVISOR", metavar="URI",
        help="mock:///path/state.json or a libvirt URI (qemu:///system, test:///default).",
    ),
    actor: str | None = typer.Option(
        None, "--actor", envvar="CKPT_LEDGER_ACTOR",
        help="Who is recorded as doing this (default user@host).",
    ),
) -> None:
    """An append-only, event-sourced ledger of libvirt disk checkpoints."""
    ctx.obj = Settings(store=store, hypervisor=hypervisor, actor=actor)


commands.register(app)
recovery_cmd.register(app)
app.add_typer(mock_cmd.app, name="mock")
app.command("demo")(demo.demo_command)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: usage errors become one line and exit status 2."""
    try:
        result = app(args=argv, prog_name="ckpt-ledger", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as err:
        click.echo(err.ctx.get_help() if err.ctx else "", err=True)
        return 2
    except click.exceptions.UsageError as err:
        try:
            raise fail(err.format_message(), 2) from None
        except typer.Exit as ex:
            return ex.exit_code
    except click.exceptions.Exit as err:
        return err.exit_code
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        return 130
    except BrokenPipeError:
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
