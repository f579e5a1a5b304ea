"""``<domaincheckpoint>`` XML: safe parsing, libvirt's exact output layout, virsh diskspecs.

The parser accepts untrusted input: it uses the stdlib expat parser, caps the document
size, refuses any DOCTYPE (so no entity is ever declared, expanded or fetched) and then
enforces libvirt's ``domaincheckpoint.rng`` as libvirt does, unconditionally.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn
from xml.parsers import expat

from ledger.domain.domain_xml import safe_fromstring
from ledger.domain.errors import LedgerError
from ledger.domain.model import CheckpointDef, CheckpointDisk, shared_disk
from ledger.domain.names import (
    check_checkpoint_name,
    check_disk_name,
    is_checkpoint_name,
    is_disk_name,
)

MAX_XML_BYTES = 1 << 20  # 1 MiB
_ROOT = "domaincheckpoint"
_CHILDREN = ("name", "description", "parent", "creationTime", "disks", "domain")
_DISK_ATTRS = ("name", "checkpoint", "bitmap", "size")
_XML_SPACE = " \t\r\n"
_UNSIGNED_LONG = re.compile(r"\+?[0-9]+\Z")
_ULONG_MAX = (1 << 64) - 1
_LLONG_MAX = (1 << 63) - 1
LAST_SHOWN_TIME = 253402300799  # 9999-12-31T23:59:59Z: the last creationTime a date can show
# virBufferEscapeString drops these control characters silently (virbuffer.c).
_DROPPED = {c: None for c in [*range(0x01, 0x09), 0x0B, 0x0C, *range(0x0E, 0x1A)]}
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "'": "&apos;", '"': "&quot;"})


def _schema(detail: str) -> LedgerError:
    return LedgerError("XML_INVALID_SCHEMA", detail)


@dataclass(eq=False)
class _Node:
    """One element of the parsed tree (only the levels the schema looks at)."""

    tag: str
    attrs: dict[str, str]
    line: int
    start: int = 0
    end: int = -1
    text: list[str] = field(default_factory=list)
    children: list[_Node] = field(default_factory=list)

    def where(self) -> str:
        return f"element {self.tag} (line {self.line})"


class _TreeBuilder:
    """expat handlers that build the top levels of the tree and locate ``<domain>``."""

    def __init__(self, parser: expat.XMLParserType) -> None:
        self.p = parser
        self.stack: list[_Node | None] = []
        self.root: _Node | None = None
        self.pending: _Node | None = None  # an element whose end offset is the next event's

    def _mark(self) -> None:
        if self.pending is not None:
            self.pending.end = self.p.CurrentByteIndex
            self.pending = None

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        self._mark()
        parent = self.stack[-1] if self.stack else None
        depth = len(self.stack) + 1
        node: _Node | None = None
        if depth == 1 or (parent is not None and parent.tag != "domain" and depth <= 4):
            node = _Node(tag, attrs, self.p.CurrentLineNumber, self.p.CurrentByteIndex)
            if parent is None:
                self.root = node
            else:
                parent.children.append(node)
        self.stack.append(node)

    def end(self, tag: str) -> None:
        self._mark()
        node = self.stack.pop()
        if node is not None and len(self.stack) == 1:
            self.pending = node

    def chars(self, data: str) -> None:
        self._mark()
        node = self.stack[-1] if self.stack else None
        if node is not None and node.tag != "domain":
            node.text.append(data)

    def other(self, *_args: object) -> None:
        self._mark()

    def refuse(self, *_args: Any) -> NoReturn:
        raise LedgerError(
            "XML_ERROR",
            "DOCTYPE and entity declarations are not allowed "
            f"(line {self.p.CurrentLineNumber}, column {self.p.CurrentColumnNumber + 1})",
        )


def _to_bytes(text: str | bytes) -> bytes:
    """The document as UTF-8 bytes, refusing anything too large or not UTF-8."""
    if isinstance(text, str) and len(text) <= MAX_XML_BYTES:
        try:
            text = text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise LedgerError("XML_ERROR", f"document is not valid UTF-8: {e.reason}") from None
    if len(text) > MAX_XML_BYTES:
        raise LedgerError("XML_ERROR", f"document is larger than {MAX_XML_BYTES} bytes")
    assert isinstance(text, bytes)
    try:
        text.decode("utf-8")  # expat would honour a UTF-16 byte order mark
    except UnicodeDecodeError as e:
        line = text.count(b"\n", 0, e.start) + 1
        column = e.start - (text.rfind(b"\n", 0, e.start) + 1) + 1
        detail = f"document is not valid UTF-8 (line {line}, byte {column} of the line)"
        raise LedgerError("XML_ERROR", detail) from None
    return text


def _parse_tree(raw: bytes) -> _Node:
    """Check well-formedness with expat and return the root element."""
    p = expat.ParserCreate(encoding="UTF-8")
    b = _TreeBuilder(p)
    p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    p.StartDoctypeDeclHandler = b.refuse
    p.EntityDeclHandler = b.refuse
    p.UnparsedEntityDeclHandler = b.refuse
    p.ExternalEntityRefHandler = b.refuse
    p.StartElementHandler = b.start
    p.EndElementHandler = b.end
    p.CharacterDataHandler = b.chars
    p.CommentHandler = b.other
    p.ProcessingInstructionHandler = b.other
    p.StartCdataSectionHandler = b.other
    p.EndCdataSectionHandler = b.other
    try:
        p.Parse(raw, True)
    except expat.ExpatError as e:
        detail = f"{expat.ErrorString(e.code)} (line {e.lineno}, column {e.offset + 1})"
        raise LedgerError("XML_ERROR", detail) from None
    assert b.root is not None  # expat refuses a document without a root element
    return b.root


def _text(node: _Node) -> str:
    return "".join(node.text)


def _leaf(node: _Node) -> str:
    """Check that ``node`` has no attribute and no child element; return its text."""
    if node.attrs:
        raise _schema(f"invalid attribute {next(iter(node.attrs))} for {node.where()}")
    if node.children:
        raise _schema(f"{node.where()} has extra content: {node.children[0].tag}")
    return _text(node)


def _element_only(node: _Node, allowed: Sequence[str]) -> None:
    """Check attributes and text of an element that holds only child elements."""
    bad = [a for a in node.attrs if a not in allowed]
    if bad:
        raise _schema(f"invalid attribute {bad[0]} for {node.where()}")
    if _text(node).strip(_XML_SPACE):
        raise _schema(f"{node.where()} must not contain text")


def _unsigned_long(value: str, what: str) -> int:
    v = value.strip(_XML_SPACE)
    if (not _UNSIGNED_LONG.match(v) or len(v.lstrip("+").lstrip("0")) > 20
            or int(v) > _ULONG_MAX):
        shown = repr(value) if len(value) <= 40 else f"{value[:20]!r}... ({len(value)} characters)"
        raise _schema(f"invalid {what} {shown}: expected an unsigned integer")
    return int(v)


def _children(root: _Node) -> dict[str, _Node]:
    if root.tag != _ROOT:
        raise _schema(f"expecting element {_ROOT}, got {root.tag}")
    _element_only(root, ())
    found: dict[str, _Node] = {}
    for child in root.children:
        if child.tag not in _CHILDREN:
            raise _schema(f"element {_ROOT} has extra content: {child.tag} (line {child.line})")
        if child.tag in found:
            raise _schema(f"{child.where()} appears more than once in {_ROOT}")
        found[child.tag] = child
    return found


def _parent_name(node: _Node) -> str:
    _element_only(node, ())
    if len(node.children) != 1 or node.children[0].tag != "name":
        raise _schema(f"{node.where()} must contain exactly one name element")
    return check_checkpoint_name(_leaf(node.children[0]), "parent name")


def _disk(node: _Node) -> CheckpointDisk:
    if node.tag != "disk":
        raise _schema(f"element disks has extra content: {node.tag} (line {node.line})")
    _element_only(node, _DISK_ATTRS)
    if node.children:
        raise _schema(f"{node.where()} has extra content: {node.children[0].tag}")
    a = node.attrs
    if "name" not in a:
        raise _schema(f"{node.where()} is missing its required attribute name")
    kind = a.get("checkpoint", "bitmap")
    if kind not in ("bitmap", "no"):
        raise _schema(f"invalid checkpoint {kind!r} for {node.where()}: expected bitmap or no")
    if kind == "no" and ("bitmap" in a or "size" in a):
        raise _schema(f"{node.where()}: bitmap and size are not allowed with checkpoint='no'")
    if "size" in a:
        _unsigned_long(a["size"], "disk size")  # validated, then ignored as libvirt does
    return shared_disk(check_disk_name(a["name"]), kind, a.get("bitmap"), None)


def _disks(node: _Node) -> tuple[CheckpointDisk, ...]:
    _element_only(node, ())
    if not node.children:
        raise _schema(f"{node.where()} must contain at least one disk")
    return tuple(_disk(d) for d in node.children)


def _dedent(raw: bytes, start: int, end: int) -> str:
    """The element ``raw[start:end]`` as text, shifted left to its tag's column."""
    line_start = raw.rfind(b"\n", 0, start) + 1
    prefix = raw[line_start:start].decode("utf-8")
    if prefix.strip(_XML_SPACE):
        prefix = ""
    body = raw[start:end].decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    lines = body.split("\n")
    for i in range(1, len(lines)):
        line = lines[i]
        if prefix and line.startswith(prefix):
            lines[i] = line[len(prefix) :]
        else:
            stripped = line.lstrip(" \t")
            lines[i] = line[min(len(prefix), len(line) - len(stripped)) :]
    return "\n".join(lines)


