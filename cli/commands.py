"""The checkpoint commands: create, delete, redefine, list, show, bitmaps, plan.

``log``, ``history`` and ``timeline`` are in :mod:`cli.audit_cmd`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer

from ledger import CheckpointView, Ledger, LedgerError

from .errors import usage_error
from .output import JSON, handles_errors, print_json, shown, table

AS_OF = typer.Option(
    None, "--as-of", metavar="POS|TIME",
    help="Answer as the ledger stood then: after event POSITION, or at a time (ISO 8601, "
    "naive = UTC; a bare date means its end).",
)
MAX_XML_FILE = 1 << 20


def _settings(ctx: typer.Context, readonly: bool = False) -> Ledger:
    lg: Ledger = ctx.obj.open(readonly=readonly)
    return lg


def _when(ts: int) -> str:
    """libvirt's creationTime as virsh shows it; the bare number when no date can show it."""
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S +0000")
    except (ValueError, OverflowError, OSError):
        return str(ts)


def _read_xml_file(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_XML_FILE + 1)
    except IsADirectoryError:
        raise LedgerError("INVALID_ARG", f"{path} is a directory, not an XML file") from None
    except OSError as err:
        raise LedgerError("INVALID_ARG", f"cannot read {path}: {err.strerror}") from None
    if len(data) > MAX_XML_FILE:
        raise LedgerError("XML_ERROR", f"{path} is larger than 1 MiB")
    return data


def tree_lines(views: list[CheckpointView], start: str | None = None) -> list[str]:
    """virsh's ``checkpoint-list --tree`` drawing (siblings sorted by name)."""
    by_parent: dict[str | None, list[str]] = {}
    names = {v.name for v in views}
    for v in sorted(views, key=lambda v: v.name):
        parent = v.parent if v.parent in names else None
        by_parent.setdefault(parent, []).append(v.name)
    lines: list[str] = []
    for root in by_parent.get(None, []) if start is None else [start]:
        lines.append(root)
        stack = [(k, "", i == len(by_parent.get(root, [])) - 1)
                 for i, k in enumerate(by_parent.get(root, []))][::-1]
        while stack:  # depth first without recursion: any chain length
            kid, indent, last = stack.pop()
            lines.append(f"{indent}  |")
            lines.append(f"{indent}  +- {kid}")
            deeper = indent + ("    " if last else "  | ")
            kids = by_parent.get(kid, [])
            stack.extend([(k, deeper, i == len(kids) - 1) for i, k in enumerate(kids)][::-1])
        lines.append("")
    return lines


def _one_name(positional: str | None, option: str | None, flag: str,
              required: bool = True) -> str | None:
    """The checkpoint name, given as an argument or as virsh's option (not both)."""
    if positional is not None and option is not None and positional != option:
        raise usage_error(f"the checkpoint is named twice: {positional!r} and {flag} "
                          f"{option!r}")
    name = positional if positional is not None else option
    if name is None and required:
        raise usage_error(f"missing the checkpoint's name (NAME or {flag} NAME)")
    return name


