"""ledger.domain.domain_xml: the disks of a libvirt <domain> XML."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ledger.domain.domain_xml import MAX_XML_BYTES, DomainXml, parse_domain_xml
from ledger.domain.errors import LedgerError
from ledger.domain.model import DomainDisk

TESTDATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "libvirt-testdata"
if not TESTDATA.is_dir():  # CI lays shared/ beside the clone; a session has it at /work/shared
    TESTDATA = Path("/work/shared/libvirt-testdata")

# The test driver's default domain 'test' (libvirt 9.0, XMLDesc(VIR_DOMAIN_XML_INACTIVE)).
TEST_DEFAULT_DOMAIN = """<domain type='test'>
  <name>test</name>
  <uuid>6695eb01-f6a4-8304-79aa-97f2502e193f</uuid>
  <memory unit='KiB'>8388608</memory>
  <currentMemory unit='KiB'>2097152</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <os>
    <type arch='i686'>hvm</type>
    <boot dev='hd'/>
  </os>
  <clock offset='utc'/>
  <devices>
    <disk type='file' device='disk'>
      <source file='/guest/diskimage1'/>
      <target dev='vda' bus='virtio'/>
      <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
    </disk>
    <interface type='network'>
      <mac address='aa:bb:cc:dd:ee:ff'/>
      <source network='default'/>
      <target dev='testnet0'/>
    </interface>
  </devices>
</domain>
"""


def embedded_domain(path: Path) -> str:
    """The <domain> element embedded in a <domaincheckpoint> file."""
    text = path.read_text()
    m = re.search(r"<domain[ >].*</domain>", text, re.S)
    assert m, path
    return m.group(0)


@pytest.fixture(scope="module")
def redefine_domain() -> str:
    path = TESTDATA / "out" / "redefine.xml"
    if not path.exists():
        pytest.skip(f"libvirt test data not found at {TESTDATA}")
    return embedded_domain(path)


def test_redefine_xml_domain(redefine_domain: str) -> None:
    d = parse_domain_xml(redefine_domain)
    assert d == DomainXml(
        name="QEMUGuest1",
        uuid="c7a5fdbd-edaf-9455-926a-d65c16db1809",
        disks=(
            DomainDisk(name="hda", format="raw", source="/dev/HostVG/QEMUGuest1"),
            DomainDisk(name="hdc", format="raw", readonly=True, source="/dev/HostVG/QEMUGuest2"),
            DomainDisk(name="vda", format="qcow2", source="/tmp/data.img"),
            DomainDisk(name="vdb", format="qcow2", source="/tmp/logs.img"),
        ),
    )
    assert [x.name for x in d.disks] == ["hda", "hdc", "vda", "vdb"]  # domain order
    assert d.disk("vdb") is not None and d.disk("vdb").source == "/tmp/logs.img"  # type: ignore[union-attr]
    assert d.disk("vdz") is None


def test_test_driver_default_domain_disk_defaults_to_raw() -> None:
    d = parse_domain_xml(TEST_DEFAULT_DOMAIN)
    assert d.name == "test"
    assert d.uuid == "6695eb01-f6a4-8304-79aa-97f2502e193f"
    # no <driver>: libvirt's qemu driver fills in type='raw' for such a disk
    assert d.disks == (DomainDisk(name="vda", format="raw", source="/guest/diskimage1"),)


def test_empty_cdrom_and_sources() -> None:
    xml = """<domain type='kvm'><name>d</name><devices>
      <disk type='file' device='cdrom'><driver name='qemu' type='raw'/>
        <target dev='hdc' bus='ide'/><readonly/></disk>
      <disk type='file' device='cdrom'><target dev='hdd' bus='ide'/></disk>
      <disk type='block' device='disk'><driver name='qemu' type='qcow2'/>
        <source dev='/dev/vg/lv'/><target dev='sda' bus='scsi'/></disk>
      <disk type='network' device='disk'><driver name='qemu' type='raw'/>
        <source protocol='rbd' name='pool/img'><host name='h'/></source>
        <target dev='vdb' bus='virtio'/></disk>
      <disk type='volume' device='disk'><source pool='p' volume='v'/>
        <target dev='vdc' bus='virtio'/></disk>
    </devices></domain>"""
    d = parse_domain_xml(xml)
    assert d.uuid is None
    by = {x.name: x for x in d.disks}
    assert by["hdc"].empty and by["hdc"].readonly and by["hdc"].source is None
    assert by["hdd"].empty and by["hdd"].readonly  # every cdrom is read-only in libvirt
    assert by["sda"] == DomainDisk(name="sda", format="qcow2", source="/dev/vg/lv")
    assert by["vdb"].source == "pool/img" and not by["vdb"].empty
    assert by["vdc"].source is None and not by["vdc"].empty


def test_domain_without_disks() -> None:
    assert parse_domain_xml("<domain><name>x</name></domain>").disks == ()


@pytest.mark.parametrize(
    "text",
    [
        "<domain><name>x</name>",  # malformed
        "<domaincheckpoint><name>x</name></domaincheckpoint>",  # wrong root
        "<domain><uuid>u</uuid></domain>",  # no name
        "<domain><name>x</name><devices><disk><source file='/a'/></disk></devices></domain>",
        '<!DOCTYPE d [<!ENTITY e "boom">]><domain><name>&e;</name></domain>',
        '<!doctype domain SYSTEM "file:///etc/passwd"><domain><name>x</name></domain>',
        "",
    ],
)
def test_bad_xml_is_one_line_xml_error(text: str) -> None:
    with pytest.raises(LedgerError) as ei:
        parse_domain_xml(text)
    assert ei.value.code == "XML_ERROR"
    assert "\n" not in str(ei.value)


def test_size_cap() -> None:
    pad = "<!--" + "x" * MAX_XML_BYTES + "-->"
    with pytest.raises(LedgerError) as ei:
        parse_domain_xml(f"<domain><name>x</name>{pad}</domain>")
    assert ei.value.code == "XML_ERROR" and "larger than" in str(ei.value)
