"""Processes the crash, concurrency and fault tests run (``python tests/proc_worker.py MODE``).

Modes:

* ``zygote``: import the ledger once, then for each JSON line on stdin
  (``{"out": path, "fn": name, "args": [...]}``) fork a child whose stdout and stderr go to
  ``path`` and ``path.err``, run ``fn(*args)`` in it, and answer the child's pid on stdout.
  Forking a warm process costs milliseconds where a fresh interpreter costs ~0.5 s, which
  is what lets the crash test afford 200 kills. Children are reaped automatically.
* ``conc STORE_URL OWN_STATE OWN_DOMAIN SHARED_STATE SHARED_DOMAIN N WORKER GO_FILE``:
  one concurrency-test writer (see :func:`concurrent_writer`).
* ``fsize STORE_URL LIMIT``: the RLIMIT_FSIZE fault (see :func:`fsize_writer`).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
from typing import Any

from adapters.mock import MockHypervisor
from ledger import Ledger
from ledger.domain.errors import LedgerError
from ledger.log.records import NewRecord
from ledger.log.store import EventStore


def open_store(url: str) -> EventStore:
    """The store at ``url`` through its backend module (no entry-point scan: it is slow)."""
    if url.startswith("sqlite:"):
        from backends.sqlite import open_url
    elif url.startswith("msgpack:"):
        from backends.msgpack_log import open_url  # type: ignore[assignment]
    elif url.startswith("postgres"):
        from backends.postgres import open_url  # type: ignore[assignment]
    else:
        raise ValueError(url)
    store: EventStore = open_url(url)
    return store


def say(line: str) -> None:
    """One line on stdout, written with a single write(2): it is there or it is not."""
    os.write(1, (line + "\n").encode())


# ------------------------------------------------------------------------- crash writer
def crash_writer(store_url: str, state: str, domains: list[str], prefix: str) -> None:
    """Create checkpoints round-robin on ``domains`` forever; print ``DOMAIN NAME`` after
    each create returns (``ready`` once the ledger is open). Runs until killed."""
    lg = Ledger.open(open_store(store_url), MockHypervisor(state))
    say("ready")
    i = 0
    while True:
        domain = domains[i % len(domains)]
        name = f"{prefix}-{i}"
        lg.create(domain, name)
        say(f"{domain} {name}")
        i += 1


FUNCTIONS = {"crash_writer": crash_writer}


def zygote() -> None:
    """Fork a child per request line (see the module docstring)."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the children
    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the child
            code = 0
            try:
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                out = os.open(req["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                err = os.open(req["out"] + ".err", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(out, 1)
                os.dup2(err, 2)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                FUNCTIONS[req["fn"]](*req["args"])
            except BaseException as e:  # report, never return into the zygote's loop
                os.write(2, f"{type(e).__name__}: {e}\n".encode())
                code = 1
            finally:
                os._exit(code)
        sys.stdout.write(f"{pid}\n")
        sys.stdout.flush()


# -------------------------------------------------------------------- concurrency writer
def concurrent_writer(
    store_url: str, own_state: str, own_domain: str, shared_state: str, shared_domain: str,
    n: int, worker: int, go_file: str,
) -> None:
    """``n`` creates on ``own_domain`` and ``n`` on ``shared_domain``, alternating.

    Each domain lives on its own mock host (state file), each reached through its own
    Ledger on the same store. Waits for ``go_file`` to exist so that every worker starts
    at once; prints one JSON line with its timing at the end.
    """
    own = Ledger.open(open_store(store_url), MockHypervisor(own_state))
    shared = Ledger.open(open_store(store_url), MockHypervisor(shared_state))
    say("ready")
    while not os.path.exists(go_file):
        time.sleep(0.005)
    started = time.monotonic()
    for i in range(n):
        own.create(own_domain, f"w{worker}-o{i}")
        shared.create(shared_domain, f"w{worker}-s{i}")
    say(json.dumps({"worker": worker, "seconds": time.monotonic() - started}))
    own.close()
    shared.close()


# ---------------------------------------------------------------------- RLIMIT_FSIZE
def _payload(i: int) -> NewRecord:
    return NewRecord("fsize", "vm-fsize", "T", 1, 1700000000.5, b"x" * 200 + str(i).encode())


def fsize_writer(store_url: str, limit: int) -> None:
    """Append 1-record batches until a write exceeds RLIMIT_FSIZE (SIGXFSZ ignored, so the
    write fails with EFBIG), then lift the limit and append once more.

    Prints JSON: ``{"appended": n, "error": [code, one line] | null, "traceback": bool,
    "after": position appended once the limit was lifted, or the error}``.
    """
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    store = open_store(store_url)
    before = store.last_position()
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    result: dict[str, Any] = {"before": before, "appended": 0, "error": None}
    try:
        for i in range(100_000):
            store.append([_payload(i)])
            result["appended"] += 1
    except LedgerError as e:
        result["error"] = [e.code, e.one_line()]
    except Exception as e:  # what the test must not see: a raw exception
        result["error"] = ["RAW", f"{type(e).__name__}: {e}"]
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    try:
        result["after"] = store.append([_payload(-1)])[0].position
    except Exception as e:
        result["after"] = f"{type(e).__name__}: {e}"
    try:
        store.close()
    except Exception as e:
        result["close"] = f"{type(e).__name__}: {e}"
    say(json.dumps(result))


def main(argv: list[str]) -> None:
    """Dispatch on the mode (argv[0])."""
    mode, args = argv[0], argv[1:]
    if mode == "zygote":
        zygote()
    elif mode == "conc":
        concurrent_writer(args[0], args[1], args[2], args[3], args[4], int(args[5]),
                          int(args[6]), args[7])
    elif mode == "fsize":
        fsize_writer(args[0], int(args[1]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