def register(app: typer.Typer) -> None:
    """Add every checkpoint command to ``app``."""

    @app.command()
    @handles_errors
    def create(
        ctx: typer.Context,
        domain: str = typer.Argument(..., help="Domain name.", metavar="DOMAIN"),
        name: str | None = typer.Argument(None, help="Checkpoint name (default: the time).",
                                          metavar="NAME"),
        disk: list[str] = typer.Option(
            [], "--disk", "--diskspec", metavar="SPEC",
            help="virsh diskspec: vda[,checkpoint=bitmap|no][,bitmap=NAME]; repeatable.",
        ),
        description: str | None = typer.Option(None, "--description", metavar="TEXT"),
        reason: str | None = typer.Option(None, "--reason", help="Why, kept with the event.",
                                          metavar="WHY"),
        print_xml: bool = typer.Option(False, "--print-xml", help="Show the XML, create nothing."),
        name_option: str | None = typer.Option(None, "--name", metavar="NAME",
                                               help="The name, as virsh's option."),
        json_out: bool = JSON,
    ) -> None:
        """Create a checkpoint (virsh checkpoint-create-as) and record it.

        Example: ckpt-ledger create web01 nightly.1 --disk vda --disk vdb,checkpoint=no
        """
        name = _one_name(name, name_option, "--name", required=False)
        with _settings(ctx) as lg:
            if print_xml:
                typer.echo(lg.print_xml(name, disk or None, description), nl=False)
                return
            view = lg.create(domain, name, disk or None, description, reason=reason)
        if json_out:
            print_json(view, "checkpoint")
        else:
            typer.echo(f"Domain checkpoint {view.name} created")

    @app.command()
    @handles_errors
    def delete(
        ctx: typer.Context,
        domain: str = typer.Argument(..., metavar="DOMAIN"),
        name: str | None = typer.Argument(None, metavar="NAME"),
        checkpointname: str | None = typer.Option(
            None, "--checkpointname", metavar="NAME", help="The name, as virsh's option."),
        children: bool = typer.Option(False, "--children", help="Delete its descendants too."),
        children_only: bool = typer.Option(False, "--children-only",
                                           help="Delete only its descendants."),
        metadata_only: bool = typer.Option(False, "--metadata-only", "--metadata",
                                           help="Forget the metadata, leave the bitmaps."),
        reason: str | None = typer.Option(None, "--reason", metavar="WHY"),
        json_out: bool = JSON,
    ) -> None:
        """Delete a checkpoint (virsh checkpoint-delete) and record what happened.

        Example: ckpt-ledger delete web01 nightly.1 --reason "retention: 30 days"
        """
        target = _one_name(name, checkpointname, "--checkpointname")
        assert target is not None
        with _settings(ctx) as lg:
            result = lg.delete(domain, target, children=children, children_only=children_only,
                               metadata_only=metadata_only, reason=reason)
        if json_out:
            print_json(result, "delete")
        elif children_only:
            typer.echo(f"Domain checkpoint {target} children deleted")
        else:
            typer.echo(f"Domain checkpoint {target} deleted")

    @app.command()
    @handles_errors
    def forget(
        ctx: typer.Context,
        domain: str = typer.Argument(..., metavar="DOMAIN"),
        name: str = typer.Argument(..., metavar="NAME"),
        reason: str = typer.Option(..., "--reason", help="Why (recorded with who).", metavar="WHY"),
    ) -> None:
        """Record that a checkpoint is gone from the host (another tool deleted it): it is
        no longer listed or replayed. Refused while the hypervisor still has it.

        Example: ckpt-ledger forget web01 vnb.3 --reason "deleted by virtnbdbackup -l full"
        """
        with _settings(ctx) as lg:
            lg.forget(domain, name, reason)
        typer.echo(f"Domain checkpoint {name} forgotten")

    @app.command()
    @handles_errors
    def redefine(
        ctx: typer.Context,
        domain: str = typer.Argument(..., metavar="DOMAIN"),
        file: Path = typer.Argument(..., help="Checkpoint XML, as checkpoint-dumpxml prints it.",
                                    metavar="FILE"),
        validate: bool = typer.Option(False, "--validate",
                                      help="REDEFINE_VALIDATE: check the bitmaps exist."),
        reason: str | None = typer.Option(None, "--reason", metavar="WHY"),
        json_out: bool = JSON,
    ) -> None:
        """Redefine a checkpoint from XML (virsh checkpoint-create --redefine).

        Example: ckpt-ledger redefine web01 chk1.xml
        """
        data = _read_xml_file(file)
        with _settings(ctx) as lg:
            view = lg.redefine(domain, data, validate=validate, reason=reason)
        if json_out:
            print_json(view, "checkpoint")
        else:
            typer.echo(f"Domain checkpoint {view.name} created from '{file}'")

    @app.command("list")
    @handles_errors
    def list_(
        ctx: typer.Context,
        domain: str = typer.Argument(..., metavar="DOMAIN"),
        tree: bool = typer.Option(False, "--tree"),
        topological: bool = typer.Option(False, "--topological"),
        roots: bool = typer.Option(False, "--roots"),
        leaves: bool = typer.Option(False, "--leaves"),
        no_leaves: bool = typer.Option(False, "--no-leaves"),
        from_: str | None = typer.Option(None, "--from", metavar="NAME"),
        descendants: bool = typer.Option(False, "--descendants"),
        name_only: bool = typer.Option(False, "--name", help="Names only."),
        parent: bool = typer.Option(False, "--parent", help="Add the Parent column."),
        as_of: str | None = AS_OF,
        json_out: bool = JSON,
    ) -> None:
        """List checkpoints (virsh checkpoint-list) from the ledger.

        As virsh, the Parent column is shown with --parent (and whenever an orphan, a
        checkpoint whose parent the ledger does not know, is listed).

        Example: ckpt-ledger list web01 --parent --topological
        """
        clashes = [
            (tree, roots, "--tree", "--roots"),
            (tree, leaves, "--tree", "--leaves"),
            (tree, no_leaves, "--tree", "--no-leaves"),
            (roots, from_, "--roots", "--from"),
            (tree, name_only, "--tree", "--name"),
        ]
        for a, b, an, bn in clashes:
            if a and b:
                raise usage_error(f"{an} and {bn} are mutually exclusive")
        if descendants and from_ is None:
            raise usage_error("--descendants requires --from")
        with _settings(ctx, readonly=True) as lg:
            views = lg.list(domain, roots=roots, leaves=leaves, no_leaves=no_leaves,
                            topological=topological, from_=from_,
                            descendants=descendants or (tree and from_ is not None),
                            as_of=as_of)
            if tree and from_ is not None:
                views = [lg.show(domain, from_, as_of=as_of), *views]
        if json_out:
            print_json([v.model_dump(mode="json", exclude={"children"}) for v in views],
                       "checkpoint")
        elif tree:
            typer.echo("\n".join(tree_lines(views, from_)))
        elif name_only:
            for v in views:
                typer.echo(v.name)
        else:
            with_parent = parent or any(v.orphan for v in views)
            rows = [(v.name + (" *" if v.current else ""), _when(v.creation_time),
                     *([(v.parent or "-") + (" (unknown: orphan)" if v.orphan else "")]
                       if with_parent else []),
                     ",".join(d.name for d in v.disks if d.checkpoint == "bitmap") or "-")
                    for v in views]
            heads = ["Name", "Creation Time", *(["Parent"] if with_parent else []),
                     "Bitmap disks"]
            typer.echo(table(heads, rows))

    @app.command()
    @handles_errors
    def show(
        ctx: typer.Context,
        domain: str = typer.Argument(..., metavar="DOMAIN"),
        name: str = typer.Argument(..., metavar="NAME"),
        xml: bool = typer.Option(False, "--xml", help="The XML exactly as libvirt formats it."),
        no_domain: bool = typer.Option(False, "--no-domain", help="With --xml: omit <domain>."),
        as_of: str | None = AS_OF,
        json_out: bool = JSON,
    ) -> None:
        """Show one checkpoint, or its XML.

        Example: ckpt-ledger show web01 chk1 --xml
        """
        with _settings(ctx, readonly=True) as lg:
            if xml:
                typer.echo(lg.xml(domain, name, no_domain=no_domain, as_of=as_of), nl=False)
                return
            view = lg.show(domain, name, as_of=as_of)
        if json_out:
            print_json(view, "checkpoint")
            return
        typer.echo(f"Name:           {view.name}")
        typer.echo(f"Domain:         {domain}")
        typer.echo(f"Parent:         {view.parent or '-'}")
        typer.echo(f"Created:        {_when(view.creation_time)}")
        typer.echo(f"Current:        {'yes' if view.current else 'no'}")
        typer.echo(f"Children:       {len(view.children)}")
        if view.description:
            typer.echo(f"Description:    {shown(view.description)}")
        for d in view.disks:
            extra = f" bitmap={d.bitmap}" if d.bitmap else ""
            typer.echo(f"Disk:           {d.name} checkpoint={d.checkpoint}{extra}")

    @app.command()
    @handles_errors
    def bitmaps(
        ctx: typer.Context,
        domain: str = typer.Argument(..., metavar="DOMAIN"),
        as_of: str | None = AS_OF,
        json_out: bool = JSON,
    ) -> None:
        """Every bitmap on every disk, as the ledger believes the hypervisor holds them.

        Example: ckpt-ledger bitmaps web01 --json
        """
        with _settings(ctx, readonly=True) as lg:
            view = lg.bitmaps(domain, as_of=as_of)
        if json_out:
            print_json(view, "bitmaps")
            return
        rows = [(disk, b.bitmap, b.checkpoint, "active" if b.active else "disabled")
                for disk, bms in view.disks.items() for b in bms]
        typer.echo(f"Domain {view.domain}, policy {view.policy}")
        typer.echo(table(["Disk", "Bitmap", "Checkpoint", "State"], rows))

    @app.command()
    @handles_errors
    def plan(
        ctx: typer.Context,
        domain: str = typer.Argument(..., metavar="DOMAIN"),
        since: str = typer.Option(..., "--since", metavar="NAME",
                                  help="The reference checkpoint of the backup."),
        as_of: str | None = AS_OF,
        json_out: bool = JSON,
    ) -> None:
        """Which bitmaps, per disk, hold every block written since a checkpoint.

        Example: ckpt-ledger plan web01 --since chk1
        """
        with _settings(ctx, readonly=True) as lg:
            view = lg.plan(domain, since, as_of=as_of)
        if json_out:
            print_json(view, "plan")
            return
        typer.echo(f"Backup plan for {view.domain} since {view.since} ({view.policy} policy)")
        rows = [(disk, p.mode, ", ".join(p.bitmaps) or "-", p.reason or "")
                for disk, p in view.disks.items()]
        typer.echo(table(["Disk", "Mode", "Bitmaps (oldest first)", "Why"], rows))
