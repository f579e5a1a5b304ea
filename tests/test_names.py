"""libvirt's checkpoint-name and disk-name grammars (docs/libvirt-checkpoints.md 2.1, 9.1-9.2).

The examples are checked twice: against ledger/domain/names.py, and (marked ``libvirt``) against
libvirt's own schema validation on test:///default, which also answers for random names.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.domain.checkpoint_xml import format_checkpoint_xml, parse_checkpoint_xml
from ledger.domain.errors import LedgerError
from ledger.domain.model import CheckpointDef
from ledger.domain.names import (
    MAX_NAME,
    check_checkpoint_name,
    check_disk_name,
    is_checkpoint_name,
    is_disk_name,
)

GOOD_NAMES = ["ok-name_1.x", "-lead", "a..b", "c1", "1525889631", "_", "A", "x."]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_accepted_checkpoint_names(name: str) -> None:
    assert is_checkpoint_name(name)
    assert check_checkpoint_name(name) == name


BAD_NAMES = [
    "../escape",
    "../x",
    "a/b",
    ".hidden",
    "with space",
    "new\nline",
    "",
    "ünïcode",
    "trail\n",
    "a" * 10_000,
    "tab\t",
    "semi;colon",
    "ａ",
    " lead",
    "nbsp\u00a0",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_rejected_checkpoint_names(name: str) -> None:
    assert not is_checkpoint_name(name)
    with pytest.raises(LedgerError) as info:
        check_checkpoint_name(name)
    assert info.value.code == "XML_INVALID_SCHEMA"
    assert "\n" not in str(info.value)


GOOD_DISKS = [
    "vda",
    "sda1",
    "hdc",
    "xvdb",
    "ubda",
    "fd0",
    "ioemu:hda",
    "vd_x",
    "/var/lib/x.img",
    "C:\\x",
    "c:\\images\\a b.qcow2",
    "/a",
]


@pytest.mark.parametrize("name", GOOD_DISKS)
def test_accepted_disk_names(name: str) -> None:
    assert is_disk_name(name)
    assert check_disk_name(name) == name


BAD_DISKS = [
    "vd",
    "xyz",
    "relative/path",
    "",
    "/",
    "C:x",
    "ioemu:",
    "vda-1",
    "vda\n",
    "/a\nb",
    "nvme0n1",
    "hda b",
]


@pytest.mark.parametrize("name", BAD_DISKS)
def test_rejected_disk_names(name: str) -> None:
    assert not is_disk_name(name)
    with pytest.raises(LedgerError) as info:
        check_disk_name(name)
    assert info.value.code == "XML_INVALID_SCHEMA"
    assert "\n" not in str(info.value)


# ------------------------------------------------------------- libvirt's answer
@pytest.fixture(scope="module")
def libvirt_test() -> Iterator[tuple[Any, Any]]:
    """(libvirt module, the running domain ``test`` of test:///default, one disk vda)."""
    try:
        import libvirt  # noqa: F401
    except ImportError:
        pytest.skip("libvirt-python is not installed (pip install 'ckpt-ledger[libvirt]')")
    from adapters.libvirt import load_libvirt

    libvirt = load_libvirt("test:///default")  # its error-code names, and libvirt's stderr quiet
    conn = libvirt.open("test:///default")
    yield libvirt, conn.lookupByName("test")
    conn.close()


def libvirt_says(lv: tuple[Any, Any], name: str = "n", disk: str | None = None) -> str | None:
    """Create a checkpoint ``name`` (with one ``disk``) on test:///default and delete it
    again: None if libvirt accepted it, else its error code name."""
    from adapters.libvirt import error_code_name

    libvirt, dom = lv
    disks = "" if disk is None else f"<disks><disk name={quoteattr(disk)}/></disks>"
    xml = f"<domaincheckpoint><name>{escape(name)}</name>{disks}</domaincheckpoint>"
    try:
        cp = dom.checkpointCreateXML(xml, 0)
    except libvirt.libvirtError as e:
        return error_code_name(e.get_error_code())
    cp.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
    return None


@pytest.mark.libvirt
@pytest.mark.parametrize("name", GOOD_NAMES + BAD_NAMES, ids=repr)
def test_checkpoint_name_examples_are_libvirts(libvirt_test: tuple[Any, Any], name: str
                                              ) -> None:
    """libvirt's schema agrees with every example above (save the ledger's length cap)."""
    verdict = libvirt_says(libvirt_test, name)
    if len(name) > MAX_NAME:
        assert verdict is None and not is_checkpoint_name(name)  # libvirt caps nothing
    elif name in GOOD_NAMES:
        assert verdict is None
    else:
        assert verdict in ("XML_INVALID_SCHEMA", "XML_DETAIL"), verdict


@pytest.mark.libvirt
@settings(max_examples=60, deadline=None, print_blob=True)
@given(st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
               max_size=12)
       | st.text("aZ09_-./ \t\n:;é", max_size=8))
def test_checkpoint_names_are_what_libvirt_accepts(libvirt_test: tuple[Any, Any], name: str
                                                   ) -> None:
    """Any name: the ledger accepts it exactly when libvirt's schema does (libvirt refuses
    a character XML cannot hold with XML_DETAIL; the ledger's grammar refuses it too)."""
    verdict = libvirt_says(libvirt_test, name)
    assert is_checkpoint_name(name) == (verdict is None), verdict
    if verdict is not None:
        assert verdict in ("XML_INVALID_SCHEMA", "XML_DETAIL"), verdict


@pytest.mark.libvirt
@pytest.mark.parametrize("name", GOOD_DISKS + BAD_DISKS, ids=repr)
def test_disk_name_examples_are_libvirts(libvirt_test: tuple[Any, Any], name: str) -> None:
    """libvirt's schema refuses exactly the disk names the ledger refuses; a well-formed
    name the domain lacks is CONFIG_UNSUPPORTED ("no disk named ...") instead."""
    verdict = libvirt_says(libvirt_test, "d", disk=name)
    if is_disk_name(name):
        assert verdict in (None, "CONFIG_UNSUPPORTED"), verdict
    else:
        assert verdict in ("XML_INVALID_SCHEMA", "XML_DETAIL"), verdict


@given(
    st.from_regex(r"[a-zA-Z0-9_\-][a-zA-Z0-9_\-.]{0,254}", fullmatch=True) | st.text(max_size=30)
)
def test_accepted_names_round_trip_through_xml(name: str) -> None:
    if not is_checkpoint_name(name):
        return
    xml = format_checkpoint_xml(CheckpointDef(name=name, parent=name, creation_time=1))
    d = parse_checkpoint_xml(xml, redefine=True)
    assert (d.name, d.parent) == (name, name)
    assert parse_checkpoint_xml(xml).name == name
