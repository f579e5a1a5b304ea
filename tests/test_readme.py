"""README.md tells the truth: its Python example runs, and its CLI reference matches --help."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer.main
from helpers import Host

from cli.app import app

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_the_two_setup_commands_come_first() -> None:
    first_block = README.split("## Two commands", 1)[1].split("##", 1)[0]
    assert "make demo" in first_block and "make test" in first_block


def test_every_python_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})  # noqa: S102


def _commands() -> set[str]:
    root = typer.main.get_command(app)
    names = set()
    for name, cmd in root.commands.items():  # type: ignore[attr-defined]
        sub = getattr(cmd, "commands", None)
        if sub:
            names.update(f"{name} {s}" for s in sub)
        else:
            names.add(name)
    return names


def test_every_command_is_in_the_cli_reference_and_nothing_else() -> None:
    reference = README.split("## CLI reference", 1)[1].split("## Library API", 1)[0]
    documented = set()
    for m in re.finditer(r"`ckpt-ledger ([a-z][a-z-]*)(?: ([a-z][a-z-|\\]*))?", reference):
        first, second = m.group(1), m.group(2)
        if first == "mock" and second:
            documented.update(f"mock {s}" for s in second.replace("\\", "").split("|"))
        else:
            documented.add(first)
    assert documented == _commands()


@pytest.mark.parametrize("title", ["When other tools change the host", "Backup history"])
def test_the_console_sessions_print_what_the_readme_shows(tmp_path: Path, title: str) -> None:
    """The console session under each of these sections, run again: the same output, up to
    times, UUIDs, job ids, paths and column widths."""
    section = README.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    block = section.split("```console\n", 1)[1].split("```", 1)[0]
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
    walk = str(tmp_path)
    env = {"CKPT_LEDGER_STORE": f"sqlite:///{walk}/ledger.db",
           "CKPT_LEDGER_HYPERVISOR": f"mock:///{walk}/host.json", "CKPT_LEDGER_ACTOR": None}
    host = Host(tmp_path)
    (tmp_path / "backups").mkdir()
    for command_line, expected in steps:
        if command_line.startswith("export "):
            continue
        args = shlex.split(command_line.replace("/tmp/walk", walk))
        assert args[0] == "ckpt-ledger", command_line
        run = host.cli(*args[1:], env=env)
        got = (run.stdout.splitlines() + run.stderr.splitlines()
               + ([f"(exit {run.code})"] if run.code else []))
        want = [ln for ln in expected if not ln.startswith("# ")]
        assert _normal(got) == _normal(want), (command_line, run.stderr)


def _normal(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        line = re.sub(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d( \+0000|Z)?", "TIME", line)
        line = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "UUID", line)
        line = re.sub(r"mock:///\S+", "HOST", line)
        line = re.sub(r"@\d{10}", "@TIME", line)
        line = re.sub(r"'/tmp/[^']*'", "PATH", line)
        line = re.sub(r"-{3,}", "---", line)
        out.append(" ".join(line.split()))
    return [ln for ln in out if ln]
