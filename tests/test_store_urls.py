"""Every way of naming a store that the parts underneath accept, the ledger accepts.

* ``Ledger.open(store=...)``: a URL string, an EventStore, or any ``os.PathLike`` (a
  path means SQLite, as a bare path does on the command line).
* ``postgresql://`` URLs: every form libpq takes (unix-socket folders as ``?host=`` or
  percent-encoded, several hosts, IPv6, ``user:password@``, libpq's own parameters); only
  the ledger's ``schema=`` is kept from libpq. A password never shows: not in the store's
  ``url``, nor in any error.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path, PurePath
from typing import Any

import pytest

from ledger import Ledger
from ledger.app.plugins import open_store
from ledger.domain.errors import LedgerError
from ledger.log.records import NewRecord

SOCKET_DIR = "/var/run/postgresql"


class FsPath:
    """An ``os.PathLike`` that is not a ``pathlib`` path."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __fspath__(self) -> str:
        return self.path


@pytest.mark.parametrize("kind", [Path, PurePath, FsPath], ids=lambda k: k.__name__)
def test_ledger_opens_a_path_as_sqlite(tmp_path: Path, kind: Any) -> None:
    db = tmp_path / "ledger.db"
    with Ledger.open(store=kind(str(db))) as lg:
        assert lg.store.url == f"sqlite:///{db}"
        assert lg.log() == []
    assert db.is_file()


def test_ledger_refuses_what_is_not_a_store(tmp_path: Path) -> None:
    for bad in (42, b"/tmp/x.db", ["x"], object()):
        with pytest.raises(LedgerError) as ei:
            Ledger.open(store=bad)  # type: ignore[arg-type]
        assert ei.value.code == "STORE_URL", bad


# ---------------------------------------------------------------- postgresql URL forms
def _pg_or_skip() -> None:
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")


def forms(schema: str) -> list[str]:
    """The same local server and database, named every way libpq accepts."""
    out = [
        f"postgresql://postgres@127.0.0.1:5432/test?schema={schema}",
        f"postgres://postgres@127.0.0.1/test?schema={schema}",
        f"postgresql+psycopg://postgres@127.0.0.1:5432/test?schema={schema}",
        f"postgresql://postgres:s3cret@127.0.0.1:5432/test?schema={schema}",
        f"postgresql://postgres@127.0.0.1:5432/test?password=s3cret&schema={schema}",
        # the server listens on 127.0.0.1 only: libpq tries [::1], then the next host
        f"postgresql://postgres@[::1]:5432,127.0.0.1:5432/test?schema={schema}",
        f"postgresql://postgres@127.0.0.1:1,127.0.0.1:5432/test?schema={schema}",
        f"postgresql://postgres@localhost:1,localhost:5432/test?schema={schema}"
        "&target_session_attrs=any",
        f"postgresql://postgres@127.0.0.1/test?schema={schema}&sslmode=disable"
        "&application_name=ckpt%20ledger%2Btest&connect_timeout=5",
        f"postgresql://127.0.0.1/test?user=postgres&port=5432&schema={schema}",
        f"postgresql:///test?host=127.0.0.1&user=postgres&schema={schema}",
    ]
    if os.path.isdir(SOCKET_DIR):
        out += [
            f"postgresql:///test?host={SOCKET_DIR}&user=postgres&schema={schema}",
            f"postgresql://postgres@%2Fvar%2Frun%2Fpostgresql/test?schema={schema}",
            f"postgresql://postgres@%2Fvar%2Frun%2Fpostgresql:5432/test?schema={schema}",
        ]
    return out


@pytest.mark.postgres
def test_every_libpq_url_form_reaches_the_same_store(pg_url: str) -> None:
    """One schema, opened through each form: each sees what the others appended."""
    _pg_or_skip()
    schema = pg_url.rpartition("schema=")[2]
    if not os.path.isdir(SOCKET_DIR):
        print(f"{SOCKET_DIR} missing: the unix-socket forms are not tried")
    for i, url in enumerate(forms(schema)):
        try:
            with open_store(url) as store:
                assert store.last_position() == i, url
                store.append([NewRecord("s", "vm", "Noted", 1, 1.0, b"")])
                assert "s3cret" not in store.url, store.url
                assert f"schema={schema}" in store.url
        except LedgerError as e:
            raise AssertionError(f"{url}: {e}") from None


def test_schema_stays_out_of_libpq() -> None:
    _pg_or_skip()
    from backends.postgres import parse_url

    conninfo, schema, display = parse_url(
        "postgresql://u:pw@h1:5432,[::1]:5433/db?sslmode=require&schema=s1&application_name=a%26b")
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(conninfo)
    assert schema == "s1" and "schema" not in params
    assert params["host"] == "h1,::1" and params["port"] == "5432,5433"
    assert params["sslmode"] == "require" and params["password"] == "pw"
    assert params["application_name"] == "a&b"
    assert "pw" not in display.replace("postgresql", "") and "s1" in display


@pytest.mark.parametrize("url", [
    "postgresql://u:s3cret@127.0.0.1:5432/test?sslmode=bogus",
    "postgresql://u@127.0.0.1:5432/test?password=s3cret&nosuchparam=1",
    "postgresql://u:s3cret@127.0.0.1:notaport/test",
    "postgresql://u:s3cret@[::1/test",
    "postgresql://u:s3cret@127.0.0.1/test?schema=a&schema=b;drop",
])
def test_a_url_libpq_refuses_is_one_line_without_the_password(url: str) -> None:
    _pg_or_skip()
    from backends.postgres import open_url

    with pytest.raises(LedgerError) as ei:
        open_url(url)
    assert ei.value.code in ("STORE_URL", "STORE_ERROR")
    assert "s3cret" not in str(ei.value) and "\n" not in str(ei.value)


@pytest.mark.postgres
def test_cli_error_never_shows_the_password(pg_url: str) -> None:
    """Through the CLI too, in every form the password can take."""
    _pg_or_skip()
    for url in ("postgresql://nosuchrole:s3cret@127.0.0.1:5432/test",
                "postgresql://nosuchrole@127.0.0.1:5432/test?password=s3cret",
                "postgresql://postgres:s3cret@127.0.0.1:5432/no_such_db_ckpt"):
        p = subprocess.run([sys.executable, "-m", "cli.app", "--store", url, "log"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 1 and p.stderr.count("\n") == 1, p.stderr
        assert "s3cret" not in p.stderr and p.stderr.endswith("[STORE_ERROR]\n"), p.stderr
