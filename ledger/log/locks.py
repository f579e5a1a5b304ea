"""Waiting for a lock held elsewhere, with a word after a moment and a limit.

:func:`wait` polls a non-blocking acquire: after :data:`NOTICE_AFTER` seconds it logs one
warning, ``waiting for the ledger lock ... held by ...`` (the CLI prints it on stderr; not
when the timeout ends within a second anyway), and once the timeout passes it raises
``LedgerError("OPERATION_TIMEOUT")`` naming the holder when it is known. The timeout is
``Ledger.open(lock_timeout=)``, the CLI's ``--lock-timeout``, ``$CKPT_LEDGER_LOCK_TIMEOUT``
or :data:`DEFAULT_TIMEOUT` seconds; 0 fails at once, ``inf`` waits for ever.

:func:`file_lock` is an exclusive ``flock`` waited for that way. Its holder writes one line
of JSON into the lock file (pid, host, command line, since when), which a waiter reads to
name it; the line is removed on release.

Kept by hand rather than ``filelock``: the same ``flock`` and timeout, but a waiter here also
learns who holds the lock (the holder's line) and says so, the one wait loop serves the
PostgreSQL advisory locks too, and the ledger keeps no extra dependency for ~100 lines.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime

from ledger.domain.errors import LedgerError

DEFAULT_TIMEOUT = 60.0
NOTICE_AFTER = 1.0
ENV = "CKPT_LEDGER_LOCK_TIMEOUT"
log = logging.getLogger(__name__)


def check_timeout(value: object, what: str = "the lock timeout") -> float:
    """``value`` as seconds >= 0 (``inf``: no limit); INVALID_ARG otherwise."""
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        seconds = math.nan
    if isinstance(value, bool) or math.isnan(seconds) or seconds < 0:
        raise LedgerError("INVALID_ARG", f"{what} must be a number of seconds >= 0 (or inf), "
                          f"not {str(value)[:40]!r}")
    return seconds


def timeout_from_env() -> float:
    """``$CKPT_LEDGER_LOCK_TIMEOUT`` (checked), else :data:`DEFAULT_TIMEOUT`."""
    env = os.environ.get(ENV, "").strip()
    return check_timeout(env, f"${ENV}") if env else DEFAULT_TIMEOUT


def _seconds(t: float) -> str:
    return "ever" if math.isinf(t) else f"{t:g} s"


def wait(try_acquire: Callable[[], bool], timeout: float, what: str,
         holder: Callable[[], str | None]) -> None:
    """Call ``try_acquire`` until it returns True, for at most ``timeout`` seconds (see the
    module docstring); ``what`` names the lock and ``holder()`` who holds it (or None)."""
    start = time.monotonic()
    deadline = start + timeout
    noticed = False
    pause = 0.01
    while not try_acquire():
        now = time.monotonic()
        if now >= deadline:
            who = holder()
            raise LedgerError(
                "OPERATION_TIMEOUT",
                f"cannot acquire {what} within {_seconds(timeout)}: "
                + (f"held by {who}" if who else "its holder is unknown"),
                hint=f"--lock-timeout SECONDS or ${ENV} waits longer")
        if not noticed and now - start >= NOTICE_AFTER and deadline - now > NOTICE_AFTER:
            noticed = True
            who = holder()
            log.warning("waiting for %s%s (for up to %s) ...", what,
                        f" held by {who}" if who else "", _seconds(timeout))
        time.sleep(min(pause, max(deadline - now, 0.0)))
        pause = min(pause * 2, 0.1)


_SECRETS = re.compile(r"(://[^/@:\s]*:)[^@/\s]*@|((?:^|[?&\s])password=)[^&\s]*")


def command_line() -> str:
    """This process's command line on one line, passwords in URLs masked."""
    argv = [os.path.basename(sys.argv[0]) if sys.argv else "python", *sys.argv[1:]]
    text = " ".join(" ".join(argv).split())
    return _SECRETS.sub(lambda m: (m.group(1) + "***@") if m.group(1) else
                        (m.group(2) + "***"), text)


def stamp() -> str:
    """One line of JSON saying who this process is, for a lock file."""
    return json.dumps({
        "pid": os.getpid(), "host": socket.gethostname(), "argv": command_line()[:200],
        "since": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }) + "\n"


def describe(line: str) -> str | None:
    """``pid N on HOST (COMMAND) since TIME`` from a :func:`stamp` line (None if unreadable)."""
    try:
        info = json.loads(line)
        return (f"pid {int(info['pid'])} on {str(info['host'])[:64]} "
                f"({str(info['argv'])[:200]}) since {str(info['since'])[:32]}")
    except (ValueError, TypeError, KeyError):
        return None


def _holder_of(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return describe(f.read(4096).decode("utf-8", "replace"))
    except OSError:
        return None


def _try_flock(fd: int, path: str) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as e:
        raise LedgerError("STORE_ERROR", f"cannot lock {path}: {e.strerror}") from e


@contextmanager
def file_lock(path: str, timeout: float | None = None) -> Iterator[None]:
    """An exclusive ``fcntl.flock`` on ``path`` (created if missing), held for the block and
    waited for as :func:`wait` does (``timeout`` None: :func:`timeout_from_env`).

    Each call opens its own file description, so two threads of one process exclude each
    other as two processes do. The lock is not re-entrant: nesting it in one thread waits.
    """
    limit = timeout_from_env() if timeout is None else check_timeout(timeout)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise LedgerError("STORE_ERROR", f"cannot open lock file {path}: {e.strerror}") from e
    try:
        wait(lambda: _try_flock(fd, path), limit, f"the ledger lock {path}",
             lambda: _holder_of(path))
        with suppress(OSError):  # who holds it is a courtesy to waiters: a full disk is fine
            os.ftruncate(fd, 0)
            os.pwrite(fd, stamp().encode(), 0)
        try:
            yield
        finally:
            with suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the last descriptor releases the flock
