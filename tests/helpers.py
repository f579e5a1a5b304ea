"""Shared helpers for the CLI / mock hypervisor / library specification tests.

A :class:`Host` is one simulated machine on ``tmp_path``: a real SQLite event store and a
real mock-hypervisor state file. It runs the CLI three ways:

* :meth:`Host.cli`: typer's ``CliRunner`` on ``cli.app.app`` (fast, most tests);
* :meth:`Host.main`: the console-script function ``cli.app.main(argv)`` in-process, with
  stdout and stderr captured separately; an exception escaping ``main`` is recorded as the
  traceback the real process would print (exit status 1);
* :meth:`Host.proc`: the installed ``ckpt-ledger`` console script in a subprocess.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import typer
from typer.testing import CliRunner

from cli.app import app, main

ENV_KEYS = ("CKPT_LEDGER_STORE", "CKPT_LEDGER_HYPERVISOR", "CKPT_LEDGER_ACTOR")
DISKS3 = ("--disk", "vda", "--disk", "vdb", "--disk", "vdc")
BLOCK = 64 * 1024
MIB = 1 << 20
SCRIPT = Path(sys.executable).parent / "ckpt-ledger"
_COMMAND = None


def command() -> Any:
    """The click command typer builds from ``app`` (built once: building it costs ~40 ms)."""
    global _COMMAND
    if _COMMAND is None:
        _COMMAND = typer.main.get_command(app)
    return _COMMAND


@dataclass
class Run:
    """The outcome of one CLI invocation."""

    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def everything(self) -> str:
        return self.stdout + self.stderr


def sha256(path: Path) -> str | None:
    """The file's digest, or None when it does not exist."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def diskspecs(covered: list[str] | tuple[str, ...], disks: tuple[str, ...]) -> list[str]:
    """``--disk vda --disk vdb,checkpoint=no ...``: a bitmap on ``covered`` only."""
    out: list[str] = []
    for d in disks:
        out += ["--disk", d if d in covered else f"{d},checkpoint=no"]
    return out


