"""`timeline DOMAIN --out FILE.svg|.html`: lanes, bars, segments, checkpoints, merges and
deletions in the SVG, the file written atomically, and the page really drawn by Chromium."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from helpers import DISKS3, Host, assert_one_error_line, diskspecs

from ledger.app.views import EventView
from ledger.domain.events import CheckpointCreated, DomainEnrolled
from ledger.domain.model import CheckpointDisk, DomainDisk
from ledger.log.records import Provenance
from ledger.present.timeline import render_html, render_svg

NS = "{http://www.w3.org/2000/svg}"
DISKS = ("vda", "vdb", "vdc")
SEED = [("chk1.1", ["vda", "vdb"]), ("chk2.1", ["vdb", "vdc"]),
        ("chk1.2", ["vda", "vdb"]), ("chk2.2", ["vdb", "vdc"])]
PALETTE = [(0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E), (0x2C, 0xA0, 0x2C), (0xD6, 0x27, 0x28)]


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def seed(h: Host, policy: str) -> None:
    h.ok("mock", "define", "vm", *DISKS3, "--policy", policy)
    for name, covered in SEED:
        h.ok("create", "vm", name, *diskspecs(covered, DISKS))


def draw(h: Host, name: str = "t.svg") -> ET.Element:
    out = h.folder / name
    run = h.ok("timeline", "vm", "--out", str(out))
    assert str(out) in run.stdout
    return ET.parse(out).getroot()


def by_class(root: ET.Element, cls: str) -> list[ET.Element]:
    return [e for e in root.iter() if cls in (e.get("class") or "").split()]


def bars(root: ET.Element) -> dict[str, list[ET.Element]]:
    out: dict[str, list[ET.Element]] = {}
    for b in by_class(root, "bar"):
        out.setdefault(b.get("data-disk", ""), []).append(b)
    return out


def segments(bar: ET.Element) -> list[str]:
    return [("active" if "active" in s.get("class", "").split() else "disabled")
            for s in bar if "segment" in (s.get("class") or "").split()]


def bar(root: ET.Element, disk: str, bitmap: str) -> ET.Element:
    [b] = [b for b in bars(root)[disk] if b.get("data-bitmap") == bitmap]
    return b


def test_seed_chained_lanes_bars_segments_checkpoints(host: Host) -> None:
    seed(host, "chained")
    root = draw(host)
    assert root.tag == NS + "svg"
    assert [lane.get("data-disk") for lane in by_class(root, "lane")] == ["vda", "vdb", "vdc"]
    per_disk = bars(root)
    assert {d: len(b) for d, b in per_disk.items()} == {"vda": 2, "vdb": 4, "vdc": 2}
    assert [b.get("data-bitmap") for b in per_disk["vdb"]] == ["chk1.1", "chk2.1", "chk1.2",
                                                               "chk2.2"]
    assert all(b.get("data-checkpoint") == b.get("data-bitmap") for b in by_class(root, "bar"))
    # chained: every older bitmap on a disk was disabled when a newer checkpoint took it over
    assert segments(bar(root, "vdb", "chk1.1")) == ["active", "disabled"]
    assert segments(bar(root, "vda", "chk1.1")) == ["active", "disabled"]
    assert segments(bar(root, "vdc", "chk2.1")) == ["active", "disabled"]
    assert segments(bar(root, "vdb", "chk2.2")) == ["active"]
    assert "disabled" in bar(root, "vdb", "chk1.2").get("class", "").split()
    assert "active" in bar(root, "vda", "chk1.2").get("class", "").split()
    lines = by_class(root, "checkpoint")
    assert [c.get("data-name") for c in lines] == ["chk1.1", "chk2.1", "chk1.2", "chk2.2"]
    links = {(p.get("data-parent"), p.get("data-child")) for p in by_class(root, "parent-link")}
    assert links == {("chk1.1", "chk2.1"), ("chk2.1", "chk1.2"), ("chk1.2", "chk2.2")}
    assert by_class(root, "merge") == [] and by_class(root, "deletion") == []
    # every event has a tick whose tooltip carries its recorded time
    ticks = by_class(root, "tick")
    assert [int(t.get("data-position", 0)) for t in ticks] == list(range(1, 11))
    assert all("T" in (t.findtext(NS + "title") or "") for t in ticks)


def test_seed_chained_after_delete_marks_merge_and_deletion(host: Host) -> None:
    seed(host, "chained")
    host.ok("delete", "vm", "chk2.1")
    root = draw(host)
    assert {d: len(b) for d, b in bars(root).items()} == {"vda": 2, "vdb": 4, "vdc": 2}
    [merge] = by_class(root, "merge")
    assert (merge.get("data-disk"), merge.get("data-bitmap"), merge.get("data-into")) == (
        "vdb", "chk2.1", "chk1.1")
    [deletion] = by_class(root, "deletion")
    assert deletion.get("data-name") == "chk2.1" and deletion.get("data-deleted") == "chk2.1"
    removed = {(b.get("data-disk"), b.get("data-bitmap")) for b in by_class(root, "bar")
               if b.get("data-removed") == "yes"}
    assert removed == {("vdb", "chk2.1"), ("vdc", "chk2.1")}
    assert len(by_class(root, "removal")) == 2
    assert len(by_class(root, "checkpoint")) == 4  # a deleted checkpoint keeps its line
    reparented = [(p.get("data-parent"), p.get("data-child"))
                  for p in by_class(root, "reparented")]
    assert reparented == [("chk1.1", "chk1.2")]


def test_seed_independent_is_all_active(host: Host) -> None:
    seed(host, "independent")
    host.ok("delete", "vm", "chk2.1")
    root = draw(host)
    assert {d: len(b) for d, b in bars(root).items()} == {"vda": 2, "vdb": 4, "vdc": 2}
    assert all(segments(b) == ["active"] for b in by_class(root, "bar"))
    assert by_class(root, "merge") == []  # independent deletes merge nothing
    assert len(by_class(root, "deletion")) == 1


def test_disable_then_enable_shows_three_segments(host: Host) -> None:
    host.ok("mock", "define", "vm", "--disk", "vda", "--policy", "chained")
    host.ok("create", "vm", "a")
    host.ok("create", "vm", "b")
    host.ok("delete", "vm", "b")  # a's bitmap recording again
    root = draw(host)
    assert segments(bar(root, "vda", "a")) == ["active", "disabled", "active"]
    assert "active" in bar(root, "vda", "a").get("class", "").split()


def test_text_is_escaped() -> None:
    prov = Provenance(actor='<eve & "mallory">', host="h<1>")
    evil = 'x<y>&"z'
    disks = (CheckpointDisk(name="vda"),)
    evs = [DomainEnrolled(name=evil, uuid="u", disks=(DomainDisk(name="vda"),),
                          policy="chained"),
           CheckpointCreated(name="c<1>&", parent=None, creation_time=1, disks=disks, xml="<x/>")]
    views = [EventView(position=i + 1, stream_version=i + 1, domain=evil, stream_id="u",
                       type=ev.type, recorded_at="2026-11-29T18:00:00Z", actor=prov.actor,
                       host=prov.host, reason="</title><script>",
                       data={k: v for k, v in ev.model_dump(mode="json").items() if k != "type"})
             for i, ev in enumerate(evs)]
    svg = render_svg(views, evil)
    root = ET.fromstring(svg)  # well-formed despite the names
    assert root.get("data-domain") == evil
    assert [c.get("data-name") for c in by_class(root, "checkpoint")] == ["c<1>&"]
    assert "<script>" not in svg
    html = render_html(svg, f"timeline {evil}")
    assert "<title>timeline x&lt;y&gt;&amp;&quot;z</title>" in html and svg in html


def test_cli_errors_write_nothing(host: Host) -> None:
    seed(host, "chained")
    folder = host.folder
    before = sorted(p.name for p in folder.iterdir())
    assert_one_error_line(host.cli("timeline", "ghost", "--out", str(folder / "g.svg")),
                          "NO_DOMAIN")
    assert_one_error_line(host.cli("timeline", "vm", "--out", str(folder / "no" / "t.svg")),
                          "INVALID_ARG")
    assert_one_error_line(host.cli("timeline", "vm", "--out", str(folder / "t.png")),
                          "INVALID_ARG")
    assert_one_error_line(host.cli("timeline", "vm", "--out", str(folder)), "INVALID_ARG")
    assert sorted(p.name for p in folder.iterdir()) == before
    # an existing file is replaced whole, with no temporary file left behind
    target = folder / "t.html"
    target.write_text("old")
    host.ok("timeline", "vm", "--out", str(target))
    text = target.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<svg" in text and text.endswith("</html>\n")
    svg = text[text.index("<svg"):text.index("</svg>") + 6]
    assert len(by_class(ET.fromstring(svg), "bar")) == 8
    assert sorted(p.name for p in folder.iterdir()) == sorted([*before, "t.html"])


# ------------------------------------------------------------------ the picture
def read_png(path: Path) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Width, height and RGB pixels of an 8-bit, non-interlaced RGB or RGBA PNG (stdlib only)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat += chunk
    width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and ctype in (2, 6) and interlace == 0, (depth, ctype, interlace)
    bpp = 3 if ctype == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    prev = bytearray(stride)
    pixels: list[tuple[int, int, int]] = []
    for y in range(height):
        start = y * (stride + 1)
        ftype, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        pixels.extend(tuple(line[i:i + 3]) for i in range(0, stride, bpp))  # type: ignore[misc]
        prev = line
    return width, height, pixels


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def test_html_renders_in_headless_chromium(host: Host, tmp_path: Path) -> None:
    """The .html page, screenshotted by headless Chromium, shows the figure: lanes, the four
    checkpoints' colours as solid bars, the red deletion marks."""
    browser = chromium()
    if browser is None:
        reason = "chromium is not installed (Debian: apt-get install --no-install-recommends " \
                 "chromium)"
        if os.environ.get("CKPT_LEDGER_REQUIRE_REAL", "") == "1":
            pytest.fail(f"CKPT_LEDGER_REQUIRE_REAL=1 forbids skipping: {reason}")
        pytest.skip(reason)
    seed(host, "chained")
    host.ok("delete", "vm", "chk2.1")
    page = host.folder / "timeline.html"
    host.ok("timeline", "vm", "--out", str(page))
    png = tmp_path / "shot.png"
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}",
         "--window-size=1400,900", page.as_uri()],
        capture_output=True, timeout=180,
    )
    assert png.exists(), proc.stderr.decode(errors="replace")[-2000:]
    width, height, pixels = read_png(png)
    assert (width, height) == (1400, 900)
    counts = Counter(pixels)
    non_white = sum(n for px, n in counts.items() if px != (255, 255, 255))
    assert non_white > 0.05 * len(pixels), f"only {non_white} non-white pixels"
    assert len([px for px, n in counts.items() if n >= 20]) >= 12, "too few distinct colours"
    for colour in PALETTE:  # each checkpoint's active bars, solid
        assert counts[colour] >= 150, f"colour {colour} hardly drawn: {counts[colour]}"
    reds = sum(n for (r, g, b), n in counts.items() if r > 150 and g < 60 and b < 60)
    assert reds >= 40  # the deletion marks