def _creation_time(node: _Node | None) -> int:
    """libvirt's virXPathLongLong on ``creationTime`` (strtoll: no trailing junk, fits int64)."""
    text = _text(node) if node is not None else ""
    if (not text or text != text.rstrip(_XML_SPACE) or len(text.lstrip(_XML_SPACE + "+0")) > 19
            or int(text) > _LLONG_MAX):
        raise LedgerError("INTERNAL_ERROR", "missing creationTime from existing checkpoint")
    if int(text) > LAST_SHOWN_TIME:
        raise LedgerError("INVALID_ARG", f"creationTime {int(text)} is after the year 9999, "
                          "which no date can show")
    return int(text)


@functools.lru_cache(maxsize=4096)
def indented(domain_xml: str) -> str:
    """``domain_xml`` indented by two spaces, as a checkpoint's XML embeds it (one shared
    copy of each: the least recently used dropped past 4,096)."""
    return sys.intern("  " + domain_xml.replace("\n", "\n  "))


CLOSE = "</domaincheckpoint>\n"  # a document's end tag, as libvirt formats it
END = "\n" + CLOSE  # what follows the embedded domain


@functools.lru_cache(maxsize=256)
def _embeddable(domain_xml: str) -> str | None:
    """:func:`indented` of ``domain_xml`` when it is one safe, well-formed ``<domain>``
    element that a parse of a checkpoint embedding it gives back unchanged; else None."""
    if "\r" in domain_xml or domain_xml != domain_xml.strip():
        return None
    try:
        root = safe_fromstring(domain_xml, "domain XML")
    except LedgerError:
        return None
    return indented(domain_xml) if root.tag == "domain" else None


