"""``copy`` verifies its source before writing and is all or nothing.

A source whose hash chain is broken (an edited payload, an edited hash, a deleted event) is
refused with one line naming the position before anything is written; a copy that fails
for any reason (that, a target that runs out of space, a copy that does not verify) leaves
the target as it was: an absent target stays absent (no file, no sidecar, no schema), an
existing empty one stays empty. Sources are real SQLite stores damaged with raw SQL.
"""

from __future__ import annotations

import os
import resource
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from backends.memory import MemoryStore
from ledger.app.copying import copy_store
from ledger.domain.errors import LedgerError

try:
    from .helpers import SCRIPT, Host, assert_one_error_line
    from .proc_worker import open_store
    from .test_copy_follow import _fill
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    from helpers import SCRIPT, Host, assert_one_error_line  # type: ignore[no-redef]
    from proc_worker import open_store  # type: ignore[no-redef]
    from test_copy_follow import _fill  # type: ignore[no-redef]

TAMPERS: dict[str, str] = {
    "payload": "UPDATE events SET payload = CAST(payload || x'00' AS BLOB) WHERE position = 3",
    "hash": "UPDATE events SET hash = substr(hash, 2) || '0' WHERE position = 3",
    "deleted": "DELETE FROM events WHERE position = 3",
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small SQLite ledger (10 events, two domains)."""
    folder = tmp_path_factory.mktemp("pristine")
    _fill(f"sqlite:///{folder}/ledger.db", folder / "host.json")
    return folder / "ledger.db"


def _damaged(pristine: Path, folder: Path, sql: str) -> str:
    db = folder / "source.db"
    shutil.copy(pristine, db)
    with sqlite3.connect(db) as conn:
        conn.execute(sql)
    conn.close()
    return f"sqlite:///{db}"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# a target: (make it, or not) -> its URL and a probe of its state to compare before/after
Target = Callable[[Path, str], tuple[str, Callable[[], Any]]]


def _file_target(scheme: str, make: bool) -> Target:
    def target(folder: Path, pg_url: str) -> tuple[str, Callable[[], Any]]:
        out = folder / "out"
        out.mkdir()
        url = f"{scheme}:///{out}/copy.{scheme}"
        if make:
            open_store(url).close()
        return url, lambda: _files(out)
    return target


def _pg_target(make: bool) -> Target:
    def target(folder: Path, pg_url: str) -> tuple[str, Callable[[], Any]]:
        schema = pg_url.rpartition("schema=")[2]
        if make:
            open_store(pg_url).close()

        def probe() -> Any:
            with psycopg.connect(pg_url.partition("?")[0], autocommit=True) as c:
                tables = sorted(r[0] for r in c.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                    [schema]))
                exists = c.execute("SELECT 1 FROM information_schema.schemata WHERE "
                                   "schema_name = %s", [schema]).fetchone() is not None
                rows = (c.execute(f"SELECT count(*) FROM {schema}.events").fetchone()
                        if "events" in tables else None)
            return exists, tables, rows
        return pg_url, probe
    return target


TARGETS: dict[str, Target] = {
    "sqlite-absent": _file_target("sqlite", False),
    "sqlite-empty": _file_target("sqlite", True),
    "msgpack-absent": _file_target("msgpack", False),
    "msgpack-empty": _file_target("msgpack", True),
}
PG_TARGETS: dict[str, Target] = {
    "postgres-absent": _pg_target(False),
    "postgres-empty": _pg_target(True),
}


def _check_refused(pristine: Path, tmp_path: Path, target: Target, pg_url: str,
                   tamper: str) -> None:
    source = _damaged(pristine, tmp_path, TAMPERS[tamper])
    url, probe = target(tmp_path, pg_url)
    before = probe()
    line = assert_one_error_line(Host(tmp_path).main("copy", "--from", source, "--to", url),
                                 "STORE_ERROR")
    assert "hash chain broken at position 3" in line and "nothing was copied" in line
    assert probe() == before


@pytest.mark.parametrize("tamper", sorted(TAMPERS))
@pytest.mark.parametrize("kind", sorted(TARGETS))
def test_a_broken_source_is_refused_and_the_target_left_as_it_was(
        pristine: Path, tmp_path: Path, kind: str, tamper: str) -> None:
    _check_refused(pristine, tmp_path, TARGETS[kind], "", tamper)


@pytest.mark.postgres
@pytest.mark.parametrize("tamper", sorted(TAMPERS))
@pytest.mark.parametrize("kind", sorted(PG_TARGETS))
def test_a_broken_source_leaves_postgres_as_it_was(
        pristine: Path, tmp_path: Path, pg_url: str, kind: str, tamper: str) -> None:
    _check_refused(pristine, tmp_path, PG_TARGETS[kind], pg_url, tamper)


@pytest.mark.parametrize("tamper", sorted(TAMPERS))
def test_copy_store_verifies_the_whole_source_before_writing(
        pristine: Path, tmp_path: Path, tamper: str) -> None:
    source = open_store(_damaged(pristine, tmp_path, TAMPERS[tamper]))
    target = MemoryStore()
    try:
        with pytest.raises(LedgerError) as err:
            copy_store(source, target, batch_size=1)
        assert err.value.code == "STORE_ERROR"
        assert "position 3" in str(err.value)
        assert target.last_position() == 0  # not even positions 1-2
    finally:
        source.close()


class _Swapped(MemoryStore):
    """A source whose records change after the first full read (between the check and
    the copy): the copy must refuse what it did not verify."""

    reads = 0

    def read_all(self, after: int = 0, limit: int | None = None) -> Iterator[Any]:
        self.reads += 1
        for rec in super().read_all(after, limit):
            yield replace(rec, payload=rec.payload + b"x") if (
                self.reads > 1 and rec.position == 4) else rec


def test_copy_store_copies_only_what_it_verified(pristine: Path) -> None:
    real = open_store(f"sqlite:///{pristine}")
    source = _Swapped()
    try:
        copy_store(real, source, verify=False)
    finally:
        real.close()
    source.reads = 0
    with pytest.raises(LedgerError) as err:
        copy_store(source, MemoryStore())
    assert err.value.code == "STORE_ERROR" and "changed while it was copied" in str(err.value)


@pytest.mark.parametrize("kind", sorted(TARGETS))
def test_a_copy_that_does_not_verify_leaves_the_target_as_it_was(
        pristine: Path, tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _lying_verify(monkeypatch)
    url, probe = TARGETS[kind](tmp_path, "")
    before = probe()
    run = Host(tmp_path).main("copy", "--from", f"sqlite:///{pristine}", "--to", url)
    assert "position 2: type differs" in assert_one_error_line(run, "STORE_ERROR")
    assert probe() == before


@pytest.mark.postgres
@pytest.mark.parametrize("kind", sorted(PG_TARGETS))
def test_a_copy_that_does_not_verify_leaves_postgres_as_it_was(
        pristine: Path, tmp_path: Path, pg_url: str, kind: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _lying_verify(monkeypatch)
    url, probe = PG_TARGETS[kind](tmp_path, pg_url)
    before = probe()
    run = Host(tmp_path).main("copy", "--from", f"sqlite:///{pristine}", "--to", url)
    assert "position 2: type differs" in assert_one_error_line(run, "STORE_ERROR")
    assert probe() == before
    monkeypatch.undo()  # with the real verify the same copy succeeds
    ok = Host(tmp_path).main("copy", "--from", f"sqlite:///{pristine}", "--to", url)
    assert ok.code == 0, ok.stderr
    assert "copied 10 events" in ok.stdout


def _lying_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    """verify_copy reporting a difference after every record was appended."""
    import cli.ops_cmd
    import ledger.app.copying as copying

    real = copying.verify_copy

    def lying(src: Any, dst: Any, **kw: Any) -> copying.VerifyResult:
        assert dst.last_position() == 10  # the whole copy was written when it fails
        return replace(real(src, dst, **kw), mismatch=copying.Mismatch(2, "type", "A", "B"))

    monkeypatch.setattr(cli.ops_cmd, "verify_copy", lying)


@pytest.fixture(scope="module")
def big_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite ledger of ~200 KiB, more than the file size limit below allows."""
    folder = tmp_path_factory.mktemp("big")
    _fill(f"sqlite:///{folder}/ledger.db", folder / "host.json", creates=40)
    assert (folder / "ledger.db").stat().st_size > 4 * _LIMIT
    return folder / "ledger.db"


_LIMIT = 48 * 1024


@pytest.mark.parametrize("kind", sorted(TARGETS))
def test_a_target_that_runs_out_of_space_is_left_as_it_was(
        big_source: Path, tmp_path: Path, kind: str) -> None:
    """RLIMIT_FSIZE makes every write past 48 KiB fail (EFBIG), as a full disk would."""
    url, probe = TARGETS[kind](tmp_path, "")
    before = probe()

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (_LIMIT, _LIMIT))

    env = {k: v for k, v in os.environ.items() if not k.startswith("CKPT_LEDGER")}
    p = subprocess.run([str(SCRIPT), "copy", "--from", f"sqlite:///{big_source}", "--to", url],
                       capture_output=True, env=env, timeout=60, preexec_fn=limit)
    assert p.returncode == 1
    err = p.stderr.decode()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and err.rstrip().endswith("[STORE_ERROR]"), err
    assert probe() == before
