"""The libvirt hypervisor adapter: :class:`ledger.domain.hypervisor.Hypervisor` over libvirt-python.

Any hypervisor URI that is not ``mock://`` is routed here (ledger/app/plugins.py), so this
speaks every libvirt URI: ``qemu:///system``, ``qemu+ssh://host/system``,
``test:///default`` (libvirt's in-process test driver) ...

* The ``libvirt`` module is imported lazily, so the core works without the binding.
* libvirt's default error printing to stderr is switched off; every ``libvirtError``
  becomes ``LedgerError(code, detail, prefixed=False)`` where ``code`` is the name of the
  ``VIR_ERR_*`` constant without the prefix and ``detail`` is libvirt's own message
  folded onto one line (libvirt's message already carries its prefix).
* A connection that cannot be opened is ``LedgerError("HYPERVISOR_ERROR")``.
* Checkpoint XML is returned exactly as libvirt formats it.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any, Literal

from ledger.domain.domain_xml import parse_domain_xml, safe_fromstring
from ledger.domain.errors import ErrorCode, LedgerError
from ledger.domain.hypervisor import PartialDelete
from ledger.domain.model import BackupDisk, DomainInfo, HostJob, JobResult, Policy
from ledger.domain.names import is_uuid

from . import qemu_img

# libvirt 6.5.0 stopped chaining bitmaps (docs/libvirt-checkpoints.md section 4).
INDEPENDENT_SINCE = 6_005_000

INSTALL_HINT = (
    "needs libvirt-python: pip install 'ckpt-ledger[libvirt]' "
    "(it builds against the system libvirt: apt-get install libvirt-dev pkg-config)"
)

# VIR_ERR_NONE/WARNING/ERROR are error *levels* sharing the values 0, 1, 2 with codes.
_LEVEL_NAMES = {"VIR_ERR_NONE", "VIR_ERR_WARNING", "VIR_ERR_ERROR"}

_libvirt: ModuleType | None = None
_code_names: dict[int, str] = {}


_LOOPS: set[int] = set()  # libvirt modules whose default event loop runs in a thread


def _event_loop(lv: ModuleType) -> None:
    """libvirt's default event implementation, registered once and run by a daemon thread
    (events reach only connections opened after it)."""
    if id(lv) in _LOOPS:
        return
    lv.virEventRegisterDefaultImpl()

    def run() -> None:
        while True:
            lv.virEventRunDefaultImpl()

    threading.Thread(target=run, name="libvirt-events", daemon=True).start()
    _LOOPS.add(id(lv))


def _result(stats: dict[str, Any]) -> JobResult | None:
    """A backup's result from job statistics (None for another operation or no job)."""
    if stats.get("operation") != 9:  # VIR_DOMAIN_JOB_OPERATION_BACKUP
        return None
    kind = stats.get("type")  # 3 completed, 4 cancelled, 5 failed (absent in an event)
    outcome: Literal["completed", "failed", "aborted"] = (
        "aborted" if kind == 4 else "completed" if stats.get("success", kind == 3) else "failed")
    processed, elapsed = stats.get("disk_processed"), stats.get("time_elapsed")
    return JobResult(outcome=outcome, bytes=processed if isinstance(processed, int) else None,
                     elapsed_ms=elapsed if isinstance(elapsed, int) else None,
                     error=stats.get("errmsg"))


def _ignore_error(_ctx: object, _err: object) -> None:
    """libvirt error callback that prints nothing (errors are raised as exceptions)."""


def load_libvirt(uri: str) -> ModuleType:
    """Import libvirt-python once, silence its stderr printing and return the module.

    Raises ``LedgerError("HYPERVISOR_ERROR")`` naming ``uri`` and the install command when
    the binding is missing.
    """
    global _libvirt
    try:
        mod = importlib.import_module("libvirt")
    except ImportError:
        raise LedgerError("HYPERVISOR_ERROR", f"libvirt URI '{uri}' {INSTALL_HINT}") from None
    if mod is not _libvirt:
        mod.registerErrorHandler(_ignore_error, None)
        _code_names.clear()
        for key, value in vars(mod).items():
            if key.startswith("VIR_ERR_") and isinstance(value, int) and key not in _LEVEL_NAMES:
                _code_names.setdefault(value, key[len("VIR_ERR_") :])
        _libvirt = mod
    return mod


