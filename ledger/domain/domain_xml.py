"""Read the parts of a libvirt ``<domain>`` XML that checkpoints depend on.

Only the domain's name, UUID and disks are extracted (``parse_domain_xml``). Each
``devices/disk`` becomes a :class:`ledger.domain.model.DomainDisk`, in the domain's disk order
(the order libvirt aligns checkpoint disks to):

* ``target/@dev`` -> ``name``;
* ``driver/@type`` -> ``format``. When the element or attribute is absent the format is
  ``"raw"``: libvirt's QEMU driver fills in ``<driver name='qemu' type='raw'/>`` for a
  file or block disk defined without a type (checked on libvirt 9.0 by defining such a
  domain on qemu:///system and dumping it back), and QEMU itself is then never asked to
  probe. libvirt's test driver leaves the element out (its default domain's ``vda``), and
  treating that disk as raw is the QEMU-equivalent reading;
* ``<readonly/>`` -> ``readonly`` (libvirt also marks every cdrom read-only; so does this);
* ``source/@file``, ``@dev`` or ``@name`` -> ``source``; a disk without ``<source>``
  (or a file/block disk whose ``<source>`` names no path) is ``empty``.

Parsing is defensive: the text is capped at 4 MiB and any DOCTYPE or ENTITY declaration
is refused before the parser sees it, so entity expansion cannot happen. Every failure is
``LedgerError("XML_ERROR", <one line>)``.
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from ledger.domain.errors import LedgerError
from ledger.domain.model import DomainDisk

MAX_XML_BYTES = 4 * 1024 * 1024

_LOCAL_TYPES = {"file", "block", "dir"}


@dataclass(frozen=True)
class DomainXml:
    """The name, UUID and disks (in the domain's order) of a ``<domain>`` definition."""

    name: str
    uuid: str | None
    disks: tuple[DomainDisk, ...]

    def disk(self, name: str) -> DomainDisk | None:
        """The disk whose target is ``name``, if any."""
        for d in self.disks:
            if d.name == name:
                return d
        return None


def _xml_error(detail: str) -> LedgerError:
    return LedgerError("XML_ERROR", " ".join(detail.split()))


def safe_fromstring(text: str, what: str = "XML") -> ET.Element:
    """Parse ``text`` into an element tree after the size and DOCTYPE/ENTITY checks.

    Raises ``LedgerError("XML_ERROR")`` with a one-line message on any problem.
    """
    if not isinstance(text, str):
        raise _xml_error(f"{what} must be text, not {type(text).__name__}")
    if len(text.encode("utf-8", errors="surrogatepass")) > MAX_XML_BYTES:
        raise _xml_error(f"{what} is larger than {MAX_XML_BYTES} bytes")
    upper = text.upper()
    if "<!DOCTYPE" in upper or "<!ENTITY" in upper:
        raise _xml_error(f"{what} must not contain a DOCTYPE or ENTITY declaration")
    try:
        return ET.fromstring(text)
    except ET.ParseError as e:
        raise _xml_error(f"malformed {what}: {e}") from None


def _disk(elem: ET.Element, index: int) -> DomainDisk:
    target = elem.find("target")
    dev = target.get("dev") if target is not None else None
    if not dev:
        raise _xml_error(f"domain disk #{index + 1} has no <target dev=...>")
    driver = elem.find("driver")
    fmt = (driver.get("type") if driver is not None else None) or "raw"
    device = elem.get("device", "disk")
    readonly = elem.find("readonly") is not None or device == "cdrom"
    src = elem.find("source")
    source: str | None = None
    empty = src is None
    if src is not None:
        source = src.get("file") or src.get("dev") or src.get("name") or src.get("dir")
        if source is None and elem.get("type", "file") in _LOCAL_TYPES:
            empty = True
    return DomainDisk(name=dev, format=fmt, readonly=readonly, empty=empty, source=source)


def parse_domain_xml(text: str) -> DomainXml:
    """Parse a libvirt ``<domain>`` XML into its name, UUID and disks.

    Raises ``LedgerError("XML_ERROR")`` for malformed or unsafe XML, a root element other
    than ``<domain>``, a missing ``<name>``, or a disk without a target. A text parsed
    before gives the same (immutable) result without a parse: the last 256 are kept.
    """
    if not isinstance(text, str):
        return _parse_domain_xml(text)  # refused there, with a line naming the type
    return _parse_cached(text)


@functools.lru_cache(maxsize=256)
def _parse_cached(text: str) -> DomainXml:
    return _parse_domain_xml(text)


def _parse_domain_xml(text: str) -> DomainXml:
    root = safe_fromstring(text, "domain XML")
    if root.tag != "domain":
        raise _xml_error(f"expected a <domain> element, found <{root.tag}>")
    name = (root.findtext("name") or "").strip()
    if not name:
        raise _xml_error("domain XML has no <name>")
    uuid = (root.findtext("uuid") or "").strip() or None
    disks = tuple(_disk(d, i) for i, d in enumerate(root.findall("devices/disk")))
    return DomainXml(name=name, uuid=uuid, disks=disks)