def parse_checkpoint_xml(text: str | bytes, *, redefine: bool = False,
                         known_domain: str | None = None) -> CheckpointDef:
    """Parse and validate a ``<domaincheckpoint>`` document as libvirt does.

    Errors: XML_ERROR (too large, malformed, DOCTYPE/entities, not UTF-8, or a redefine
    without a name), XML_INVALID_SCHEMA (``domaincheckpoint.rng``), INTERNAL_ERROR (a
    redefine without a usable creationTime). Without ``redefine``, ``creationTime`` and
    ``parent`` are validated but ignored (``None``). ``size`` is validated but ignored.

    ``known_domain``: a domain XML the document probably embeds (the domain's newest
    checkpoint's). When the document ends with it, laid out as libvirt formats it, that
    part is not parsed again; a document without ``<domain>`` laid out so is not parsed as a
    tree. The result is the same, in a fraction of the time.
    """
    if type(text) is str and len(text) <= MAX_XML_BYTES:
        mid = _embeddable(known_domain) if known_domain is not None else None
        if mid is not None and text.endswith(END):
            start = len(text) - len(END) - len(mid)
            if text.startswith(mid, start) and text.endswith("\n", 0, start):
                head = text[:start]
                return (_parse_layout(head, redefine, known_domain)
                        or _parse(head + "  <domain/>" + END, redefine, known_domain))
        if text.endswith(CLOSE):  # a document without <domain>, as libvirt lays one out?
            found = _parse_layout(text[:-len(CLOSE)], redefine, None)
            if found is not None:
                return found
    return _parse(text, redefine)


