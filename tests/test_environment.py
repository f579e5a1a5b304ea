"""An unusable environment is one clear line, never a traceback.

* A missing optional part (psycopg for ``postgresql://``, libvirt-python for a libvirt URI)
  names the extra to install.
* ``$XDG_DATA_HOME`` / ``$HOME`` naming a file or an unwritable place names it.
* Output that cannot be written: a closed pipe (``log --jsonl | head -1``) is normal use and
  exits 0 silently; a full device (``> /dev/full``) is ``error: cannot write output: ...``
  and exit 1, with no "Exception ignored" noise at interpreter exit.

Each case runs the real entry point ``cli.app.main`` in a subprocess.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import SCRIPT, Host, Run, assert_one_error_line, small_tmpfs

from backends.sqlite import SqliteStore
from ledger import Ledger
from ledger.log.records import NewRecord

RUN_MAIN = "import sys\n{block}\nfrom cli.app import main\nsys.exit(main(sys.argv[1:]))"


def run_main(*argv: str, block: str = "", env: dict[str, str | None] | None = None,
             stdout: int | None = subprocess.PIPE) -> Run:
    """``cli.app.main(argv)`` in a fresh interpreter that first runs ``block`` (``env``: a
    None value unsets the variable)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("CKPT_LEDGER_")}
    for k, v in (env or {}).items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    p = subprocess.run([sys.executable, "-c", RUN_MAIN.format(block=block), *argv],
                       stdout=stdout, stderr=subprocess.PIPE, env=full, timeout=60)
    out = p.stdout.decode() if p.stdout is not None else ""
    return Run(p.returncode, out, p.stderr.decode("utf-8", "backslashreplace"))


def blocked(*modules: str) -> str:
    """A block that makes ``modules`` unimportable (as if their package were not installed)."""
    return "\n".join(f"sys.modules[{m!r}] = None" for m in modules)


# ------------------------------------------------------------------ optional parts
@pytest.mark.parametrize("url", [
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgres://u:secret@db.example/x?schema=s",
    "postgresql+psycopg:///test?host=/var/run/postgresql",
])
def test_postgres_url_without_psycopg_names_the_extra(url: str) -> None:
    run = run_main("--store", url, "log", block=blocked("psycopg"))
    line = assert_one_error_line(run, "STORE_ERROR")
    assert "pip install 'ckpt-ledger[postgres]'" in line
    assert "psycopg" in line
    assert "secret" not in line


