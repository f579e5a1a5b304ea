"""Workloads in the libvirt test driver (or another libvirt URI): replay of domains with a chain
of checkpoints each, the ledger's ``replay`` against a raw loop of the same REDEFINEs, and
``Ledger.create`` against a raw loop of the same libvirt call plus one durable INSERT.

Each worker process starts from a driver without these domains: in ``test:///default`` they
are transient running domains of this process; elsewhere (``qemu:///system``) inactive
domains defined for the run and undefined after it.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .common import timer


def _chain_xml(i: int) -> str:
    # the bitmap named as libvirt names it by default and as the ledger's import records it:
    # the raw loop then sends the very text the ledger's replay sends
    parent = f"<parent><name>c{i - 1:05d}</name></parent>" if i else ""
    return (f"<domaincheckpoint><name>c{i:05d}</name>{parent}<creationTime>{1_000_000 + i}"
            f"</creationTime><disks><disk name='vda' checkpoint='bitmap' bitmap='c{i:05d}'/>"
            "</disks>"
            "</domaincheckpoint>")


@contextmanager
def domains(uri: str, count: int, chain: int) -> Iterator[tuple[Any, list[str], Path]]:
    """``count`` domains (one qcow2 disk vda), without checkpoints, and a folder per domain
    of ``chain`` checkpoint XML files; yields the connection, the names and the folder."""
    import libvirt

    libvirt.registerErrorHandler(lambda *_: None, None)
    conn = libvirt.open(uri)
    scratch = Path(tempfile.mkdtemp(prefix="ckpt-bench-replay-"))
    test = uri.startswith("test:")
    names = [f"bench-replay-{k:03d}" for k in range(count)]
    made = []
    try:
        for name in names:
            xml = (f"<domain type='{'test' if test else 'kvm'}'><name>{name}</name>"
                   f"<uuid>{uuid.uuid4()}</uuid><memory>65536</memory><os><type arch='x86_64'>"
                   "hvm</type></os><devices><disk type='file' device='disk'><driver "
                   f"name='qemu' type='qcow2'/><source file='{scratch / name}.qcow2'/>"
                   "<target dev='vda' bus='virtio'/></disk></devices></domain>")
            made.append(conn.createXML(xml, 0) if test else conn.defineXML(xml))
            folder = scratch / name
            folder.mkdir()
            for i in range(chain):
                (folder / f"c{i:05d}.xml").write_text(_chain_xml(i))
        yield conn, names, scratch
    finally:
        for dom in made:
            for cp in dom.listAllCheckpoints(libvirt.VIR_DOMAIN_CHECKPOINT_LIST_TOPOLOGICAL)[::-1]:
                cp.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
            dom.destroy() if test else dom.undefine()
        conn.close()
        shutil.rmtree(scratch)


Call = tuple[str, tuple[Any, ...], Any, float]  # name, arguments, answer, seconds taken


class _Timed:
    """A hypervisor whose every call is timed: ``spent`` seconds, summed over threads; with
    ``record``, each call's name, arguments (positional, then keyword), answer and seconds
    are also kept in ``calls``."""

    def __init__(self, hv: Any, record: bool = False) -> None:
        self.hv = hv
        self.spent = 0.0
        self.calls: list[Call] | None = [] if record else None

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.hv, name)
        if not callable(attr):
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                out = attr(*args, **kwargs)
            finally:
                took = time.perf_counter() - t
                self.spent += took
            if self.calls is not None:
                self.calls.append((name, (*args, kwargs), out, took))
            return out

        return timed


def replay_ours(uri: str, domains_: int, chain: int, jobs: int = 1) -> dict[str, Any]:
    """``Ledger.replay`` of every domain (``jobs`` at once) from a SQLite ledger that
    imported the chains (untimed); ``hv_seconds`` is the time inside the adapter (libvirt's
    calls), summed over threads."""
    from adapters.libvirt import LibvirtHypervisor
    from ledger.app.ledger import Ledger

    with domains(uri, domains_, chain) as (_, names, scratch):
        hv = _Timed(LibvirtHypervisor(uri))
        with Ledger.open(f"sqlite:///{scratch / 'ledger.db'}", hv) as lg:  # type: ignore[arg-type]
            for name in names:
                lg.import_xml(name, scratch / name)
            with timer() as t:
                reports = lg.replay(names, jobs=jobs)
        bad = [r.error for r in reports if r.error]
        assert not bad, bad
        done = sum(1 for r in reports for s in r.steps if s.action == "redefine")
        assert done == domains_ * chain, done
    return {"seconds": t(), "events": done, "hv_seconds": hv.spent}


def replay_raw(uri: str, domains_: int, chain: int) -> dict[str, Any]:
    """The floor: one ``checkpointCreateXML(xml, REDEFINE)`` per checkpoint, one domain
    after another, of the XML the ledger sends (the checkpoint with the domain's XML)."""
    import libvirt

    from adapters.libvirt import LibvirtHypervisor
    from ledger.domain.checkpoint_xml import format_checkpoint_xml, parse_checkpoint_xml

    with domains(uri, domains_, chain) as (conn, names, _):
        hv = LibvirtHypervisor(uri)
        work = []
        for name in names:
            dom_xml = hv.domain_info(name).domain_xml
            xmls = [format_checkpoint_xml(parse_checkpoint_xml(_chain_xml(i), redefine=True)
                                          .model_copy(update={"domain_xml": dom_xml}))
                    for i in range(chain)]
            work.append((conn.lookupByName(name), xmls))
        hv.close()
        flag = libvirt.VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE
        with timer() as t:
            for dom, xmls in work:
                for x in xmls:
                    dom.checkpointCreateXML(x, flag)
    return {"seconds": t(), "events": domains_ * chain}


def create_libvirt_ours(uri: str, creates: int, store: str = "sqlite") -> dict[str, Any]:
    """``Ledger.create`` ``creates`` times on one domain (a chain), on a SQLite store (or
    ``memory``: no durable commit); ``hv_seconds`` is the time inside the adapter."""
    from adapters.libvirt import LibvirtHypervisor
    from backends.memory import MemoryStore
    from ledger.app.ledger import Ledger

    with domains(uri, 1, 0) as (_, names, scratch):
        hv = _Timed(LibvirtHypervisor(uri))
        url = MemoryStore() if store == "memory" else f"sqlite:///{scratch / 'ledger.db'}"
        with Ledger.open(url, hv) as lg:  # type: ignore[arg-type]
            lg.create(names[0], "c00000")  # enrolled; the adapter warm
            hv.spent = 0.0
            with timer() as t:
                for i in range(1, creates + 1):
                    lg.create(names[0], f"c{i:05d}")
    return {"seconds": t(), "events": creates, "hv_seconds": hv.spent}


class _Answering:
    """The answers a recording :class:`_Timed` kept, given back in order (each call checked to be
    the one recorded): the ledger's own code runs with no time in libvirt between its steps.
    With ``pause``, each answer comes after a busy loop (pure Python) as long as libvirt took
    for it: the time passes, but libvirt does no work. ``spent`` is the time inside these
    calls."""

    def __init__(self, uri: str, calls: list[Call], pause: bool = False) -> None:
        self.uri = uri
        self.calls = iter(calls)
        self.pause = pause
        self.spent = 0.0

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        def answer(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            called, recorded_args, out, took = next(self.calls)
            if (called, recorded_args) != (name, (*args, kwargs)):
                raise RuntimeError(f"expected {called}{recorded_args}, got {name}{(*args, kwargs)}")
            if self.pause:
                while time.perf_counter() - t < took:
                    pass
            self.spent += time.perf_counter() - t
            return out

        return answer


def create_answered_ours(uri: str, creates: int, pause: bool = False) -> dict[str, Any]:
    """``Ledger.create`` ``creates`` times on a memory store, with libvirt's answers to the
    same creates (recorded first, untimed) given back at once: the ledger's own cost without
    the slowdown its code meets right after each real libvirt call (a cold CPU). With
    ``pause``, each answer comes after a busy loop as long as libvirt's call: that slowdown
    back, without libvirt."""
    from adapters.libvirt import LibvirtHypervisor
    from backends.memory import MemoryStore
    from ledger.app.ledger import Ledger

    with domains(uri, 1, 0) as (_, names, _scratch):
        rec = _Timed(LibvirtHypervisor(uri), record=True)
        with Ledger.open(MemoryStore(), rec) as lg:  # type: ignore[arg-type]
            for i in range(creates + 1):
                lg.create(names[0], f"c{i:05d}")
        assert rec.calls is not None
        calls = rec.calls
    hv = _Answering(uri, calls, pause)
    with Ledger.open(MemoryStore(), hv) as lg:  # type: ignore[arg-type]
        lg.create(names[0], "c00000")
        hv.spent = 0.0
        with timer() as t:
            for i in range(1, creates + 1):
                lg.create(names[0], f"c{i:05d}")
    return {"seconds": t(), "events": creates, "hv_seconds": hv.spent}


def create_libvirt_raw(uri: str, creates: int) -> dict[str, Any]:
    """The floor: ``checkpointCreateXML`` of the same request, then one durable
    ``BEGIN; INSERT; COMMIT`` of its XML (WAL, synchronous=FULL)."""
    import sqlite3

    with domains(uri, 1, 0) as (conn, names, scratch):
        dom = conn.lookupByName(names[0])
        db = sqlite3.connect(scratch / "raw.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE events (position INTEGER PRIMARY KEY, payload BLOB)")
        dom.checkpointCreateXML("<domaincheckpoint><name>c00000</name></domaincheckpoint>", 0)
        try:
            with timer() as t:
                for i in range(1, creates + 1):
                    cp = dom.checkpointCreateXML(
                        f"<domaincheckpoint><name>c{i:05d}</name></domaincheckpoint>", 0)
                    db.execute("BEGIN IMMEDIATE")
                    db.execute("INSERT INTO events (payload) VALUES (?)",
                               [cp.getName().encode()])
                    db.execute("COMMIT")
        finally:
            db.close()
    return {"seconds": t(), "events": creates}