def error_code_name(code: int | None) -> str:
    """libvirt's name for an error code without ``VIR_ERR_`` (``42`` -> ``NO_DOMAIN``)."""
    if code is None:
        return "INTERNAL_ERROR"
    return _code_names.get(code, f"UNKNOWN_{code}")


def to_ledger_error(err: Exception) -> LedgerError:
    """Turn a ``libvirt.libvirtError`` into a one-line ``LedgerError`` with libvirt's code."""
    get_code = getattr(err, "get_error_code", None)
    get_msg = getattr(err, "get_error_message", None)
    code = get_code() if callable(get_code) else None
    msg = get_msg() if callable(get_msg) else None
    detail = " ".join(str(msg or err).split()) or "unknown libvirt error"
    name = error_code_name(code)
    if name not in ErrorCode.__members__:  # a libvirt code the ledger has no use for
        return LedgerError(ErrorCode.HYPERVISOR_ERROR, f"{detail} ({name})", prefixed=False)
    return LedgerError(ErrorCode(name), detail, prefixed=False)


def _dotted(version: int) -> str:
    """libvirt's packed version number (major * 1,000,000 + minor * 1,000 + micro)."""
    return f"{version // 1_000_000}.{version // 1000 % 1000}.{version % 1000}"

class LibvirtHypervisor:
    """A :class:`ledger.domain.hypervisor.Hypervisor` on one libvirt connection.

    ``readonly=True`` opens the connection with ``virConnectOpenReadOnly``: queries work,
    changes fail with libvirt's OPERATION_DENIED, and checkpoint XML is read without the
    SECURE flag (which a read-only connection may not use).
    """

    def __init__(self, uri: str, *, readonly: bool = False) -> None:
        self.uri = uri
        self.readonly = readonly
        self._lv = load_libvirt(uri)
        try:
            conn = self._lv.openReadOnly(uri) if readonly else self._lv.open(uri)
        except self._lv.libvirtError as e:
            detail = to_ledger_error(e).detail
            raise LedgerError(
                "HYPERVISOR_ERROR", f"cannot connect to hypervisor '{uri}': {detail}"
            ) from None
        if conn is None:  # very old bindings returned None instead of raising
            raise LedgerError("HYPERVISOR_ERROR", f"cannot connect to hypervisor '{uri}'")
        self._conn: Any = conn
        self._by_uuid: dict[str, Any] = {}  # virDomain by lower-case UUID (see _domain)
        self._lib_version: int | None = None  # the daemon's, read once per connection

    # -- plumbing ---------------------------------------------------------------------------

    def __enter__(self) -> LibvirtHypervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, fn: Any, *args: Any) -> Any:
        """Call a libvirt function, mapping ``libvirtError`` to ``LedgerError``.

        The cyclic garbage collector is off during the call: libvirt-python reads the
        error (``virGetLastError``) after the failed call returns, and a collection in
        between that frees a libvirt object runs a public libvirt API (``virDomainFree``
        ...), which resets the thread's last error: the error would lose its code."""
        enabled = gc.isenabled()
        if enabled:
            gc.disable()
        try:
            return fn(*args)
        except self._lv.libvirtError as e:
            raise to_ledger_error(e) from None
        finally:
            if enabled:
                gc.enable()

    @property
    def connection(self) -> Any:
        """The underlying ``libvirt.virConnect`` (raises once closed)."""
        if self._conn is None:
            raise LedgerError("HYPERVISOR_ERROR", f"the connection to '{self.uri}' is closed")
        return self._conn

    def _domain(self, name: str) -> Any:
        """The domain by UUID (when ``name`` reads as one), else by name, as virsh finds
        one. A domain found by UUID is kept for the connection's life: a UUID names one
        domain for good, so later calls skip the lookup, and a call on a domain undefined
        meanwhile fails with NO_DOMAIN instead of reaching another domain of that name."""
        if is_uuid(name):
            key = name.lower()
            dom = self._by_uuid.get(key)
            if dom is not None:
                return dom
            try:
                dom = self._call(self.connection.lookupByUUIDString, name)
            except LedgerError as err:
                if err.code != "NO_DOMAIN":
                    raise
            else:
                self._by_uuid[key] = dom
                return dom
        return self._call(self.connection.lookupByName, name)

    def _checkpoint(self, dom: Any, name: str) -> Any:
        return self._call(dom.checkpointLookupByName, name, 0)

    def _xml_flags(self, no_domain: bool = False) -> int:
        lv = self._lv
        flags = 0 if self.readonly else lv.VIR_DOMAIN_CHECKPOINT_XML_SECURE
        if no_domain:
            flags |= lv.VIR_DOMAIN_CHECKPOINT_XML_NO_DOMAIN
        return flags

    def _parent_name(self, cp: Any) -> str | None:
        try:
            parent = self._call(cp.getParent, 0)
        except LedgerError as err:
            if err.code == "NO_DOMAIN_CHECKPOINT":
                return None
            raise
        return str(parent.getName())

    # -- ledger.domain.hypervisor.Hypervisor --------------------------------------------

    def policy(self) -> Policy:
        """``independent`` for libvirt >= 6.5.0 (one recording bitmap per checkpoint), else
        ``chained``."""
        return "independent" if self._libvirt_version() >= INDEPENDENT_SINCE else "chained"

    def _libvirt_version(self) -> int:
        """The daemon's libvirt version: read once per connection (a daemon upgraded
        since restarted, which ended the connection)."""
        if self._lib_version is None:
            self._lib_version = int(self._call(self.connection.getLibVersion))
        return self._lib_version

    def describe(self) -> str:
        """``QEMU 7.2.0 via libvirt 9.0.0 (bitmap policy independent)``."""
        conn = self.connection
        driver = str(self._call(conn.getType))
        try:
            hv_version = _dotted(int(self._call(conn.getVersion)))
        except LedgerError:
            hv_version = "?"
        lib = _dotted(self._libvirt_version())
        return f"{driver} {hv_version} via libvirt {lib} (bitmap policy {self.policy()})"

    def domain_info(self, domain: str) -> DomainInfo:
        """Name, UUID, running state, bitmap policy and disks (from the inactive XML)."""
        dom = self._domain(domain)
        xml = str(self._call(dom.XMLDesc, self._lv.VIR_DOMAIN_XML_INACTIVE))
        parsed = parse_domain_xml(xml)
        return DomainInfo(
            name=str(self._call(dom.name)),
            uuid=str(self._call(dom.UUIDString)),
            running=bool(self._call(dom.isActive)),
            policy=self.policy(),
            disks=parsed.disks,
            domain_xml=xml,
        )

    def list_domains(self) -> list[str]:
        """Names of every domain (running or defined), sorted."""
        doms = self._call(self.connection.listAllDomains, 0)
        return sorted(str(d.name()) for d in doms)

    def create_checkpoint(self, domain: str, xml: str, quiesce: bool = False) -> str:
        """``virDomainCheckpointCreateXML(xml, 0 | QUIESCE)``; the new checkpoint's XML."""
        dom = self._domain(domain)
        flags = self._lv.VIR_DOMAIN_CHECKPOINT_CREATE_QUIESCE if quiesce else 0
        cp = self._call(dom.checkpointCreateXML, xml, flags)
        return str(self._call(cp.getXMLDesc, self._xml_flags()))

    def redefine_checkpoint(
        self, domain: str, xml: str, validate: bool = False, read_back: bool = True
    ) -> str | None:
        """CreateXML with REDEFINE (and REDEFINE_VALIDATE); the resulting XML, or None when
        not ``read_back``.

        The test driver refuses REDEFINE_VALIDATE ("unsupported flags (0x4)", INVALID_ARG).
        """
        lv = self._lv
        dom = self._domain(domain)
        flags = lv.VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE
        if validate:
            flags |= lv.VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE_VALIDATE
        cp = self._call(dom.checkpointCreateXML, xml, flags)
        return str(self._call(cp.getXMLDesc, self._xml_flags())) if read_back else None

    def delete_checkpoint(
        self,
        domain: str,
        name: str,
        *,
        children: bool = False,
        children_only: bool = False,
        metadata_only: bool = False,
    ) -> None:
        """``virDomainCheckpointDelete`` with CHILDREN / CHILDREN_ONLY / METADATA_ONLY.

        QEMU moves the children of a plain delete to the parent *before* it removes the
        bitmaps (docs/libvirt-checkpoints.md section 5.2 item 3). If the delete then fails and
        the children did move, this raises :class:`ledger.domain.hypervisor.PartialDelete` with
        ``reparented = {child: new parent or None}``; otherwise libvirt's error.
        """
        lv = self._lv
        flags = 0
        if children:
            flags |= lv.VIR_DOMAIN_CHECKPOINT_DELETE_CHILDREN
        if children_only:
            flags |= lv.VIR_DOMAIN_CHECKPOINT_DELETE_CHILDREN_ONLY
        if metadata_only:
            flags |= lv.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY
        dom = self._domain(domain)
        cp = self._checkpoint(dom, name)
        kids: list[str] = []
        if not (children or children_only):
            kids = [str(c.getName()) for c in self._call(cp.listAllChildren, 0)]
        try:
            self._call(cp.delete, flags)
        except LedgerError as err:
            moved = self._reparented(dom, name, kids)
            if moved:
                raise PartialDelete(err, moved) from None
            raise err from None

    def _reparented(self, dom: Any, old_parent: str, kids: list[str]) -> dict[str, str | None]:
        """Which of ``kids`` (children of ``old_parent`` before a failed delete) moved."""
        moved: dict[str, str | None] = {}
        for kid in kids:
            try:
                parent = self._parent_name(dom.checkpointLookupByName(kid, 0))
            except (self._lv.libvirtError, LedgerError):
                continue  # the child is gone or unreadable: no evidence of a move
            if parent != old_parent:
                moved[kid] = parent
        return moved

    def checkpoint_xml(self, domain: str, name: str, no_domain: bool = False) -> str:
        """``virDomainCheckpointGetXMLDesc`` with SECURE (not on a read-only connection)
        and NO_DOMAIN if asked."""
        dom = self._domain(domain)
        cp = self._checkpoint(dom, name)
        return str(self._call(cp.getXMLDesc, self._xml_flags(no_domain)))

    def list_checkpoints(self, domain: str) -> list[str]:
        """Every checkpoint's name, parents before children (LIST_TOPOLOGICAL)."""
        dom = self._domain(domain)
        cps = self._call(dom.listAllCheckpoints, self._lv.VIR_DOMAIN_CHECKPOINT_LIST_TOPOLOGICAL)
        return [str(c.getName()) for c in cps]

    def backup_jobs(self, domain: str) -> list[HostJob]:
        """None: libvirt keeps only the last job's statistics, without an identity; its job
        events are what records a backup (``ckpt-ledger watch``)."""
        self._domain(domain)
        return []

    def active_backup(self, domain: str) -> HostJob | None:
        """The backup job running now, from ``virDomainBackupGetXMLDesc``: mode, and per disk
        full or incremental (since which checkpoint) and its target or NBD export; it began
        ``time elapsed`` ago (``virDomainGetJobInfo``)."""
        dom = self._domain(domain)
        try:
            info = dom.jobInfo()
            if not info or info[0] == self._lv.VIR_DOMAIN_JOB_NONE:
                return None
            xml = dom.backupGetXMLDesc(0)
        except self._lv.libvirtError:
            return None  # no backup job (another kind, or it just ended)
        root = safe_fromstring(xml)
        mode: Literal["push", "pull"] = "pull" if root.get("mode") == "pull" else "push"
        disks = []
        for d in root.findall("disks/disk"):
            if d.get("backup") == "no":
                continue
            since = d.get("incremental") or root.findtext("incremental")
            if d.get("backupmode") == "full":
                since = None
            target = d.find("target")
            where = target.get("file") if target is not None else d.get("exportname")
            disks.append(BackupDisk(name=str(d.get("name")), incremental=since, target=where))
        started = time.time() - info[1] / 1000.0
        return HostJob(job=f"libvirt@{started:.0f}", mode=mode, disks=tuple(disks),
                       started=started)

    def last_backup_result(self, domain: str) -> JobResult | None:
        """The completed job's statistics (``virDomainGetJobStats(COMPLETED)``) when the last
        job was a backup."""
        dom = self._domain(domain)
        try:
            stats = dom.jobStats(self._lv.VIR_DOMAIN_JOB_STATS_COMPLETED)
        except self._lv.libvirtError:
            return None
        return _result(stats)

    def subscribe(self, wake: Callable[[str, JobResult | None], None]) -> Callable[[], None]:
        """libvirt's events on a connection of their own, run by a daemon thread: a job
        completed (a backup's result), a domain defined, undefined, started or stopped."""
        lv = self._lv
        _event_loop(lv)
        conn = lv.openReadOnly(self.uri)
        ids = [
            conn.domainEventRegisterAny(
                None, lv.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED,
                lambda _c, dom, params, _o: wake(dom.name(), _result(params)), None),
            conn.domainEventRegisterAny(
                None, lv.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                lambda _c, dom, _event, _detail, _o: wake(dom.name(), None), None),
        ]

        def stop() -> None:
            for i in ids:
                with contextlib.suppress(lv.libvirtError):
                    conn.domainEventDeregisterAny(i)
            with contextlib.suppress(lv.libvirtError):
                conn.close()

        return stop

    def close(self) -> None:
        """Close the connection (idempotent)."""
        conn, self._conn = self._conn, None
        self._by_uuid.clear()
        if conn is not None:
            with contextlib.suppress(self._lv.libvirtError):
                conn.close()

    # -- extras (not in the Protocol): used by verify and import --------------------------

    def checkpoint_xmls(self, domain: str) -> list[str]:
        """Every checkpoint's XML (with <domain>), parents before children: a
        redefine-ready order."""
        dom = self._domain(domain)
        cps = self._call(dom.listAllCheckpoints, self._lv.VIR_DOMAIN_CHECKPOINT_LIST_TOPOLOGICAL)
        flags = self._xml_flags()
        return [str(self._call(c.getXMLDesc, flags)) for c in cps]

    def observed_bitmaps(self, domain: str) -> dict[str, list[dict[str, Any]]]:
        """The dirty bitmaps each disk really has, keyed by disk target, sorted by name.

        Each bitmap is ``{"name", "recording", "inconsistent", "in_use", "count",
        "persistent", "granularity"}``. A running domain is asked through QMP
        ``query-block`` (needs the QEMU driver; the test driver answers NO_SUPPORT), and
        ``in_use`` is then always false. A shut-off one is read from its qcow2 images with
        ``qemu-img info``: ``in_use`` (and ``inconsistent``, which is how QEMU would load
        it) is the image's ``in-use`` flag, i.e. not closed cleanly, and ``count`` is
        ``None``. Every disk of the domain is a key; disks without bitmaps (raw, empty,
        network) map to ``[]``.
        """
        dom = self._domain(domain)
        if self._call(dom.isActive):
            return self._live_bitmaps(dom)
        info = parse_domain_xml(str(self._call(dom.XMLDesc, self._lv.VIR_DOMAIN_XML_INACTIVE)))
        out: dict[str, list[dict[str, Any]]] = {}
        for disk in info.disks:
            out[disk.name] = []
            if disk.empty or disk.source is None or disk.format != "qcow2":
                continue
            if not disk.source.startswith("/"):
                continue  # a network disk: not readable from here
            out[disk.name] = [
                {k: v for k, v in b.items() if k != "flags"}
                for b in qemu_img.image_bitmaps(disk.source)
            ]
        return out

    def _live_bitmaps(self, dom: Any) -> dict[str, list[dict[str, Any]]]:
        try:
            lvq = importlib.import_module("libvirt_qemu")
        except ImportError:
            raise LedgerError(
                "HYPERVISOR_ERROR", f"libvirt URI '{self.uri}' {INSTALL_HINT}"
            ) from None
        live_xml = str(self._call(dom.XMLDesc, 0))
        targets = _disk_aliases(live_xml)  # alias -> target, source -> target
        reply = self._call(lvq.qemuMonitorCommand, dom, '{"execute":"query-block"}', 0)
        try:
            devices = json.loads(reply)["return"]
        except (ValueError, KeyError, TypeError) as e:
            raise LedgerError("HYPERVISOR_ERROR", f"unexpected query-block reply: {e}") from None
        out: dict[str, list[dict[str, Any]]] = {t: [] for t in targets.values()}
        for dev in devices:
            target = _match_target(dev, targets)
            inserted = dev.get("inserted") or {}
            if target is None:
                continue
            bitmaps = [
                {
                    "name": str(b.get("name")),
                    "recording": bool(b.get("recording", False)),
                    "persistent": bool(b.get("persistent", False)),
                    "inconsistent": bool(b.get("inconsistent", False)),
                    "in_use": False,
                    "count": b.get("count"),
                    "granularity": b.get("granularity"),
                }
                for b in inserted.get("dirty-bitmaps") or []
            ]
            out[target] = sorted(bitmaps, key=lambda b: b["name"])
        return out