_TEXT = r"[^<&\x00-\x08\x0b-\x1f]*"  # character data that needs no unescaping
_LAYOUT = re.compile(
    r"<domaincheckpoint>\n"
    rf"(?:  <name>({_TEXT})</name>\n)?"
    rf"(?:  <description>({_TEXT})</description>\n)?"
    rf"(?:  <parent>\n    <name>({_TEXT})</name>\n  </parent>\n)?"
    r"(?:  <creationTime>([0-9]{1,19})</creationTime>\n)?"
    r"(?:  <disks>\n((?:    <disk [^<&>\x00-\x1f]*/>\n)+)  </disks>\n)?\Z")
_LAYOUT_DISK = re.compile(r"    <disk name='([^'<&>\x00-\x1f]*)' checkpoint='(bitmap|no)'"
                          r"(?: bitmap='([^'<&>\x00-\x1f]*)')?/>\n")


def _parse_layout(head: str, redefine: bool, domain_xml: str | None) -> CheckpointDef | None:
    """The definition of a valid document laid out exactly as libvirt formats one, given up
    to its embedded ``<domain>`` or, without one, up to its end tag (``head``); None for
    any other text, valid or not (the full parser decides, with its errors). Exactness is
    checked by formatting the result again, so the answer is the full parser's, without
    building a tree."""
    m = _LAYOUT.match(head) if head.isascii() else None
    if m is None:
        return None
    name, description, parent, created, disk_lines = m.groups()
    if not (name is not None and is_checkpoint_name(name)
            and (parent is None or is_checkpoint_name(parent))
            and (0 < int(created) <= LAST_SHOWN_TIME if created is not None else not redefine)):
        return None
    disks = None
    if disk_lines is not None:
        found = _LAYOUT_DISK.findall(disk_lines)
        if not all(is_disk_name(g[0]) for g in found):
            return None
        disks = tuple(shared_disk(g[0], g[1], g[2] or None, None) for g in found)
    d = CheckpointDef(name=name, description=description or None, parent=parent,
                      creation_time=None if created is None else int(created), disks=disks,
                      domain_xml=domain_xml)
    if format_checkpoint_xml(d, no_domain=True) != head + CLOSE:
        return None
    if redefine or (parent is None and created is None):
        return d
    return CheckpointDef(name=name, description=d.description, disks=disks, domain_xml=domain_xml)


def _parse(text: str | bytes, redefine: bool, known_domain: str | None = None) -> CheckpointDef:
    """The document's definition; with ``known_domain``, the domain XML its ``<domain/>``
    placeholder stands for."""
    raw = _to_bytes(text)
    found = _children(_parse_tree(raw))
    name = description = parent = None
    created = None
    if "name" in found:
        name = check_checkpoint_name(_leaf(found["name"]))
    if "description" in found:
        description = _leaf(found["description"]) or None
    if "creationTime" in found:
        _unsigned_long(_leaf(found["creationTime"]), "creationTime")
    if "parent" in found:
        parent = _parent_name(found["parent"])
    disks = _disks(found["disks"]) if "disks" in found else None
    dom = found.get("domain")
    domain_xml = None
    if dom is not None:
        domain_xml = known_domain if known_domain is not None else _dedent(raw, dom.start, dom.end)
    if redefine:
        if name is None:
            raise LedgerError("XML_ERROR", "a redefined checkpoint must have a name")
        created = _creation_time(found.get("creationTime"))
    else:
        parent = None
    return CheckpointDef(
        name=name,
        description=description,
        parent=parent,
        creation_time=created,
        disks=disks,
        domain_xml=domain_xml,
    )


_PLAIN = re.compile(r"[\w.:@+/ -]*", re.ASCII).fullmatch  # text escaping leaves as it is


