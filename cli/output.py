"""How the CLI speaks: JSON with --json, plain tables on a terminal, errors as one line."""

from __future__ import annotations

import functools
import itertools
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from ledger import LedgerError
from ledger.app.shapes import tagged

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` (one line) on stderr and return the Exit to raise."""
    typer.echo("error: " + " ".join(message.split()), err=True)
    return typer.Exit(code)


def handles_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn a LedgerError (or a bad file) into one line on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except LedgerError as err:
            raise fail(f"{shown(err.one_line())} [{err.code}]") from None
        except ValidationError as err:
            first = err.errors()[0]
            raise fail(f"invalid value: {first.get('msg')} [INVALID_ARG]") from None

    return wrapper


def to_plain(value: Any) -> Any:
    """Pydantic models (and lists of them) as plain JSON data."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value


JSON = typer.Option(False, "--json", help="Print only JSON on stdout.")


def print_json(value: Any, shape: str) -> None:
    """Only JSON on stdout: ``value`` (an object, or a list of objects) of output shape
    ``shape`` (ledger/app/shapes.py), each object with its ``schema`` field."""
    plain = to_plain(value)
    plain = [tagged(x, shape) for x in plain] if isinstance(plain, list) else tagged(plain, shape)
    sys.stdout.write(json.dumps(plain, indent=2, ensure_ascii=False) + "\n")


_CONTROL = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def shown(text: object) -> str:
    """``text`` for a line of text output: control and format characters (newlines, escape
    sequences, bidirectional overrides) written as escapes, so recorded free text (an actor,
    a reason, a description) can never forge lines or restyle the terminal. JSON output is
    left exact."""
    out = str(text)
    if out.isprintable():
        return out
    return "".join(
        c if c.isprintable() or c == " " else
        _CONTROL.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
        for c in out)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A virsh-style table: a header, a dashed rule, left-aligned columns (every cell
    :func:`shown`).

    Kept by hand rather than ``rich``'s tables: the layout is virsh's exactly (what users
    compare by eye and scripts cut by column), it never wraps or truncates a cell, and it is
    the same on a terminal and in a pipe."""
    return "\n".join(_table_lines(headers, rows, len(rows)))


def stream_table(headers: Sequence[str], rows: Iterable[Sequence[Any]],
                 optional_last: bool = False, sample: int = 1000) -> None:
    """:func:`table` printed as ``rows`` come, in constant memory: the column widths are the
    first ``sample`` rows' (a longer cell later widens its own line only). With
    ``optional_last``, the last column is left out when no sampled row fills it and every
    row was sampled (a longer output keeps it: a later row may fill it)."""
    write = sys.stdout.write
    for line in _table_lines(headers, rows, sample, optional_last):
        write(line + "\n")


def _table_lines(headers: Sequence[str], rows: Iterable[Sequence[Any]], sample: int,
                 optional_last: bool = False) -> Iterator[str]:
    """The lines of a table whose column widths are its first ``sample`` rows'."""
    it = iter(rows)
    head = list(itertools.islice(it, sample))
    if optional_last and len(head) < sample and not any(r[-1] for r in head):
        headers, head = headers[:-1], [r[:-1] for r in head]
    cells = [[shown(c) for c in r] for r in head]
    widths = [len(h) for h in headers]
    for r in cells:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))

    def line(r: Sequence[str]) -> str:
        return (" " + "   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))).rstrip()

    top = " " + "   ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    yield top.rstrip()
    yield "-" * (len(top) + 1)
    for r in cells:
        yield line(r)
    for row in it:
        yield line([shown(c) for c in row])


@contextmanager
def progress_bar(ctx: typer.Context, label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr, told ``(done, total)``: only on a terminal, and not with
    ``--no-progress``; else None (no callback)."""
    settings = getattr(ctx.find_root(), "obj", None)
    if getattr(settings, "no_progress", False) or not sys.stderr.isatty():
        yield None
        return
    with typer.progressbar(length=1, label=label, file=sys.stderr) as bar:

        def told(done: int, total: int) -> None:
            bar.length = max(total, 1)
            bar.update(done - bar.pos)

        yield told
