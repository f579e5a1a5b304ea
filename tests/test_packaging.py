"""The wheel is the product: built from this tree, installed in a fresh venv with no source
tree in sight, it has every module, its version, the CLI, the demo and the library example.

The fresh venv sees the development venv's dependencies (a path file, not pip), so the test
needs no network beyond building the wheel; the wheel itself is installed with --no-deps.
"""

from __future__ import annotations

import email
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from readme_sessions import TITLES, demo_output, normal, replay

from ledger import __version__

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps",
                            "-q", "-w", str(out)], capture_output=True, text=True, cwd=out)
    assert build.returncode == 0, build.stderr[-3000:]
    assert "warning" not in build.stderr.lower(), build.stderr[-3000:]
    (found,) = out.glob("ckpt_ledger-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    py = env / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True)
    deps = Path(sysconfig.get_paths()["purelib"])  # pydantic, msgpack, typer ... (not .pth)
    Path(site.stdout.strip(), "dev-deps.pth").write_text(f"{deps}\n")
    install = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps",
                              "--no-index", str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-3000:]
    return env


def test_the_wheel_holds_every_module_the_license_and_one_version(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = email.message_from_bytes(z.read(f"ckpt_ledger-{__version__}.dist-info/METADATA"))
    here = {str(p.relative_to(ROOT)) for pkg in ("ledger", "backends", "adapters", "cli")
            for p in (ROOT / pkg).rglob("*") if p.suffix in (".py", ".typed", ".json")
            and "__pycache__" not in p.parts}
    assert here <= names, sorted(here - names)
    for pkg in ("ledger", "backends", "adapters", "cli"):
        assert f"{pkg}/py.typed" in names
    assert meta["Version"] == __version__
    assert meta["License-Expression"] == "MIT"
    assert any(n.endswith("licenses/LICENSE") for n in names)


def test_the_installed_wheel_runs_without_the_source_tree(venv: Path, tmp_path: Path) -> None:
    bin_ = venv / "bin"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CKPT_LEDGER_", "PYTHON", "LIBVIRT_DEFAULT_URI"))}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=env,
                              timeout=300)

    where = run(str(bin_ / "python"), "-c", "import ledger, cli; print(ledger.__file__)")
    assert where.returncode == 0 and str(venv) in where.stdout, where
    version = run(str(bin_ / "ckpt-ledger"), "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"ckpt-ledger {__version__}"
    demo = run(str(bin_ / "ckpt-ledger"), "demo")
    assert demo.returncode == 0 and demo.stderr == "", demo.stderr[-2000:]
    assert normal(demo.stdout.splitlines()) == normal(demo_output())  # as README shows
    example = run(str(bin_ / "python"), "-c", (
        "from adapters.mock import MockHypervisor\n"
        "from ledger import Ledger\n"
        "hv = MockHypervisor('host.json'); hv.define('vm1', ['vda'])\n"
        "with Ledger.open(store='sqlite:///ledger.db', hypervisor=hv) as lg:\n"
        "    lg.create('vm1', 'chk1')\n"
        "    print([c.name for c in lg.list('vm1')])\n"))
    assert example.returncode == 0 and example.stdout.strip() == "['chk1']", example


@pytest.mark.parametrize("title", TITLES)
def test_the_readme_sessions_run_as_written_with_the_installed_wheel(
        venv: Path, tmp_path: Path, title: str) -> None:
    """Each console session of README.md, command by command, by the installed
    ``ckpt-ledger`` in a clean environment (a new HOME, no ckpt-ledger or libvirt variables
    but what the session exports): what the README shows."""
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "backups").mkdir()
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("CKPT_LEDGER_", "PYTHON", "LIBVIRT_", "XDG_"))}
    base |= {"HOME": str(home), "CKPT_LEDGER_SYSTEM_CONFIG": str(tmp_path / "none.toml"),
             "CKPT_LEDGER_SYSTEM_DIR": str(tmp_path / "system")}

    def run(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
        r = subprocess.run([str(venv / "bin" / "ckpt-ledger"), *args], capture_output=True,
                           text=True, cwd=tmp_path, env={**base, **env}, timeout=300)
        return r.returncode, r.stdout, r.stderr

    replay(title, tmp_path, run)