def test_copy_to_postgres_without_psycopg_names_the_extra(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    with SqliteStore(str(db)) as source:  # a source with one event: copy reads it first
        source.append([NewRecord("s", "vm", "T", 1, 1700000000.0, b"x")])
    run = run_main("copy", "--from", str(db), "--to", "postgresql://u:pw@127.0.0.1/test",
                   block=blocked("psycopg"))
    line = assert_one_error_line(run, "STORE_ERROR")
    assert "ckpt-ledger[postgres]" in line and ":pw@" not in line


def test_a_broken_psycopg_install_names_the_extra() -> None:
    """psycopg itself present but unusable (no libpq): its ImportError, named the same way."""
    block = ("import types\nm = types.ModuleType('psycopg')\n"
             "def boom(name):\n    raise ImportError('no pq wrapper available')\n"
             "m.__getattr__ = boom\nsys.modules['psycopg'] = m")
    run = run_main("--store", "postgresql:///test", "log", block=block)
    line = assert_one_error_line(run, "STORE_ERROR")
    assert "ckpt-ledger[postgres]" in line


@pytest.mark.parametrize("uri", ["test:///default", "qemu:///system", "qemu+ssh://h/system"])
def test_libvirt_uri_without_libvirt_python_names_the_extra(tmp_path: Path, uri: str) -> None:
    run = run_main("--store", str(tmp_path / "l.db"), "--hypervisor", uri, "import", "vm",
                   block=blocked("libvirt", "libvirt_qemu"))
    line = assert_one_error_line(run, "HYPERVISOR_ERROR")
    assert "pip install 'ckpt-ledger[libvirt]'" in line


@pytest.mark.libvirt
def test_libvirt_without_libvirt_qemu_names_the_extra(tmp_path: Path) -> None:
    """A running domain's bitmaps are asked through libvirt_qemu (part of libvirt-python)."""
    pytest.importorskip("libvirt", reason="needs libvirt-python (test:///default)")
    ok = run_main("--store", str(tmp_path / "l.db"), "--hypervisor", "test:///default",
                  "import", "test")
    assert ok.code == 0, ok.stderr
    run = run_main("--store", str(tmp_path / "l.db"), "--hypervisor", "test:///default",
                   "verify", "test", block=blocked("libvirt_qemu"))
    line = assert_one_error_line(run, "HYPERVISOR_ERROR")
    assert "pip install 'ckpt-ledger[libvirt]'" in line


# ------------------------------------------------------------------ data folder
ROOT_USER = os.geteuid() == 0


@pytest.mark.parametrize("var", ["XDG_DATA_HOME", "HOME"])
@pytest.mark.parametrize("where", ["/etc/hostname", "/dev/null", "/proc/1"])
def test_unusable_data_folder_is_named(var: str, where: str, tmp_path: Path) -> None:
    """The default store's folder cannot be made: the error names it and where it came
    from. For root the default is the system folder ($CKPT_LEDGER_SYSTEM_DIR here), not
    $HOME's."""
    env: dict[str, str | None] = {"XDG_DATA_HOME": None, "HOME": str(tmp_path),
                                  "XDG_CONFIG_HOME": str(tmp_path / "config")}
    if var == "HOME" and ROOT_USER:
        env["CKPT_LEDGER_SYSTEM_DIR"] = where + "/ckpt-ledger"
    else:
        env[var] = where
    line = assert_one_error_line(run_main("log", env=env), "STORE_ERROR")
    assert where in line, line  # a read creates nothing: the store is not there
    line = assert_one_error_line(run_main("create", "vm", "c1", env=env), "STORE_ERROR")
    assert where in line and "--store" in line, line


def test_relative_xdg_data_home_is_ignored(tmp_path: Path) -> None:
    """The XDG spec: a relative path in XDG_DATA_HOME is invalid and ignored."""
    system = tmp_path / "system"
    run = run_main("rebuild", env={"XDG_DATA_HOME": "relative/dir", "HOME": str(tmp_path),
                                   "CKPT_LEDGER_SYSTEM_DIR": str(system)})
    assert run.code == 0, run.stderr
    made = system if ROOT_USER else tmp_path / ".local/share/ckpt-ledger"
    assert (made / "ledger.db").exists()
    assert not Path("relative").exists()


def info(tmp_path: Path, *argv: str, **env: str | None) -> dict[str, object]:
    import json

    base: dict[str, str | None] = {
        "HOME": str(tmp_path), "XDG_DATA_HOME": None, "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
        "CKPT_LEDGER_SYSTEM_CONFIG": str(tmp_path / "etc.toml"), "LIBVIRT_DEFAULT_URI": None,
        "CKPT_LEDGER_SYSTEM_DIR": str(tmp_path / "var-lib")}
    run = run_main(*argv, "info", "--json", env={**base, **env})
    assert run.code == 0, run.stderr
    return dict(json.loads(run.stdout))


def test_root_and_users_have_their_own_default_store_and_info_creates_nothing(
        tmp_path: Path) -> None:
    """root (and sudo, and cron) share the system folder; other users keep the XDG one;
    an absolute $XDG_DATA_HOME is honoured for both. ``info`` names it and where it came
    from, and creates no store."""
    got = info(tmp_path)
    if ROOT_USER:
        assert got["store"] == f"sqlite:///{tmp_path / 'var-lib' / 'ledger.db'}"
        assert str(got["store_from"]).startswith("default for root")
    else:
        assert got["store"] == f"sqlite:///{tmp_path / '.local/share/ckpt-ledger/ledger.db'}"
    assert "does not exist" in str(got["store_state"])
    assert not (tmp_path / "var-lib").exists() and not (tmp_path / ".local").exists()
    got = info(tmp_path, XDG_DATA_HOME=str(tmp_path / "xdg"))
    assert got["store"] == f"sqlite:///{tmp_path / 'xdg/ckpt-ledger/ledger.db'}"


def test_settings_come_from_option_then_environment_then_config_files_then_default(
        tmp_path: Path) -> None:
    """The user's config file overrides the system's; the environment overrides both; the
    command line overrides everything; ``info`` says where each came from."""
    (tmp_path / "etc.toml").write_text(
        'store = "sqlite:///from-system.db"\nhypervisor = "mock:sys.json"\n'
        'actor = "system-actor"\nlock_timeout = 5\n')
    user = tmp_path / "cfg" / "ckpt-ledger" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text('actor = "user-actor"\n')
    got = info(tmp_path)
    assert (got["store"], got["store_from"]) == ("sqlite:///from-system.db",
                                                 str(tmp_path / "etc.toml"))
    assert (got["hypervisor"], got["actor"], got["actor_from"]) == (
        "mock:sys.json", "user-actor", str(user))
    assert (got["lock_timeout"], got["lock_timeout_from"]) == ("5", str(tmp_path / "etc.toml"))
    assert got["config_files"] == {str(tmp_path / "etc.toml"): "read", str(user): "read"}
    got = info(tmp_path, CKPT_LEDGER_ACTOR="env-actor", LIBVIRT_DEFAULT_URI="test:///default")
    assert (got["actor"], got["actor_from"]) == ("env-actor", "$CKPT_LEDGER_ACTOR")
    assert (got["hypervisor"], got["hypervisor_from"]) == ("test:///default",
                                                           "$LIBVIRT_DEFAULT_URI")
    got = info(tmp_path, "--actor", "cli-actor", "--store", str(tmp_path / "x.db"),
               CKPT_LEDGER_ACTOR="env-actor")
    assert (got["actor"], got["actor_from"]) == ("cli-actor", "--actor")
    assert (got["store"], got["store_from"]) == (str(tmp_path / "x.db"), "--store")


@pytest.mark.parametrize("text,fragment", [
    ("store = ", "not valid TOML"),
    ("colour = 'blue'", "unknown key 'colour'"),
    ("actor = 5", "actor must be a non-empty line of text"),
    ("lock_timeout = -1", "lock_timeout in"),
    ("\xff\xfe", "not valid TOML"),
])
def test_a_bad_config_file_is_one_line_naming_it(tmp_path: Path, text: str,
                                                 fragment: str) -> None:
    (tmp_path / "etc.toml").write_bytes(text.encode("latin-1"))
    run = run_main("list", "vm", env={
        "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
        "CKPT_LEDGER_SYSTEM_CONFIG": str(tmp_path / "etc.toml")})
    line = assert_one_error_line(run)
    assert fragment in line and str(tmp_path / "etc.toml") in line, line


# ------------------------------------------------------------------ output
@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Host:
    """A ledger whose log, list and export are each well over a pipe's 64 KiB."""
    h = Host(tmp_path_factory.mktemp("big"))
    h.ok("mock", "define", "vm", "--disk", "vda", "--disk", "vdb")
    with Ledger.open(store=h.store, hypervisor=h.hv) as lg:
        for i in range(300):
            lg.create("vm", f"c{i:03d}-" + "x" * 100)
    return h


BIG = [("log",), ("log", "--jsonl"), ("log", "--json"), ("list", "vm", "--parent"),
       ("list", "vm", "--json"), ("export", "-"), ("export", "-", "--format", "msgpack")]
OUTPUTS = [*BIG, ("history", "vm", "c005-" + "x" * 100), ("head",)]


def piped(h: Host, argv: tuple[str, ...], reader: list[str]) -> tuple[int, int, str, bytes]:
    """``ckpt-ledger ARGV | READER``: (our exit, the reader's exit, our stderr, its stdout)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CKPT_LEDGER_")}
    env |= {"CKPT_LEDGER_STORE": h.store}
    writer = subprocess.Popen([str(SCRIPT), *argv], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env)
    assert writer.stdout is not None and writer.stderr is not None
    reader_p = subprocess.Popen(reader, stdin=writer.stdout, stdout=subprocess.PIPE)
    writer.stdout.close()  # only the reader holds the read end now
    out, _ = reader_p.communicate(timeout=60)
    err = writer.stderr.read().decode("utf-8", "backslashreplace")
    writer.stderr.close()
    return writer.wait(timeout=60), reader_p.returncode, err, out


def test_big_outputs_are_bigger_than_a_pipe(big: Host) -> None:
    """What makes the closed-pipe cases real: the writer is still writing when it closes."""
    for argv in BIG:
        code, _, _, out = piped(big, argv, ["wc", "-c"])
        assert code == 0
        assert int(out) > 65536, argv


@pytest.mark.parametrize("argv", OUTPUTS, ids=lambda a: " ".join(a)[:20])
def test_output_into_a_closed_pipe_exits_0_silently(big: Host, argv: tuple[str, ...]) -> None:
    """The reader is gone before the first write (``| true``) ..."""
    code, true_code, err, _ = piped(big, argv, ["true"])
    assert (code, true_code, err) == (0, 0, ""), err


@pytest.mark.parametrize("argv", BIG, ids=" ".join)
def test_output_into_a_pipe_closed_midway_exits_0_silently(
        big: Host, argv: tuple[str, ...]) -> None:
    """... or goes while it is being written (``| head -c 1``)."""
    code, head_code, err, out = piped(big, argv, ["head", "-c", "1"])
    assert (code, head_code, err) == (0, 0, ""), err
    assert len(out) == 1


def test_log_jsonl_head_1(big: Host) -> None:
    code, head_code, err, out = piped(big, ("log", "--jsonl"), ["head", "-1"])
    assert (code, head_code, err) == (0, 0, "")
    assert out.startswith(b'{"schema": "ckpt-ledger/event/1", "position": 1,')
    assert out.count(b"\n") == 1


@pytest.mark.parametrize("argv", [*OUTPUTS, ("--help",), ("log", "--help")],
                         ids=lambda a: " ".join(a)[:20])
def test_output_onto_a_full_device(big: Host, argv: tuple[str, ...]) -> None:
    events = big.event_count()
    with open("/dev/full", "wb") as full:
        run = run_main(*argv, env={"CKPT_LEDGER_STORE": big.store}, stdout=full.fileno())
    line = assert_one_error_line(run)
    assert line == "error: cannot write output: No space left on device [SYSTEM_ERROR]"
    assert big.event_count() == events


def test_create_onto_a_full_device_is_recorded_and_says_so(big: Host, tmp_path: Path) -> None:
    """The checkpoint is made and recorded; only its report is lost, and that is said."""
    h = big.clone(tmp_path / "h")
    events = h.event_count()
    env = {"CKPT_LEDGER_STORE": h.store, "CKPT_LEDGER_HYPERVISOR": h.hv}
    with open("/dev/full", "wb") as full:
        run = run_main("create", "vm", "late", env=env, stdout=full.fileno())
    assert_one_error_line(run, "SYSTEM_ERROR")
    assert h.event_count() > events
    assert "late" in h.names("vm")


def test_errors_onto_a_full_stderr_exit_non_zero_quietly(big: Host) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CKPT_LEDGER_")}
    env |= {"CKPT_LEDGER_STORE": big.store}
    with open("/dev/full", "wb") as full:
        p = subprocess.run([str(SCRIPT), "show", "vm", "nope"], stdout=subprocess.PIPE,
                           stderr=full, env=env, timeout=60)
    assert p.returncode == 1 and p.stdout == b""


# ------------------------------------------------------------------ full disk
@pytest.fixture(params=["size=64k", "size=1m,nr_inodes=4"], ids=["no-space", "no-inodes"])
def small_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A tmpfs that is soon full: of bytes (64 KiB), or of files (4 inodes: the root, the
    file the test leaves there and two more). Skips when mounting is not permitted."""
    with small_tmpfs(tmp_path, request.param) as where:
        yield where


def fill(folder: Path) -> None:
    """Use up the disk: its bytes with one file, then its inodes with empty ones."""
    with open(folder / "ballast", "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)
    with contextlib.suppress(OSError):
        for i in range(1000):
            (folder / f"inode{i}").touch()


def what_is_there(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()
            if p.name != "ballast" and not p.name.startswith("inode")}


OUT_FILES = [("export", "{out}/x.jsonl"), ("export", "{out}/x.msgpack", "--format", "msgpack"),
             ("timeline", "vm", "--out", "{out}/x.svg"), ("timeline", "vm", "-o", "{out}/x.html")]


@pytest.mark.parametrize("argv", OUT_FILES, ids=lambda a: a[-1].rpartition(".")[2])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
def test_writing_a_file_onto_a_full_disk(
        big: Host, small_disk: Path, argv: tuple[str, ...], existing: bool) -> None:
    """One line naming the file; nothing half-written: the target as it was (absent, or
    its old contents), no temporary file left beside it."""
    args = [a.format(out=small_disk) for a in argv]
    target = Path(next(a for a in args if a.startswith(str(small_disk))))
    if existing:
        target.write_bytes(b"old contents\n")
    fill(small_disk)
    before, events = what_is_there(small_disk), big.event_count()
    run = run_main(*args, env={"CKPT_LEDGER_STORE": big.store})
    line = assert_one_error_line(run, "SYSTEM_ERROR")
    assert f"cannot write {target}: No space left on device" in line, line
    assert what_is_there(small_disk) == before
    assert big.event_count() == events
