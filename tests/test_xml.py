"""``<domaincheckpoint>`` XML, specified by libvirt's own test data and behaviour.

The in/ -> out/ cases reproduce ``tests/qemudomaincheckpointxml2xmltest.c`` (see
docs/libvirt-checkpoints.md section 8); everything is compared byte for byte.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from shared_data import LIBVIRT_TESTDATA

from ledger.domain.checkpoint_xml import (
    LAST_SHOWN_TIME,
    MAX_XML_BYTES,
    create_request_xml,
    format_checkpoint_xml,
    indented,
    parse_checkpoint_xml,
    parse_diskspec,
)
from ledger.domain.errors import LedgerError
from ledger.domain.model import CheckpointDef, CheckpointDisk

DATA = LIBVIRT_TESTDATA
PARENT = "1525111885"


def read(rel: str) -> str:
    return (DATA / rel).read_text(encoding="utf-8")


def fails(text: str | bytes, code: str, *, redefine: bool = False) -> LedgerError:
    """Parse ``text``, expect LedgerError(code) with a one-line message."""
    with pytest.raises(LedgerError) as info:
        parse_checkpoint_xml(text, redefine=redefine)
    err = info.value
    assert err.code == code, str(err)
    assert "\n" not in str(err) and "\r" not in str(err)
    return err


def xml_test(d: CheckpointDef, mocktime: int, parent: bool, size: bool) -> CheckpointDef:
    """The post-parse hook and TEST_PARENT / TEST_VDA_BITMAP / TEST_SIZE flags of the test."""
    name = d.name or str(mocktime)
    update: dict[str, object] = {"name": name, "creation_time": mocktime}
    if parent:
        assert d.parent is None
        update["parent"] = PARENT
    disks = list(d.disks or ())
    if not disks:
        disks.append(CheckpointDisk(name="vda", checkpoint="bitmap"))
    assert disks[0].name == "vda"
    disks[0] = disks[0].model_copy(
        update={"bitmap": name, "size": 1048576 if size else disks[0].size}
    )
    update["disks"] = tuple(disks)
    return d.model_copy(update=update)


# --- libvirt's test data ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "mocktime", "parent", "size"),
    [
        ("empty", 1525889631, False, False),
        ("disk-default", 1525889631, True, False),
        ("sample", 1525889631, True, False),
        ("size", 1553648510, True, True),
    ],
)
def test_in_to_out(case: str, mocktime: int, parent: bool, size: bool) -> None:
    d = parse_checkpoint_xml(read(f"in/{case}.xml"))
    assert d.creation_time is None and d.parent is None
    d = xml_test(d, mocktime, parent, size)
    assert format_checkpoint_xml(d, size=size) == read(f"out/{case}.xml")


@pytest.mark.parametrize(
    "rel",
    [
        "out/redefine.xml",
        "out-libvirt-9.0.0-variants/redefine.xml",
        "virsh/checkpoint-c2.xml",
        "virsh/checkpoint-c3.xml",
    ],
)
def test_redefine_round_trip(rel: str) -> None:
    text = read(rel)
    d = parse_checkpoint_xml(text, redefine=True)
    assert d.name is not None and d.creation_time is not None and d.domain_xml is not None
    assert d.domain_xml.startswith("<domain type=") and d.domain_xml.endswith("</domain>")
    assert format_checkpoint_xml(d) == text
    assert parse_checkpoint_xml(text.encode(), redefine=True) == d


def test_redefine_fields() -> None:
    d = parse_checkpoint_xml(read("virsh/checkpoint-c2.xml"), redefine=True)
    assert (d.name, d.parent, d.creation_time) == ("c2", "c3", 1234)
    assert d.disks == (CheckpointDisk(name="vda", checkpoint="bitmap", bitmap="c2"),)
    assert d.domain_xml is not None and "\n  <name>test</name>\n" in d.domain_xml


def test_redefine_no_domain_flag() -> None:
    d = parse_checkpoint_xml(read("out/redefine.xml"), redefine=True)
    out = format_checkpoint_xml(d, no_domain=True)
    assert "<domain " not in out and out.endswith("  </disks>\n</domaincheckpoint>\n")


def test_virsh_dumpxml_output_round_trips() -> None:
    """The two checkpoint-dumpxml documents of virsh/checkpoint.out.libvirt-9.0.0."""
    text = read("virsh/checkpoint.out.libvirt-9.0.0")
    docs = re.findall(r"^<domaincheckpoint>\n.*?^</domaincheckpoint>\n", text, re.M | re.S)
    assert len(docs) == 2
    for doc in docs:
        assert format_checkpoint_xml(parse_checkpoint_xml(doc, redefine=True)) == doc


@pytest.mark.parametrize("rel", ["in/disk-invalid.xml", "in/name-invalid.xml"])
@pytest.mark.parametrize("redefine", [False, True])
def test_invalid_inputs(rel: str, redefine: bool) -> None:
    fails(read(rel), "XML_INVALID_SCHEMA", redefine=redefine)


@pytest.mark.parametrize(
    "rel",
    [
        "out/internal-active-invalid.xml",
        "out/internal-inactive-invalid.xml",
        "out-libvirt-9.0.0-variants/internal-active-invalid.xml",
        "out-libvirt-9.0.0-variants/internal-inactive-invalid.xml",
    ],
)
@pytest.mark.parametrize("redefine", [False, True])
def test_orphaned_active_element_is_rejected(rel: str, redefine: bool) -> None:
    err = fails(read(rel), "XML_INVALID_SCHEMA", redefine=redefine)
    assert "active" in str(err)


# --- parse semantics --------------------------------------------------------------------


def test_create_ignores_parent_and_creation_time() -> None:
    doc = (
        "<domaincheckpoint><creationTime>5</creationTime><parent><name>p</name></parent>"
        "<name>c</name><description>d</description></domaincheckpoint>"
    )
    assert parse_checkpoint_xml(doc) == CheckpointDef(name="c", description="d")
    d = parse_checkpoint_xml(doc, redefine=True)
    assert (d.parent, d.creation_time) == ("p", 5)


def test_create_name_and_disks_optional() -> None:
    assert parse_checkpoint_xml("<domaincheckpoint/>") == CheckpointDef()


def test_disk_defaults_and_order_kept() -> None:
    d = parse_checkpoint_xml(
        "<domaincheckpoint><disks><disk name='vdb'/><disk name='vda' checkpoint='no'/>"
        "<disk name='/var/lib/x.img' bitmap='b' size='7'/></disks></domaincheckpoint>"
    )
    assert d.disks == (
        CheckpointDisk(name="vdb", checkpoint="bitmap"),
        CheckpointDisk(name="vda", checkpoint="no"),
        CheckpointDisk(name="/var/lib/x.img", checkpoint="bitmap", bitmap="b"),
    )  # bitmap names are not defaulted, and an input size is ignored (as libvirt does)


def test_redefine_requires_name() -> None:
    err = fails(
        "<domaincheckpoint><creationTime>1</creationTime></domaincheckpoint>",
        "XML_ERROR",
        redefine=True,
    )
    assert str(err) == "XML error: a redefined checkpoint must have a name"


@pytest.mark.parametrize("ctime", [None, "9223372036854775808", "5 "])
def test_redefine_requires_usable_creation_time(ctime: str | None) -> None:
    body = "" if ctime is None else f"<creationTime>{ctime}</creationTime>"
    err = fails(
        f"<domaincheckpoint><name>c</name>{body}</domaincheckpoint>",
        "INTERNAL_ERROR",
        redefine=True,
    )
    assert str(err) == "internal error: missing creationTime from existing checkpoint"


def test_redefine_creation_time_zero_is_omitted_on_output() -> None:
    d = parse_checkpoint_xml(
        "<domaincheckpoint><name>c</name><creationTime>0</creationTime></domaincheckpoint>",
        redefine=True,
    )
    assert d.creation_time == 0
    assert format_checkpoint_xml(d) == "<domaincheckpoint>\n  <name>c</name>\n</domaincheckpoint>\n"


def test_comments_pis_cdata_and_crlf() -> None:
    doc = (
        "<?xml version='1.0' encoding='UTF-8'?>\r\n<!-- c -->\r\n<domaincheckpoint>\r\n"
        "  <name>a<!-- x -->b</name>\r\n  <?pi data?>\r\n"
        "  <description><![CDATA[<x> & y]]></description>\r\n"
        "  <domain type='t'>\r\n    <name>x</name>\r\n  </domain>\r\n</domaincheckpoint>\r\n"
    )
    d = parse_checkpoint_xml(doc)
    assert (d.name, d.description) == ("ab", "<x> & y")
    assert d.domain_xml == "<domain type='t'>\n  <name>x</name>\n</domain>"


def test_domain_is_sliced_verbatim_and_dedented() -> None:
    dom = (
        "    <domain type=\"qemu\"  id='1'>\n      <uuid>u</uuid>\n"
        "      <x a='&gt;' b=\"1\"/><y>é</y>\n      <empty/>\n    </domain>"
    )
    doc = f"<domaincheckpoint>\n  <name>n</name>\n  <creationTime>3</creationTime>\n{dom}\n"
    d = parse_checkpoint_xml(doc + "</domaincheckpoint>", redefine=True)
    expected = "\n".join(line[4:] for line in dom.split("\n"))
    assert d.domain_xml == expected
    out = format_checkpoint_xml(d)
    assert out.endswith("\n".join(line[2:] for line in dom.split("\n")) + "\n</domaincheckpoint>\n")


def test_domain_empty_element_and_same_line() -> None:
    d = parse_checkpoint_xml(
        "<domaincheckpoint><domain type='a>b'/><name>x</name></domaincheckpoint>"
    )
    assert d.domain_xml == "<domain type='a>b'/>"


# --- format ------------------------------------------------------------------------------


def test_format_escapes_like_virbuffer() -> None:
    d = CheckpointDef(
        name="n",
        description="a&b<c>'d\"\x01\te",
        disks=(CheckpointDisk(name="/x'y", bitmap="b&"),),
    )
    assert format_checkpoint_xml(d) == (
        "<domaincheckpoint>\n  <name>n</name>\n"
        "  <description>a&amp;b&lt;c&gt;&apos;d&quot;\te</description>\n"
        "  <disks>\n    <disk name='/x&apos;y' checkpoint='bitmap' bitmap='b&amp;'/>\n"
        "  </disks>\n</domaincheckpoint>\n"
    )
    assert parse_checkpoint_xml(format_checkpoint_xml(d)).description == "a&b<c>'d\"\te"


def test_format_size_and_no_disks() -> None:
    disks = (
        CheckpointDisk(name="vda", bitmap="c", size=10),
        CheckpointDisk(name="vdb", size=10),
        CheckpointDisk(name="vdc", checkpoint="no", bitmap="zz", size=3),
    )
    d = CheckpointDef(name="c", creation_time=7, disks=disks)
    out = format_checkpoint_xml(d, size=True)
    assert "<disk name='vda' checkpoint='bitmap' bitmap='c' size='10'/>" in out
    assert "<disk name='vdb' checkpoint='bitmap'/>" in out
    assert "<disk name='vdc' checkpoint='no'/>" in out
    assert "size=" not in format_checkpoint_xml(d)
    assert "<disks>" not in format_checkpoint_xml(d.model_copy(update={"disks": ()}))


# --- hostile input ------------------------------------------------------------------------

LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + "".join(
        f' <!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">\n'
        for i in range(1, 10)
    )
    + "]>\n<domaincheckpoint><name>&lol9;</name></domaincheckpoint>"
)


@pytest.mark.parametrize(
    "doc",
    [
        LAUGHS,
        '<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        "<domaincheckpoint><description>&x;</description></domaincheckpoint>",
        '<!DOCTYPE d [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]><domaincheckpoint/>',
        "<!DOCTYPE d [<!ENTITY % p \"<!ENTITY y 'z'>\"> %p;]><domaincheckpoint/>",
        '<!DOCTYPE domaincheckpoint SYSTEM "file:///etc/passwd"><domaincheckpoint/>',
        "<!DOCTYPE domaincheckpoint><domaincheckpoint/>",
        "<domaincheckpoint><name>&undefined;</name></domaincheckpoint>",
        "<domaincheckpoint><name>c1</name>",
        "<domaincheckpoint><name>c1</nam",
        "",
        "<domaincheckpoint/><domaincheckpoint/>",
        "<domaincheckpoint><disk name='a' name='b'/></domaincheckpoint>",
        b"<domaincheckpoint><description>\xff\xfe</description></domaincheckpoint>",
        b"\xff\xfe<\x00d\x00/\x00>\x00",
        "<domaincheckpoint><description>\ud800</description></domaincheckpoint>",
        "<domaincheckpoint><name>\x00</name></domaincheckpoint>",
    ],
)
def test_hostile_documents_are_xml_errors(doc: str | bytes) -> None:
    start = time.monotonic()
    err = fails(doc, "XML_ERROR")
    assert time.monotonic() - start < 1
    assert "root:" not in str(err)
    assert str(err).startswith("XML error: ")


def test_expat_error_has_line_and_column() -> None:
    err = fails("<domaincheckpoint>\n  <name>c1</name>\n  <x", "XML_ERROR")
    assert re.search(r"line \d+, column \d+", str(err))


def test_doctype_never_reads_files(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_open(*_a: object, **_k: object) -> None:
        raise AssertionError("a file was opened")

    monkeypatch.setattr("builtins.open", no_open)
    monkeypatch.setattr(Path, "open", no_open)
    fails(
        '<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><domaincheckpoint>'
        "<name>&x;</name></domaincheckpoint>",
        "XML_ERROR",
    )


@pytest.mark.parametrize("as_bytes", [False, True])
def test_size_cap(as_bytes: bool) -> None:
    head, tail = "<domaincheckpoint><description>", "</description></domaincheckpoint>"
    fill = MAX_XML_BYTES - len(head) - len(tail)
    ok = head + "x" * fill + tail
    assert parse_checkpoint_xml(ok.encode() if as_bytes else ok).description == "x" * fill
    big = head + "x" * (fill + 1) + tail
    fails(big.encode() if as_bytes else big, "XML_ERROR")
    fails(head + "é" * (fill // 2 + 1) + tail, "XML_ERROR")  # the cap counts UTF-8 bytes


SCHEMA_ERRORS = [
    "<domain/>",
    "<domaincheckpoint xmlns='urn:x'/>",
    "<domaincheckpoint a='1'/>",
    "<domaincheckpoint>text</domaincheckpoint>",
    "<domaincheckpoint><name>a</name><name>b</name></domaincheckpoint>",
    "<domaincheckpoint><description/><description/></domaincheckpoint>",
    "<domaincheckpoint><disks/></domaincheckpoint>",
    "<domaincheckpoint><disks></disks><disks/></domaincheckpoint>",
    "<domaincheckpoint><disks><disk/></disks></domaincheckpoint>",
    "<domaincheckpoint><disks><disk name='vda'>x</disk></disks></domaincheckpoint>",
    "<domaincheckpoint><disks><disk name='vda'><a/></disk></disks></domaincheckpoint>",
    "<domaincheckpoint><disks><vda/></disks></domaincheckpoint>",
    "<domaincheckpoint><disks><disk name='vda' checkpoint='maybe'/></disks></domaincheckpoint>",
    "<domaincheckpoint><disks><disk name='vda' checkpoint='default'/></disks></domaincheckpoint>",
    "<domaincheckpoint><disks><disk name='vda' checkpoint='no' bitmap='b'/></disks>"
    "</domaincheckpoint>",
    "<domaincheckpoint><disks><disk name='vda' checkpoint='no' size='1'/></disks>"
    "</domaincheckpoint>",
    "<domaincheckpoint><disks><disk name='vda' size='-1'/></disks></domaincheckpoint>",
    "<domaincheckpoint><disks><disk name='vda' size='18446744073709551616'/></disks>"
    "</domaincheckpoint>",
    "<domaincheckpoint><disks><disk name='vda' foo='1'/></disks></domaincheckpoint>",
    "<domaincheckpoint><disks><disk name='xyz'/></disks></domaincheckpoint>",
    "<domaincheckpoint><creationTime>abc</creationTime></domaincheckpoint>",
    "<domaincheckpoint><creationTime>-1</creationTime></domaincheckpoint>",
    "<domaincheckpoint><creationTime></creationTime></domaincheckpoint>",
    "<domaincheckpoint><creationTime u='s'>1</creationTime></domaincheckpoint>",
    "<domaincheckpoint><name><b/></name></domaincheckpoint>",
    "<domaincheckpoint><parent/></domaincheckpoint>",
    "<domaincheckpoint><parent>p</parent></domaincheckpoint>",
    "<domaincheckpoint><parent><name>a</name><name>b</name></parent></domaincheckpoint>",
    "<domaincheckpoint><parent><name>../x</name></parent></domaincheckpoint>",
    "<domaincheckpoint><active>1</active></domaincheckpoint>",
    "<domaincheckpoint><domain/><domain/></domaincheckpoint>",
]


@pytest.mark.parametrize("doc", SCHEMA_ERRORS)
@pytest.mark.parametrize("redefine", [False, True])
def test_schema_errors(doc: str, redefine: bool) -> None:
    err = fails(doc, "XML_INVALID_SCHEMA", redefine=redefine)
    assert str(err).startswith("XML document failed to validate against schema: ")


BAD_NAMES = [
    "../x",
    "a/b",
    ".hidden",
    "",
    "with space",
    "new\nline",
    "ünïcode",
    "a" * 10_000,
    " lead",
    "trail\n",
    "tab\t",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_checkpoint_names(name: str) -> None:
    fails(f"<domaincheckpoint><name>{name}</name></domaincheckpoint>", "XML_INVALID_SCHEMA")
    doc = f"<domaincheckpoint><parent><name>{name}</name></parent></domaincheckpoint>"
    fails(doc, "XML_INVALID_SCHEMA", redefine=True)


@pytest.mark.parametrize("name", ["-lead", "a..b", "ok-name_1.x", "1525889631", "_"])
def test_good_checkpoint_names(name: str) -> None:
    assert (
        parse_checkpoint_xml(f"<domaincheckpoint><name>{name}</name></domaincheckpoint>").name
        == name
    )


# --- virsh diskspec and checkpoint-create-as --print-xml -----------------------------------


@pytest.mark.parametrize(
    ("spec", "disk"),
    [
        ("vda", CheckpointDisk(name="vda")),
        ("vdb,checkpoint=no", CheckpointDisk(name="vdb", checkpoint="no")),
        ("sda1,checkpoint=bitmap,bitmap=b1", CheckpointDisk(name="sda1", bitmap="b1")),
        ("vda,bitmap=b1,checkpoint=bitmap", CheckpointDisk(name="vda", bitmap="b1")),
        ("/var/lib/a,,b.img", CheckpointDisk(name="/var/lib/a,b.img")),
        ("vda,bitmap=x=y", CheckpointDisk(name="vda", bitmap="x=y")),
    ],
)
def test_diskspec(spec: str, disk: CheckpointDisk) -> None:
    assert parse_diskspec(spec) == disk


@pytest.mark.parametrize(
    "spec",
    [
        "",
        ",",
        "vda,",
        "vda,foo=1",
        "vda,checkpoint=maybe",
        "vda,checkpoint=",
        "vda,checkpoint=no,checkpoint=no",
        "vda,bitmap=a,bitmap=b",
        "vda,bitmap",
        "vda,size=1",
        ",checkpoint=no",
        "vda,check\npoint=no",
        "vda\x00",
    ],
)
def test_bad_diskspec(spec: str) -> None:
    with pytest.raises(LedgerError) as info:
        parse_diskspec(spec)
    assert info.value.code == "INVALID_ARG"
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("invalid argument: unable to parse diskspec: ")


@pytest.mark.parametrize(
    "spec", ["xyz", "relative/path", "vd", "vda,,x", "vda,checkpoint=no,bitmap=b"]
)
def test_diskspec_schema_errors(spec: str) -> None:
    with pytest.raises(LedgerError) as info:
        parse_diskspec(spec)
    assert info.value.code == "XML_INVALID_SCHEMA"


def test_create_request_xml_matches_virsh() -> None:
    specs = ["vda", "vdb,checkpoint=no", "vdc,checkpoint=bitmap,bitmap=b"]
    xml = create_request_xml("chk1", "my <desc>", [parse_diskspec(s) for s in specs])
    assert xml == (
        "<domaincheckpoint>\n  <name>chk1</name>\n  <description>my &lt;desc&gt;</description>\n"
        "  <disks>\n    <disk name='vda'/>\n    <disk name='vdb' checkpoint='no'/>\n"
        "    <disk name='vdc' checkpoint='bitmap' bitmap='b'/>\n  </disks>\n"
        "</domaincheckpoint>\n"
    )
    d = parse_checkpoint_xml(xml)
    assert d.name == "chk1" and d.description == "my <desc>" and d.disks is not None
    assert [k.checkpoint for k in d.disks] == ["bitmap", "no", "bitmap"]


def test_create_request_xml_minimal() -> None:
    assert create_request_xml(None, None, None) == "<domaincheckpoint>\n</domaincheckpoint>\n"
    assert create_request_xml(None, None, []) == "<domaincheckpoint>\n</domaincheckpoint>\n"
    assert parse_checkpoint_xml(create_request_xml(None, None, None)) == CheckpointDef()


# --- properties ----------------------------------------------------------------------------

NAMES = st.from_regex(r"[a-zA-Z0-9_\-][a-zA-Z0-9_\-.]{0,40}", fullmatch=True)
DISKS = st.builds(
    CheckpointDisk,
    name=st.from_regex(r"(vd|sd|hd)[a-z]{1,3}", fullmatch=True),
    checkpoint=st.sampled_from(["bitmap", "no"]),
    bitmap=st.none() | NAMES,
)
TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("\t\n"))


@given(
    name=NAMES,
    description=st.none() | TEXT.filter(bool),
    parent=st.none() | NAMES,
    ctime=st.integers(1, LAST_SHOWN_TIME),  # later ones are refused (test_bad_input)
    disks=st.none() | st.lists(DISKS, min_size=1, max_size=4).map(tuple),
)
def test_format_parse_round_trip(
    name: str,
    description: str | None,
    parent: str | None,
    ctime: int,
    disks: tuple[CheckpointDisk, ...] | None,
) -> None:
    disks = (
        tuple(k.model_copy(update={"bitmap": None}) if k.checkpoint == "no" else k for k in disks)
        if disks
        else None
    )
    d = CheckpointDef(
        name=name, description=description, parent=parent, creation_time=ctime, disks=disks
    )
    xml = format_checkpoint_xml(d)
    assert parse_checkpoint_xml(xml, redefine=True) == d
    assert format_checkpoint_xml(parse_checkpoint_xml(xml, redefine=True)) == xml


@given(st.binary(max_size=200) | st.text(max_size=200))
def test_arbitrary_input_fails_cleanly(doc: str | bytes) -> None:
    try:
        parse_checkpoint_xml(doc, redefine=True)
    except LedgerError as err:
        assert "\n" not in str(err)


# --- a known embedded domain -------------------------------------------------------------


REDEFINE_FILES = ["out/redefine.xml", "out-libvirt-9.0.0-variants/redefine.xml",
                  "virsh/checkpoint-c2.xml", "virsh/checkpoint-c3.xml"]


@pytest.mark.parametrize("rel", REDEFINE_FILES)
def test_a_known_domain_gives_the_same_definition(rel: str) -> None:
    text = read(rel)
    full = parse_checkpoint_xml(text, redefine=True)
    assert full.domain_xml is not None
    assert parse_checkpoint_xml(text, redefine=True, known_domain=full.domain_xml) == full
    other = full.domain_xml.replace("<uuid>", "<uuid>0")
    assert parse_checkpoint_xml(text, redefine=True, known_domain=other) == full


@pytest.mark.parametrize("known", [
    "<domain/>", "<domain><x></domain>", "<nodomain/>", "<domain>&bad;</domain>",
    " <domain/>", "<domain>\r\n</domain>",
])
def test_a_known_domain_that_does_not_fit_is_parsed_in_full(known: str) -> None:
    # the document embeds ``known`` as libvirt lays it out: every answer is the full parse's
    doc = ("<domaincheckpoint>\n  <name>n</name>\n  <creationTime>3</creationTime>\n"
           + indented(known) + "\n</domaincheckpoint>\n")
    try:
        expected: CheckpointDef | str = parse_checkpoint_xml(doc, redefine=True)
    except LedgerError as e:
        expected = e.code
    try:
        got: CheckpointDef | str = parse_checkpoint_xml(doc, redefine=True, known_domain=known)
    except LedgerError as e:
        got = e.code
    assert got == expected


def test_a_known_domain_does_not_excuse_the_rest_of_the_document() -> None:
    d = parse_checkpoint_xml(read("out/redefine.xml"), redefine=True)
    assert d.domain_xml is not None
    bad = format_checkpoint_xml(d).replace("<name>", "<name>../", 1)
    with pytest.raises(LedgerError) as e:
        parse_checkpoint_xml(bad, redefine=True, known_domain=d.domain_xml)
    assert e.value.code == "XML_INVALID_SCHEMA"


_EDITS = ["<", ">", "&", "&amp;", "'", '"', "\t", "\r", "\n", "\x01", "\x00", " ", "0", "9",
          "a", "/", ".", "\u00e9", "<name>", "</name>", "<description>", "  <disks>\n",
          "    <disk name='vdb' checkpoint='no'/>\n", " size='1'", " bitmap=''", "-"]


def _outcome(text: str, redefine: bool, known: str | None) -> CheckpointDef | str:
    try:
        return parse_checkpoint_xml(text, redefine=redefine, known_domain=known)
    except LedgerError as e:
        return e.code


def _full_parse(text: str, redefine: bool) -> CheckpointDef | str:
    from ledger.domain.checkpoint_xml import _parse

    try:
        return _parse(text, redefine)
    except LedgerError as e:
        return e.code


@given(data=st.data())
def test_libvirt_layout_is_read_as_the_full_parser_reads_it(data: st.DataObject) -> None:
    # a document laid out as libvirt formats one is read without a tree
    # (checkpoint_xml._parse_layout); any edit before its <domain> gives the full parser's
    # answer or error either way
    d = parse_checkpoint_xml(read(data.draw(st.sampled_from(REDEFINE_FILES))), redefine=True)
    assert d.domain_xml is not None
    text = format_checkpoint_xml(d)
    head = len(text) - len(indented(d.domain_xml)) - len("\n</domaincheckpoint>\n")
    for _ in range(data.draw(st.integers(0, 3))):
        at = data.draw(st.integers(0, head))
        cut = data.draw(st.integers(0, 2))
        piece = data.draw(st.sampled_from(["", *_EDITS]))
        text = text[:at] + piece + text[at + cut:]
        head += len(piece) - cut
    redefine = data.draw(st.booleans())
    assert _outcome(text, redefine, d.domain_xml) == _full_parse(text, redefine)
    assert _outcome(text, redefine, None) == _full_parse(text, redefine)


@given(data=st.data())
def test_a_document_without_domain_in_libvirt_layout_is_read_as_the_full_parser_reads_it(
    data: st.DataObject,
) -> None:
    # create requests and XML_NO_DOMAIN texts are read without a tree when laid out as
    # libvirt (or virsh --print-xml) lays them out; any edit gives the full parser's answer
    d = parse_checkpoint_xml(read(data.draw(st.sampled_from(REDEFINE_FILES))), redefine=True)
    disks = data.draw(st.sampled_from([None, d.disks]))
    text = data.draw(st.sampled_from([
        format_checkpoint_xml(d.model_copy(update={"disks": disks}), no_domain=True),
        create_request_xml(d.name, d.description, disks),
        create_request_xml(d.name, data.draw(st.sampled_from(["", "x", "a b", "\u00e9"])),
                           None),
    ]))
    for _ in range(data.draw(st.integers(0, 3))):
        at = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 2))
        text = text[:at] + data.draw(st.sampled_from(["", *_EDITS])) + text[at + cut:]
    redefine = data.draw(st.booleans())
    assert _outcome(text, redefine, None) == _full_parse(text, redefine)
    assert _outcome(text, redefine, d.domain_xml) == _full_parse(text, redefine)


def test_libvirt_own_layout_takes_the_short_way() -> None:
    from ledger.domain.checkpoint_xml import CLOSE, _parse_layout

    for rel in REDEFINE_FILES:
        d = parse_checkpoint_xml(read(rel), redefine=True)
        assert d.domain_xml is not None
        text = format_checkpoint_xml(d)
        head = text[:len(text) - len(indented(d.domain_xml)) - len("\n</domaincheckpoint>\n")]
        assert _parse_layout(head, True, d.domain_xml) == d
        bare = d.model_copy(update={"domain_xml": None})
        assert _parse_layout(format_checkpoint_xml(d, no_domain=True)[:-len(CLOSE)],
                             True, None) == bare
        request = create_request_xml(d.name, d.description, None)
        assert _parse_layout(request[:-len(CLOSE)], False, None) == CheckpointDef(
            name=d.name, description=d.description)
