"""Read commands open the store read-only: they change no byte, create no file and never
bring a store into being.

For each file backend a small ledger is written through the CLI (mock hypervisor), then
every read command runs against it (list, show, bitmaps, plan, log, history, timeline,
verify-log, head, export, follow, verify without --record) with snapshots due after every
event: each answers, and the store's folder is byte for byte what it was. A store that does
not exist is refused by each read command with one line naming its URL, and nothing is
created (not the file, not its folder, not a PostgreSQL schema). ``Ledger.open(...,
readonly=True)`` saves no snapshot on close and refuses writes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger import Ledger
from ledger.domain.errors import LedgerError

try:
    from .helpers import Host, assert_one_error_line
    from .store_contract import files_footprint
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    from helpers import Host, assert_one_error_line  # type: ignore[no-redef]
    from store_contract import files_footprint  # type: ignore[no-redef]

FILE_BACKENDS = {"sqlite": "ledger.db", "msgpack": "ledger.log"}


def _reads(out: Path) -> list[list[str]]:
    """Every read command, with the options that reach the store differently."""
    return [
        ["list", "vm"], ["list", "vm", "--tree"], ["list", "vm", "--as-of", "3"],
        ["show", "vm", "c1"], ["show", "vm", "c1", "--xml"], ["bitmaps", "vm"],
        ["plan", "vm", "--since", "c1"], ["log"], ["log", "--domain", "vm"],
        ["history", "vm", "c1"], ["timeline", "vm", "--out", str(out / "t.svg")],
        ["verify-log"], ["head"], ["export", str(out / "e.jsonl")], ["export", "-"],
        ["export", str(out / "d.jsonl"), "--domain", "vm"],
        ["follow", "--after", "0", "--timeout", "0.05"], ["verify"],
    ]


def _ledger(tmp_path: Path, backend: str) -> tuple[Host, Path]:
    """A host whose store lives alone in tmp_path/store: vm with c1 <- c2 <- c3, c2 deleted."""
    host = Host(tmp_path)
    folder = tmp_path / "store"
    folder.mkdir()
    host.store = f"{backend}:///{folder / FILE_BACKENDS[backend]}"
    host.ok("mock", "define", "vm", "--disk", "vda", "--disk", "vdb")
    for name in ("c1", "c2", "c3"):
        host.ok("create", "vm", name)
    host.ok("delete", "vm", "c2")
    return host, folder


@pytest.mark.parametrize("backend", list(FILE_BACKENDS))
def test_read_commands_change_no_byte_and_create_no_file(tmp_path: Path, backend: str) -> None:
    host, folder = _ledger(tmp_path, backend)
    out = tmp_path / "out"
    out.mkdir()
    before = files_footprint(str(folder))
    env = host.env(CKPT_LEDGER_SNAPSHOT_EVERY="1")  # a snapshot would be due at once
    for argv in _reads(out):
        run = host.main(*argv, env=env)
        assert run.code == 0, (argv, run.everything)
        assert files_footprint(str(folder)) == before, argv
    # the write commands still write: the first one saves the due snapshot
    host.ok("create", "vm", "c4")
    assert files_footprint(str(folder)) != before


@pytest.mark.parametrize("backend", list(FILE_BACKENDS))
def test_read_commands_refuse_a_missing_store_and_create_nothing(
    tmp_path: Path, backend: str
) -> None:
    host = Host(tmp_path)
    host.ok("mock", "define", "vm", "--disk", "vda")
    out = tmp_path / "out"
    out.mkdir()
    for where in ("ledger", "no/such/folder/ledger"):
        url = f"{backend}:///{tmp_path / 'store'}/{where}.{backend}"
        host.store = url
        for argv in _reads(out):
            line = assert_one_error_line(host.main(*argv), "STORE_ERROR")
            assert url in line and "does not exist" in line, (argv, line)
        assert not (tmp_path / "store").exists()
        assert sorted(p.name for p in out.iterdir()) == []


def test_the_default_store_is_not_created_by_a_read(tmp_path: Path) -> None:
    """Without --store or $CKPT_LEDGER_STORE the store is under $XDG_DATA_HOME: a read
    refuses it (naming it) without creating the ckpt-ledger folder; a write creates both."""
    host = Host(tmp_path)
    host.ok("mock", "define", "vm", "--disk", "vda")
    xdg = tmp_path / "xdg"
    env = host.env(CKPT_LEDGER_STORE=None, XDG_DATA_HOME=str(xdg))
    line = assert_one_error_line(host.main("list", "vm", env=env), "STORE_ERROR")
    assert str(xdg / "ckpt-ledger" / "ledger.db") in line
    assert not xdg.exists()
    assert host.main("create", "vm", "c1", env=env).code == 0
    assert (xdg / "ckpt-ledger" / "ledger.db").is_file()
    assert host.main("list", "vm", "--name", env=env).stdout.split() == ["c1"]


@pytest.mark.parametrize("backend", list(FILE_BACKENDS))
def test_a_readonly_ledger_saves_no_snapshot_and_refuses_writes(
    tmp_path: Path, backend: str
) -> None:
    host, folder = _ledger(tmp_path, backend)
    before = files_footprint(str(folder))
    with Ledger.open(host.store, host.hv, readonly=True, snapshot_every=1) as lg:
        assert sorted(lg.state("vm").checkpoints) == ["c1", "c3"]
        assert lg.verify(["vm"])[0].ok
        with pytest.raises(LedgerError) as ei:
            lg.create("vm", "c9")
        assert ei.value.code == "STORE_ERROR" and "read-only" in str(ei.value)
        assert not lg.save_snapshot(force=True)
    assert files_footprint(str(folder)) == before
    with Ledger.open(host.store, snapshot_every=1):  # read-write: the snapshot is saved
        pass
    assert files_footprint(str(folder)) != before


@pytest.mark.postgres
def test_postgres_reads_create_no_schema_and_write_nothing(pg_url: str, tmp_path: Path) -> None:
    """A read command on a PostgreSQL schema that does not exist is refused without creating
    it; on an existing ledger the reads leave every row as it was (no snapshot saved)."""
    import psycopg

    schema = pg_url.rsplit("schema=", 1)[1]
    host = Host(tmp_path)
    host.ok("mock", "define", "vm", "--disk", "vda")
    host.store = pg_url
    out = tmp_path / "out"
    out.mkdir()

    def footprint() -> object:
        with psycopg.connect(pg_url.split("?")[0], autocommit=True) as c:
            tables = [r[0] for r in c.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                "ORDER BY 1", [schema])]
            return c.execute("SELECT count(*) FROM information_schema.schemata WHERE "
                             "schema_name = %s", [schema]).fetchone(), {
                t: c.execute(f"SELECT array_agg(x::text ORDER BY x::text) FROM {schema}.{t} x"
                             ).fetchone() for t in tables}

    missing = footprint()
    for argv in (["list", "vm"], ["log"], ["verify-log"], ["head"], ["follow", "--after", "0",
                                                                      "--timeout", "0.05"]):
        line = assert_one_error_line(host.main(*argv), "STORE_ERROR")
        assert "does not exist" in line and schema in line, line
    assert footprint() == missing
    host.ok("create", "vm", "c1")
    host.ok("create", "vm", "c2")
    before = footprint()
    env = host.env(CKPT_LEDGER_SNAPSHOT_EVERY="1")
    for argv in _reads(out):
        run = host.main(*argv, env=env)
        assert run.code == 0, (argv, run.everything)
    assert footprint() == before