def escape(value: str) -> str:
    """Escape ``value`` as libvirt's ``virBufferEscapeString`` does."""
    if _PLAIN(value) is not None:
        return value
    return value.translate(_DROPPED).translate(_ESCAPES)


def _disk_line(d: CheckpointDisk, size: bool, explicit_only: bool = False) -> str:
    out = f"<disk name='{escape(d.name)}'"
    if not explicit_only or "checkpoint" in d.model_fields_set:
        out += f" checkpoint='{d.checkpoint}'"
    if d.checkpoint != "no" and d.bitmap is not None:
        out += f" bitmap='{escape(d.bitmap)}'"
        if size and d.size is not None:
            out += f" size='{d.size}'"
    return out + "/>"


def _head(name: str | None, description: str | None) -> list[str]:
    lines = ["<domaincheckpoint>"]
    if name is not None:
        lines.append(f"  <name>{escape(name)}</name>")
    if description is not None:
        lines.append(f"  <description>{escape(description)}</description>")
    return lines


def _disk_block(lines: list[str]) -> list[str]:
    return ["  <disks>", *(f"    {line}" for line in lines), "  </disks>"] if lines else []


def format_checkpoint_xml(d: CheckpointDef, *, no_domain: bool = False, size: bool = False) -> str:
    """Format ``d`` byte for byte as ``virDomainCheckpointDefFormatInternal`` does.

    ``no_domain`` and ``size`` are the XML_NO_DOMAIN and XML_SIZE flags.
    """
    lines = _head(d.name, d.description)
    if d.parent is not None:
        lines += ["  <parent>", f"    <name>{escape(d.parent)}</name>", "  </parent>"]
    if d.creation_time:
        lines.append(f"  <creationTime>{d.creation_time}</creationTime>")
    lines += _disk_block([_disk_line(k, size) for k in d.disks or ()])
    if d.domain_xml is not None and not no_domain:
        lines += [f"  {line}" if line else line
                  for line in d.domain_xml.rstrip().split("\n")]
    lines.append("</domaincheckpoint>")
    return "\n".join(lines) + "\n"


def _split_virsh(spec: str) -> list[str]:
    """virsh's ``vshStringToArray``: split on ``,`` where ``,,`` is a literal comma."""
    return [part.replace("\0", ",") for part in spec.replace(",,", "\0").split(",")]


def parse_diskspec(spec: str) -> CheckpointDisk:
    """Parse a ``checkpoint-create-as`` diskspec ``disk[,checkpoint=bitmap|no][,bitmap=name]``.

    Only the keys given are set on the result, so :func:`create_request_xml` can print
    exactly what virsh prints. Errors: INVALID_ARG for an unparsable spec,
    XML_INVALID_SCHEMA for a bad disk name or ``checkpoint=no`` with ``bitmap=``.
    """
    shown = spec if spec.isprintable() else repr(spec)
    bad = LedgerError("INVALID_ARG", f"unable to parse diskspec: {shown}")
    if "\0" in spec:
        raise bad
    name, *rest = _split_virsh(spec)
    fields: dict[str, str] = {}
    for part in rest:
        key, sep, value = part.partition("=")
        if not sep or key not in ("checkpoint", "bitmap") or key in fields or not value:
            raise bad
        fields[key] = value
    if not name or fields.get("checkpoint", "bitmap") not in ("bitmap", "no"):
        raise bad
    check_disk_name(name)
    if fields.get("checkpoint") == "no" and "bitmap" in fields:
        raise _schema(f"disk {name!r}: bitmap is not allowed with checkpoint='no'")
    return CheckpointDisk.model_validate({"name": name, **fields})


def create_request_xml(
    name: str | None, description: str | None, disks: Sequence[CheckpointDisk] | None
) -> str:
    """The document ``virsh checkpoint-create-as --print-xml NAME DESC --diskspec ...`` builds.

    ``checkpoint=`` is printed only when it was set explicitly (as by a diskspec that
    names it). virsh's ``--print-xml`` prints this text followed by one more newline.
    """
    lines = _head(name or None, description or None)
    lines += _disk_block([_disk_line(k, False, explicit_only=True) for k in disks or ()])
    lines.append("</domaincheckpoint>")
    return "\n".join(lines) + "\n"
