"""The console sessions of README.md: parsed, run, and compared up to what differs by run."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
TITLES = ["A session", "When other tools change the host", "Backup history"]

Step = tuple[str, list[str]]  # a command line and the lines it prints


def session(title: str) -> list[Step]:
    """The commands of the console block under ``## title`` with their output."""
    section = README.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    block = section.split("```console\n", 1)[1].split("```", 1)[0]
    steps: list[Step] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
    return steps


Runner = Callable[[list[str], dict[str, str]], tuple[int, str, str]]  # args, env -> result


def replay(title: str, folder: Path, run: Runner) -> None:
    """Run session ``title`` with its ``/tmp/...`` folder moved to ``folder``: each command
    through ``run`` with the variables its ``export`` lines set, its output compared."""
    env: dict[str, str] = {}
    for command_line, expected in session(title):
        line = re.sub(r"/tmp/[a-z]+", str(folder), command_line)
        args = shlex.split(line)
        if args[0] == "export":
            env.update(a.split("=", 1) for a in args[1:])  # type: ignore[misc]
            continue
        assert args[0] == "ckpt-ledger", command_line
        code, out, err = run(args[1:], env)
        got = out.splitlines() + err.splitlines() + ([f"(exit {code})"] if code else [])
        want = [ln for ln in expected if not ln.startswith("# ")]
        assert normal(got) == normal(want), (command_line, err)


def normal(lines: list[str]) -> list[str]:
    """``lines`` without what changes from run to run: times, UUIDs, paths, the host's name,
    column widths and blank lines."""
    out = []
    for line in lines:
        line = re.sub(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d( \+0000|Z)?", "TIME", line)
        line = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "UUID", line)
        line = re.sub(r"mock:///\S+", "HOST", line)
        line = re.sub(r"@\d{10}", "@TIME", line)
        line = re.sub(r"<creationTime>\d+</creationTime>", "<creationTime/>", line)
        line = re.sub(r"\[(\S+) on \S+, ", r"[\1 on HOSTNAME, ", line)
        line = re.sub(r"'/tmp/[^']*'", "PATH", line)
        line = re.sub(r"-{3,}", "---", line)
        out.append(" ".join(line.split()))
    return [ln for ln in out if ln]


def demo_output() -> list[str]:
    """What README's "What the demo prints" shows after ``$ make demo``."""
    section = README.split("## What the demo prints", 1)[1].split("\n## ", 1)[0]
    block = section.split("```\n", 1)[1].split("```", 1)[0].splitlines()
    assert block[0] == "$ make demo", block[0]
    return block[1:]
