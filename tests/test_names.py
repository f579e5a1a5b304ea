"""libvirt's checkpoint-name and disk-name grammars (docs/libvirt-checkpoints.md 2.1, 9.1-9.2)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import LedgerError
from ledger.model import CheckpointDef
from ledger.names import check_checkpoint_name, check_disk_name, is_checkpoint_name, is_disk_name
from ledger.xml import format_checkpoint_xml, parse_checkpoint_xml

DOCUMENTED = re.compile(r"[a-zA-Z0-9_-][a-zA-Z0-9_.-]*")


@pytest.mark.parametrize("name", ["ok-name_1.x", "-lead", "a..b", "c1", "1525889631", "_", "A"])
def test_accepted_checkpoint_names(name: str) -> None:
    assert is_checkpoint_name(name)
    assert check_checkpoint_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
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
    ],
)
def test_rejected_checkpoint_names(name: str) -> None:
    assert not is_checkpoint_name(name)
    with pytest.raises(LedgerError) as info:
        check_checkpoint_name(name)
    assert info.value.code == "XML_INVALID_SCHEMA"
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "name",
    [
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
    ],
)
def test_accepted_disk_names(name: str) -> None:
    assert is_disk_name(name)
    assert check_disk_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
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
    ],
)
def test_rejected_disk_names(name: str) -> None:
    assert not is_disk_name(name)
    with pytest.raises(LedgerError) as info:
        check_disk_name(name)
    assert info.value.code == "XML_INVALID_SCHEMA"
    assert "\n" not in str(info.value)


@given(st.text(max_size=60) | st.from_regex(DOCUMENTED, fullmatch=True))
def test_checkpoint_name_grammar_is_the_documented_pattern(name: str) -> None:
    documented = DOCUMENTED.fullmatch(name) is not None and name.isascii()
    assert is_checkpoint_name(name) == documented


@given(
    st.from_regex(r"[a-zA-Z0-9_\-][a-zA-Z0-9_\-.]{0,254}", fullmatch=True) | st.text(max_size=30)
)
def test_accepted_names_round_trip_through_xml(name: str) -> None:
    if not is_checkpoint_name(name):
        return
    assert DOCUMENTED.fullmatch(name) and name.isascii()
    xml = format_checkpoint_xml(CheckpointDef(name=name, parent=name, creation_time=1))
    d = parse_checkpoint_xml(xml, redefine=True)
    assert (d.name, d.parent) == (name, name)
    assert parse_checkpoint_xml(xml).name == name
