"""``ckpt-ledger info``: the store, the hypervisor and the settings a command would use."""

from __future__ import annotations

import typer

from ledger.app.config import Setting
from ledger.app.defaults import DEFAULT_LOCK_TIMEOUT, default_store
from ledger.app.info import gather

from .output import JSON, handles_errors, print_json


def register(app: typer.Typer) -> None:
    """Add ``info`` to ``app``."""

    @app.command()
    @handles_errors
    def info(ctx: typer.Context, json_out: bool = JSON) -> None:
        """Which ledger and hypervisor commands use, what each is, and where every setting
        came from (option > environment > config file > default). Creates nothing.

        Example: ckpt-ledger -c qemu:///system info
        """
        s = ctx.obj
        o = s.origins
        store = Setting(s.store, o["store"]) if s.store else default_store(create=False)
        report = gather(
            store,
            Setting(s.hypervisor, o["hypervisor"] or "not set"),
            Setting(s.actor, o["actor"] or "default (user@host)"),
            Setting(f"{s.lock_timeout:g}", o["lock_timeout"]) if s.lock_timeout is not None
            else Setting(f"{DEFAULT_LOCK_TIMEOUT:g}", "default"))
        if json_out:
            print_json(report, "info")
            return
        optional = ", ".join(f"{p} {v or 'not installed'}" for p, v in report.optional.items())
        lines = [f"ckpt-ledger {report.version} (Python {report.python}; {optional})"]
        state = {"ok": f"{report.events} events, {report.domains} domain(s), head "
                       f"{report.head}",
                 "empty": "no events yet (the first write records one)"}.get(
                     report.store_state, report.store_state)
        lines += [f"store:        {report.store}  [{report.store_from}]",
                  f"              {state}"]
        if report.hypervisor:
            lines += [f"hypervisor:   {report.hypervisor}  [{report.hypervisor_from}]",
                      f"              {report.hypervisor_is}"
                      + (f", {report.host_domains} domain(s)"
                         if report.host_domains is not None else "")]
        else:
            lines.append("hypervisor:   none (pass -c URI, or set CKPT_LEDGER_HYPERVISOR or "
                         "LIBVIRT_DEFAULT_URI)")
        lines += [f"actor:        {report.actor}  [{report.actor_from}]",
                  f"lock timeout: {report.lock_timeout} s  [{report.lock_timeout_from}]",
                  "config files: " + ", ".join(f"{p} ({st})"
                                               for p, st in report.config_files.items())]
        typer.echo("\n".join(lines))