def _disk_aliases(live_xml: str) -> dict[str, str]:
    """Map each disk's alias (``virtio-disk0``) and source path to its target (``vda``)."""
    root = safe_fromstring(live_xml, "domain XML")
    out: dict[str, str] = {}
    for disk in root.findall("devices/disk"):
        target = disk.find("target")
        dev = target.get("dev") if target is not None else None
        if not dev:
            continue
        out[dev] = dev
        alias = disk.find("alias")
        if alias is not None and alias.get("name"):
            out[str(alias.get("name"))] = dev
        src = disk.find("source")
        if src is not None:
            path = src.get("file") or src.get("dev") or src.get("name")
            if path:
                out[path] = dev
    return out


def _match_target(dev: dict[str, Any], targets: dict[str, str]) -> str | None:
    """The disk target a query-block entry belongs to: by qdev path component, device
    name, or the inserted image's file name."""
    qdev = str(dev.get("qdev") or "")
    for part in qdev.split("/"):
        if part and part in targets:
            return targets[part]
    device = str(dev.get("device") or "")
    if device.startswith("drive-"):
        device = device[len("drive-") :]
    if device and device in targets:
        return targets[device]
    inserted = dev.get("inserted") or {}
    for key in ("file",):
        path = inserted.get(key)
        if path and path in targets:
            return targets[path]
    image = inserted.get("image") or {}
    if image.get("filename") in targets:
        return targets[image["filename"]]
    return None


def open_url(uri: str, readonly: bool = False) -> LibvirtHypervisor:
    """The ``ckpt_ledger.hypervisors`` entry point: a libvirt connection to ``uri``."""
    return LibvirtHypervisor(uri, readonly=readonly)
