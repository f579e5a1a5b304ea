"""README.md tells the truth: its Python example runs, and its CLI reference matches --help."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main
from helpers import Host
from readme_sessions import README, TITLES, replay

from cli.app import app


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


@pytest.mark.parametrize("title", TITLES)
def test_the_console_sessions_print_what_the_readme_shows(tmp_path: Path, title: str) -> None:
    """The console session under each of these sections, run again: the same output, up to
    times, UUIDs, job ids, paths and column widths."""
    host = Host(tmp_path)
    (tmp_path / "backups").mkdir()
    clean = {"CKPT_LEDGER_STORE": None, "CKPT_LEDGER_HYPERVISOR": None,
             "CKPT_LEDGER_ACTOR": None}

    def run(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
        r = host.cli(*args, env={**clean, **env})
        return r.code, r.stdout, r.stderr

    replay(title, tmp_path, run)