class Host:
    """A SQLite ledger and a mock hypervisor state file in one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.db = folder / "ledger.db"
        self.state = folder / "host.json"
        self.store = f"sqlite:///{self.db}"  # sqlite:////abs/path
        self.hv = f"mock:///{self.state}"  # mock:////abs/path
        self.runner = CliRunner()

    def clone(self, folder: Path) -> Host:
        """A copy of this host (store and state file) in ``folder``: cheaper than replaying."""
        folder.mkdir(parents=True, exist_ok=True)
        for f in self.folder.iterdir():
            if f.is_file() and not f.name.endswith(".lock"):
                shutil.copy2(f, folder / f.name)
        return Host(folder)

    # ------------------------------------------------------------ environment
    def env(self, **over: str | None) -> dict[str, str | None]:
        env: dict[str, str | None] = {
            "CKPT_LEDGER_STORE": self.store,
            "CKPT_LEDGER_HYPERVISOR": self.hv,
            "CKPT_LEDGER_ACTOR": None,
        }
        env.update(over)
        return env

    # ---------------------------------------------------------------- runners
    def cli(self, *args: str, env: dict[str, str | None] | None = None) -> Run:
        """What ``CliRunner().invoke(app, args)`` does, on a command built once."""
        with self.runner.isolation(env=env if env is not None else self.env()) as streams:
            code = 0
            try:
                command().main(args=list(args), prog_name="ckpt-ledger")
            except SystemExit as ex:
                code = ex.code if isinstance(ex.code, int) else (0 if ex.code is None else 1)
            except Exception:
                sys.stderr.write(traceback.format_exc())
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            out, err = streams[0].getvalue(), streams[1].getvalue()
        return Run(code, out.decode(), err.decode("utf-8", "backslashreplace"))

    def main(self, *args: str, env: dict[str, str | None] | None = None) -> Run:
        """``cli.app.main(argv)`` as the console script runs it, in this process."""
        env = env if env is not None else self.env()
        # typer rebuilds the click command on every call (~40 ms); reuse one, nothing else
        # about main() changes.
        cached = command()  # built before the patch, so command() never calls the patch
        with mock.patch.object(typer.main, "get_command", lambda _app: cached), \
                self.runner.isolation(env=env) as streams:
            try:
                code = main(list(args))
            except SystemExit as ex:  # pragma: no cover - main should return, not exit
                code = ex.code if isinstance(ex.code, int) else 1
            except BaseException:
                sys.stderr.write(traceback.format_exc())  # what Python would print
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            out, err = streams[0].getvalue(), streams[1].getvalue()
        return Run(code, out.decode(), err.decode("utf-8", "backslashreplace"))

    def proc(self, *args: str, env: dict[str, str | None] | None = None,
             stdin: bytes | None = None) -> Run:
        """The installed console script, in a subprocess."""
        full = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
        for k, v in (env if env is not None else self.env()).items():
            if v is not None:
                full[k] = v
        p = subprocess.run([str(SCRIPT), *args], capture_output=True, env=full, input=stdin,
                           timeout=60)
        return Run(p.returncode, p.stdout.decode(), p.stderr.decode("utf-8", "backslashreplace"))

    def ok(self, *args: str) -> Run:
        r = self.cli(*args)
        assert r.code == 0, f"{args}: exit {r.code}\n{r.stdout}\n{r.stderr}"
        return r

    def ok_json(self, *args: str) -> Any:
        return self.ok(*args, "--json").json()

    # ----------------------------------------------------------------- probes
    def event_count(self) -> int:
        from ledger import Ledger

        if not self.db.exists():
            return 0
        with Ledger.open(store=self.store) as lg:
            return lg.event_count()

    def state_digest(self) -> str | None:
        return sha256(self.state)

    def names(self, domain: str, *flags: str) -> list[str]:
        return [v["name"] for v in self.ok_json("list", domain, *flags)]

    def parents(self, domain: str) -> dict[str, str | None]:
        return {v["name"]: v["parent"] for v in self.ok_json("list", domain)}

    def current(self, domain: str) -> str | None:
        return self.tree(domain)[1]

    def tree(self, domain: str) -> tuple[dict[str, str | None], str | None]:
        """({name: parent}, current) from one `list --json`."""
        views = self.ok_json("list", domain)
        cur = [v["name"] for v in views if v["current"]]
        assert len(cur) <= 1
        return {v["name"]: v["parent"] for v in views}, (cur[0] if cur else None)

    def extents(self, domain: str, disk: str, bitmaps: list[str]) -> list[list[int]]:
        data = self.ok_json("mock", "extents", domain, disk, *bitmaps)
        assert data["disk"] == disk and data["bitmaps"] == bitmaps
        return data["extents"]

    def write(self, domain: str, disk: str, offset: int, length: int = BLOCK) -> None:
        self.ok("mock", "write", domain, disk, str(offset), str(length))


def assert_one_error_line(run: Run, code: str | None = None) -> str:
    """Exit status != 0, exactly one stderr line ``error: ... [CODE]``, no traceback."""
    assert run.code != 0, f"expected a failure, got exit 0: {run.stdout!r}"
    assert "Traceback" not in run.everything, run.everything
    lines = run.stderr.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {lines!r}"
    line = lines[0]
    assert line.startswith("error: "), line
    if code is not None:
        assert line.endswith(f"[{code}]"), f"expected [{code}] in {line!r}"
    return line


def assert_gapless(records: list[Any]) -> None:
    """Positions 1..n in order, and every stream's versions 1..k: nothing lost, nothing
    twice (what a store owes after crashes or concurrent writers)."""
    assert [r.position for r in records] == list(range(1, len(records) + 1))
    versions: dict[str, list[int]] = {}
    for r in records:
        versions.setdefault(r.stream_id, []).append(r.stream_version)
    for sid, vs in versions.items():
        assert vs == list(range(1, len(vs) + 1)), f"stream {sid}: versions {vs}"


@contextlib.contextmanager
def small_tmpfs(tmp_path: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted with ``options`` (e.g. ``size=256k``) on a fresh folder, unmounted
    afterwards; skips the test when mounting is not permitted."""
    where = tmp_path / "small"
    where.mkdir()
    try:
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot run mount: {e}")
    if p.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {p.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30)
