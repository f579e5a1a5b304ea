"""``ckpt-ledger demo``: the four-checkpoint scenario of libvirt's checkpoint design
discussion, on the mock hypervisor, under both policies.

Disks A, B, C are vda, vdb, vdc. chk1.1 covers A+B, chk2.1 B+C, chk1.2 A+B, chk2.2 B+C.
Between checkpoints the guest writes a known 64 KiB block on every disk; each backup plan is
then proven by comparing the merged bitmaps' dirty extents with the blocks written since the
plan's reference checkpoint.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from adapters.mock import MockHypervisor
from ledger import Ledger, Policy

from .commands import tree_lines
from .output import handles_errors, table

DISKS = ["vda", "vdb", "vdc"]
BLOCK = 64 * 1024
SCENARIO = [  # (checkpoint, disks with a bitmap)
    ("chk1.1", ["vda", "vdb"]),
    ("chk2.1", ["vdb", "vdc"]),
    ("chk1.2", ["vda", "vdb"]),
    ("chk2.2", ["vdb", "vdc"]),
]


def run_scenario(lg: Ledger, hv: MockHypervisor, domain: str, policy: Policy) -> list[str]:
    """Play the scenario; return the report lines. Raises AssertionError if a plan is wrong."""
    out: list[str] = []
    hv.define(domain, DISKS, policy)
    written: list[tuple[str | None, int]] = []  # (last checkpoint before the write, offset)
    last: str | None = None
    for step, (name, covered) in enumerate([(None, []), *SCENARIO]):
        if name is not None:
            specs = [d if d in covered else f"{d},checkpoint=no" for d in DISKS]
            lg.create(domain, name, specs, reason="demo")
            last = name
        offset = (step + 1) * (1 << 20)  # 1 MiB, 2 MiB ... one block per step, on every disk
        for disk in DISKS:
            hv.write(domain, disk, offset, BLOCK)
        written.append((last, offset))
    out.append(f"== {policy} policy (domain {domain}) ==")
    out.append("Chain (parent -> child):")
    out.extend("  " + line for line in tree_lines(lg.list(domain)) if line)
    view = lg.bitmaps(domain)
    rows = [(disk, b.bitmap, "active" if b.active else "disabled")
            for disk, bms in view.disks.items() for b in bms]
    out.append("Bitmaps:")
    out.extend("  " + line for line in table(["Disk", "Bitmap", "State"], rows).splitlines())
    order = [name for name, _ in SCENARIO]
    for since in ("chk1.2", "chk1.1"):
        plan = lg.plan(domain, since)
        after = order[order.index(since):]
        expected = [(off, BLOCK) for cp, off in written if cp in after]
        out.append(f"Backup plan since {since}:")
        for disk, p in plan.disks.items():
            if p.mode == "full":
                out.append(f"  {disk}: full ({p.reason})")
                continue
            got = hv.extents(domain, disk, p.bitmaps)
            ok = got == expected
            mib = ", ".join(f"{o >> 20}M" for o, _ in got) or "none"
            verdict = f"OK, exactly the blocks written since {since}" if ok else "WRONG"
            out.append(f"  {disk}: {p.mode:<12} merge [{', '.join(p.bitmaps)}] -> dirty at "
                       f"{mib}: {verdict}")
            if not ok:
                raise AssertionError(f"{policy} plan since {since} on {disk}: {got} != {expected}")
    return out


@handles_errors
def demo_command(
    directory: Path | None = typer.Option(
        None, "--dir", help="Keep the demo's ledger and mock state here (default: a temp dir)."
    , metavar="DIR"),
) -> None:
    """Run libvirt's design-discussion scenario (four checkpoints over disks vda, vdb,
    vdc) on the mock hypervisor, once per bitmap policy."""
    with tempfile.TemporaryDirectory(prefix="ckpt-ledger-demo-") as tmp:
        folder = directory or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        policies: list[Policy] = ["chained", "independent"]
        for policy in policies:
            hv = MockHypervisor(str(folder / f"{policy}-host.json"))
            store = f"sqlite:///{folder / f'{policy}-ledger.db'}"
            with Ledger.open(store=store, hypervisor=hv, actor="demo") as lg:
                for line in run_scenario(lg, hv, f"demo-{policy}", policy):
                    typer.echo(line)
            typer.echo("")
        if directory:
            typer.echo(f"Ledgers and mock host state kept in {folder}")
