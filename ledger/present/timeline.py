"""A picture of one domain's checkpoints and bitmaps over time, as SVG (``ckpt-ledger timeline``).

The x axis is the domain's events in order (one column per event, so events close in time stay
readable; each column's recorded time is in the tooltips). One lane per disk; in it, one bar per
bitmap from its checkpoint's creation to its removal (or the last event), shaded active or
disabled over time. Checkpoints are labelled vertical lines joined to their parents by arcs
at the top; merges are arrows between bars; deletions are red markers.

Everything is pure string building from :class:`~ledger.app.views.EventView` rows: the bitmaps are
folded through a fresh :class:`~ledger.domain.state.DomainState`, exactly as the ledger does.
Every element a reader (or a test) looks for has a class and ``data-`` attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from ledger.app.views import EventView
from ledger.domain.events import (
    BackupEnded,
    BackupStarted,
    BitmapMerged,
    CheckpointCreated,
    CheckpointDeleted,
    CheckpointGone,
    CheckpointObserved,
    CheckpointRedefined,
)
from ledger.domain.state import DomainState
from ledger.log.files import cannot_write, replacing

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f"]
LEFT, RIGHT, TOP, ROW, BAR, PAD = 110, 60, 132, 24, 14, 8
HALO = 'stroke="#fff" stroke-width="3" paint-order="stroke"'  # legible over lines
XFn = Callable[[float], float]  # event column -> x
FONT = "DejaVu Sans, Liberation Sans, Arial, sans-serif"


@dataclass
class Bar:
    """One bitmap's life on one disk: segments of (start column, end column, active)."""

    disk: str
    bitmap: str
    checkpoint: str
    start: int
    end: int | None = None  # column of the event that removed it
    segments: list[list[object]] = field(default_factory=list)
    row: int = 0


@dataclass
class Line:
    """A checkpoint: created (or redefined) at column ``col``."""

    name: str
    col: int
    parent: str | None
    deleted_at: int | None = None


@dataclass
class Model:
    """What the picture shows, in event columns."""

    events: Sequence[EventView]
    disks: list[str] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    links: list[tuple[int, int, str, int]] = field(default_factory=list)  # parent, child, kind, col
    merges: list[tuple[int, str, str, str]] = field(default_factory=list)  # col, disk, from, into
    deletions: list[tuple[int, EventView]] = field(default_factory=list)
    backups: list[tuple[int, BackupStarted, BackupEnded | None]] = field(
        default_factory=list)  # column, the job's start, its end (None: running)
    policy: str = ""


def build(events: Sequence[EventView]) -> Model:
    """Fold ``events`` (one domain's, in order) into bars, checkpoint lines, links and marks."""
    m = Model(events)
    state = DomainState(stream_id=events[0].stream_id if events else "")
    open_bars: dict[tuple[str, str], tuple[Bar, int]] = {}
    for col, ev in enumerate(events):
        e = ev.event
        new_line = (isinstance(e, CheckpointCreated | CheckpointRedefined | CheckpointObserved)
                    and not (isinstance(e, CheckpointRedefined) and e.update)
                    and e.name not in state.checkpoints)
        if isinstance(e, CheckpointDeleted | CheckpointGone):
            gone = e.deleted if isinstance(e, CheckpointDeleted) else (e.name,)
            for name in gone:
                for ln in m.lines:
                    if ln.name == name and ln.deleted_at is None:
                        ln.deleted_at = col
            for child, parent in e.reparented.items():
                _link(m, parent, child, "reparented", col)
            m.deletions.append((col, ev))
        elif isinstance(e, BitmapMerged):
            m.merges.append((col, e.disk, e.bitmap, e.into))
        elif isinstance(e, BackupStarted):
            m.backups.append((col, e, None))
        elif isinstance(e, BackupEnded):
            for i, (_col, start, end) in enumerate(m.backups):
                if start.job == e.job and end is None:
                    m.backups[i] = (col, start, e)
        state.apply(e, ev.stream_version, ev.position)
        m.policy = state.policy
        for disk in (d.name for d in state.disks):
            if disk not in m.disks:
                m.disks.append(disk)
        if new_line:
            assert isinstance(e, CheckpointCreated | CheckpointRedefined | CheckpointObserved)
            m.lines.append(Line(e.name, col, e.parent))
            _link(m, e.parent, e.name, "parent", col)
        seen = set()
        for disk, bms in state.bitmaps.items():
            if disk not in m.disks:
                m.disks.append(disk)
            for bm in bms.values():
                key = (disk, bm.name)
                seen.add(key)
                bar, ident = open_bars.get(key, (None, 0))
                if bar is None or ident != id(bm):
                    if bar is not None:
                        _close(bar, col)
                    bar = Bar(disk, bm.name, bm.checkpoint, col, segments=[[col, None, bm.active]])
                    m.bars.append(bar)
                    open_bars[key] = (bar, id(bm))
                elif bar.segments[-1][2] != bm.active:
                    bar.segments[-1][1] = col
                    bar.segments.append([col, None, bm.active])
        for key in [k for k in open_bars if k not in seen]:
            _close(open_bars.pop(key)[0], col)
    return m


def _close(bar: Bar, col: int) -> None:
    bar.end = col
    bar.segments[-1][1] = col


def _link(m: Model, parent: str | None, child: str, kind: str, col: int) -> None:
    lines = {ln.name: i for i, ln in enumerate(m.lines) if ln.deleted_at is None or ln.col == col}
    if parent is not None and parent in lines and child in lines:
        m.links.append((lines[parent], lines[child], kind, col))


def _pack(m: Model, last: int) -> dict[str, int]:
    """Give each bar a row in its lane (first fit); return the rows per disk."""
    rows: dict[str, list[int]] = {d: [] for d in m.disks}
    for bar in m.bars:
        ends = rows.setdefault(bar.disk, [])
        end = last if bar.end is None else bar.end
        for r, used in enumerate(ends):
            if used < bar.start:
                bar.row, ends[r] = r, end
                break
        else:
            bar.row = len(ends)
            ends.append(end)
    return {d: max(1, len(r)) for d, r in rows.items()}


def _a(**attrs: object) -> str:
    return " ".join(f'{k.rstrip("_").replace("_", "-")}="{escape(str(v))}"'
                    for k, v in attrs.items() if v is not None)


def _subtitle(m: Model, events: Sequence[EventView]) -> str:
    if not events:
        return "no events"
    first, last = events[0], events[-1]
    return (f"{m.policy} policy, {len(events)} events: #{first.position} {first.recorded_at} "
            f"\u2192 #{last.position} {last.recorded_at}; x axis = event order")


def _tip(ev: EventView) -> str:
    why = f" ({ev.reason})" if ev.reason else ""
    return f"#{ev.position} {ev.type} at {ev.recorded_at} by {ev.actor} on {ev.host}{why}"


def render_svg(events: Sequence[EventView], domain: str) -> str:
    """The timeline of ``domain`` (its events, oldest first) as a standalone SVG document."""
    m = build(events)
    n = max(1, len(events))
    step = max(22.0, min(64.0, 1000.0 / n))
    rows = _pack(m, n)
    colors = {ln.name: PALETTE[i % len(PALETTE)] for i, ln in enumerate(m.lines)}

    def x(col: float) -> float:
        return round(LEFT + (col + 0.5) * step, 1)

    lane_y: dict[str, float] = {}
    y = float(TOP)
    for disk in m.disks:
        lane_y[disk] = y
        y += rows[disk] * ROW + 2 * PAD
    bottom = y
    width = max(x(n) + RIGHT, LEFT + 1080.0)  # the legend fits
    height = bottom + 92
    bar_y = {id(b): lane_y[b.disk] + PAD + b.row * ROW + (ROW - BAR) / 2 for b in m.bars}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" {_a(width=width, height=height)} '
           f'{_a(viewBox=f"0 0 {width} {height}", font_family=FONT, font_size=11)} '
           f'class="ckpt-timeline" {_a(data_domain=domain, data_events=len(events))}>',
           '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
           'patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="6" stroke="#555" '
           'stroke-width="1.5"/></pattern><marker id="arrow" viewBox="0 0 10 10" refX="9" '
           'refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
           '<path d="M0,0 L10,5 L0,10 z" fill="#222"/></marker></defs>',
           f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
           f'<text x="12" y="22" font-size="15" font-weight="bold">Checkpoint timeline of '
           f'{escape(domain)}</text>',
           f'<text x="12" y="40" fill="#444">{escape(_subtitle(m, events))}</text>']
    for i, disk in enumerate(m.disks):  # lanes
        h = rows[disk] * ROW + 2 * PAD
        out.append(f'<g class="lane" {_a(data_disk=disk, data_rows=rows[disk])}>'
                   f'<rect {_a(x=8, y=lane_y[disk], width=width - 16, height=h)} '
                   f'fill="{"#f4f6fa" if i % 2 == 0 else "#e9edf4"}"/>'
                   f'<text {_a(x=16, y=lane_y[disk] + h / 2 + 5)} font-size="14" '
                   f'font-weight="bold">{escape(disk)}</text></g>')
    for col, ev in enumerate(events):  # axis ticks, one per event
        tx = x(col)
        label = str(ev.position) if step >= 30 or col % 5 == 0 else ""
        out.append(f'<g class="tick" {_a(data_position=ev.position)}><title>{escape(_tip(ev))}'
                   f'</title><line {_a(x1=tx, y1=bottom + 2, x2=tx, y2=bottom + 8)} '
                   f'stroke="#444"/><text {_a(x=tx, y=bottom + 20)} text-anchor="middle" '
                   f'fill="#444">{label}</text></g>')
    out.append(f'<text {_a(x=LEFT - 8, y=bottom + 20)} text-anchor="end" fill="#444">event #'
               f'</text><text {_a(x=x(n - 1) + step / 2 + 4, y=bottom + 20)} fill="#444">now'
               '</text>')
    out += _checkpoints(m, events, x, colors, bottom)
    for bar in m.bars:
        out.append(_bar(bar, events, x, step, bar_y[id(bar)], colors.get(bar.checkpoint, "#888")))
    for col, disk, src, into in m.merges:
        out.append(_merge(m, col, disk, src, into, x, step, bar_y, events[col]))
    for col, ev in m.deletions:
        out.append(_deletion(col, ev, x, bottom))
    for col, start, end in m.backups:
        out.append(_backup(col, start, end, x, lane_y, rows, m.disks))
    out.append(_legend(bottom + 38))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _checkpoints(m: Model, events: Sequence[EventView], x: XFn, colors: dict[str, str],
                 bottom: float) -> list[str]:
    out: list[str] = []
    base = TOP - 30  # arcs stand on this line; labels hang below it
    for pi, ci, kind, col in m.links:
        p, c, pos = m.lines[pi], m.lines[ci], events[col].position
        x1, x2 = x(p.col), x(c.col)
        rise = min(48.0, 14 + abs(x2 - x1) / 6) + (10 if kind == "reparented" else 0)
        dash = ' stroke-dasharray="5 3"' if kind == "reparented" else ""
        out.append(f'<path class="parent-link {kind}" {_a(data_parent=p.name, data_child=c.name)} '
                   f'd="M{x1},{base} C{x1},{base - rise} {x2},{base - rise} {x2},{base}" '
                   f'fill="none" stroke="#333" stroke-width="1.3"{dash} marker-end="url(#arrow)">'
                   f'<title>{escape(f"{c.name} child of {p.name} ({kind}, #{pos})")}</title>'
                   '</path>')
    for ln in m.lines:
        ev, lx, color = events[ln.col], x(ln.col), colors[ln.name]
        dash = ' stroke-dasharray="6 4"' if ln.deleted_at is not None else ""
        tip = f"checkpoint {ln.name} (parent {ln.parent or '-'}): {_tip(ev)}"
        out.append(f'<g class="checkpoint" {_a(data_name=ln.name, data_parent=ln.parent or "")} '
                   f'{_a(data_position=ev.position)}><title>{escape(tip)}</title>'
                   f'<line {_a(x1=lx, y1=TOP - 30, x2=lx, y2=bottom)} stroke="{color}" '
                   f'stroke-width="2"{dash}/><circle {_a(cx=lx, cy=TOP - 30, r=4)} '
                   f'fill="{color}"/><text {_a(x=lx, y=TOP - 12)} text-anchor="middle" '
                   f'font-weight="bold" fill="{color}" {HALO}>{escape(ln.name)}</text></g>')
    return out


def _bar(bar: Bar, events: Sequence[EventView], x: XFn, step: float, y: float,
         color: str) -> str:
    last = len(events) - 1
    state = "active" if bar.segments[-1][2] else "disabled"
    end_col = bar.end
    removed = end_col is not None
    parts = [f'<g class="bar {state}" {_a(data_disk=bar.disk, data_bitmap=bar.bitmap)} '
             f'{_a(data_checkpoint=bar.checkpoint, data_from=events[bar.start].position)} '
             f'{_a(data_to=events[end_col].position if end_col is not None else "now")} '
             f'{_a(data_removed="yes" if removed else "no")}>']
    for start, end, active in bar.segments:
        assert isinstance(start, int)
        x1 = x(start)
        x2 = x(end) if isinstance(end, int) else x(last) + step / 2
        kind = "active" if active else "disabled"
        tip = (f"{bar.disk}/{bar.bitmap} {kind} from #{events[start].position} "
               f"({events[start].recorded_at})"
               + (f" to #{events[end].position} ({events[end].recorded_at})"
                  if isinstance(end, int) else " to now"))
        geo = _a(x=x1, y=y, width=max(1.0, round(x2 - x1, 1)), height=BAR)
        if active:
            body = f'<rect {geo} fill="{color}" stroke="{color}"/>'
        else:
            body = (f'<rect {geo} fill="{color}" fill-opacity="0.22" stroke="{color}"/>'
                    f'<rect {geo} fill="url(#hatch)" opacity="0.45"/>')
        parts.append(f'<g class="segment {kind}" {_a(data_from=events[start].position)}>'
                     f'<title>{escape(tip)}</title>{body}</g>')
    if end_col is not None:
        ex = x(end_col)
        parts.append(f'<path class="removal" d="M{ex - 4},{y - 2} L{ex + 4},{y + BAR + 2} '
                     f'M{ex + 4},{y - 2} L{ex - 4},{y + BAR + 2}" stroke="#c00000" '
                     f'stroke-width="2.2"/>')
    parts.append(f'<text {_a(x=x(bar.start) + 4, y=y + BAR - 3)} font-size="10" fill="#111" '
                 f'{HALO}>'
                 f'{escape(bar.disk)}.{escape(bar.bitmap)}</text></g>')
    return "".join(parts)


def _merge(m: Model, col: int, disk: str, src: str, into: str, x: XFn, step: float,
           bar_y: dict[int, float], ev: EventView) -> str:

    def find(name: str) -> float | None:
        for b in m.bars:
            if b.disk == disk and b.bitmap == name and b.start <= col and (
                    b.end is None or b.end >= col):
                return bar_y[id(b)]
        return None

    y1, y2 = find(src), find(into)
    attrs = _a(data_disk=disk, data_bitmap=src, data_into=into, data_position=ev.position)
    tip = escape(f"{disk}: bitmap {src} merged into {into}; {_tip(ev)}")
    if y1 is None or y2 is None:
        return f'<g class="merge" {attrs}><title>{tip}</title></g>'
    x1 = x(col)
    ys, ye = y1 + BAR / 2, (y2 + BAR + 1 if y2 < y1 else y2 - 1)
    d = f"M{x1},{ys} C{x1 + step * 0.5},{ys} {x1 + step * 0.5},{ye} {x1 + step * 0.5},{ye}"
    return (f'<g class="merge" {attrs}><title>{tip}</title>'
            f'<path d="{d}" fill="none" stroke="#fff" stroke-width="5"/>'
            f'<circle {_a(cx=x1, cy=ys, r=3.5)} fill="#111"/>'
            f'<path d="{d}" fill="none" stroke="#111" stroke-width="2" '
            'marker-end="url(#arrow)"/></g>')


def _deletion(col: int, ev: EventView, x: XFn, bottom: float) -> str:
    e, dx = ev.event, x(col)
    if isinstance(e, CheckpointGone):
        deleted: tuple[str, ...] = (e.name,)
        tip = f"{e.name} gone ({e.why}: {e.detail}): {_tip(ev)}"
    else:
        assert isinstance(e, CheckpointDeleted)
        deleted = e.deleted
        flags = [f for f, on in (("children", e.children), ("children_only", e.children_only),
                                 ("metadata_only", e.metadata_only)) if on]
        tip = (f"delete {e.name} (removed {', '.join(e.deleted) or 'nothing'}"
               + (f"; {', '.join(flags)}" if flags else "") + f"): {_tip(ev)}")
    return (f'<g class="deletion" {_a(data_name=e.name, data_position=ev.position)} '
            f'{_a(data_deleted=",".join(deleted))}><title>{escape(tip)}</title>'
            f'<line {_a(x1=dx, y1=TOP - 4, x2=dx, y2=bottom)} stroke="#c00000" '
            f'stroke-width="1.5" stroke-dasharray="3 3"/><text {_a(x=dx, y=TOP - 2)} '
            f'text-anchor="middle" fill="#c00000" font-weight="bold" {HALO}>'
            f'\u2715 {escape(e.name)}</text></g>')


BACKUP_COLORS = {"full": "#2ca02c", "incremental": "#17becf", "failed": "#c00000",
                 "running": "#999999"}


def _backup(col: int, start: BackupStarted, end: BackupEnded | None, x: XFn,
            lane_y: dict[str, float], rows: dict[str, int], disks: list[str]) -> str:
    """A backup job: a triangle on each disk lane it covered (every lane when not known),
    green for a full, teal for an incremental, red when it failed or was aborted."""
    since = sorted({d.incremental for d in start.disks if d.incremental})
    kind = "incremental" if since else "full"
    outcome = end.outcome if end else "running"
    color = BACKUP_COLORS["failed" if outcome in ("failed", "aborted") else
                          "running" if outcome == "running" else kind]
    covered = [d.name for d in start.disks if d.name in lane_y] or disks
    tip = (f"backup job {start.job}: {kind}"
           + (f" since {', '.join(since)}" if since else "")
           + (f", created {start.checkpoint}" if start.checkpoint else "")
           + f"; {outcome}" + (f" ({end.error})" if end and end.error else ""))
    cx = x(col)
    marks = []
    for disk in covered:
        top = lane_y[disk] + 2
        marks.append(f'<path d="M{cx - 6},{top} L{cx + 6},{top} L{cx},{top + 10} z" '
                     f'fill="{color}" stroke="#222" stroke-width="0.6"/>')
    return (f'<g class="backup" {_a(data_job=start.job, data_outcome=outcome)} '
            f'{_a(data_kind=kind)}><title>{escape(tip)}</title>{"".join(marks)}</g>')


def _legend(y: float) -> str:
    return (f'<g class="legend" transform="translate({LEFT},{y})">'
            '<rect width="28" height="12" fill="#1f77b4"/><text x="34" y="10">active bitmap'
            '</text><rect x="140" width="28" height="12" fill="#1f77b4" fill-opacity="0.22" '
            'stroke="#1f77b4"/><rect x="140" width="28" height="12" fill="url(#hatch)" '
            'opacity="0.45"/><text x="174" y="10">disabled bitmap</text>'
            '<path d="M300,6 L330,6" stroke="#222" stroke-width="1.8" '
            'marker-end="url(#arrow)"/><text x="336" y="10">merged into</text>'
            '<text x="440" y="11" fill="#c00000" font-weight="bold">\u2715</text>'
            '<text x="456" y="10">deleted / removed</text>'
            '<path d="M590,12 C590,0 620,0 620,12" fill="none" stroke="#333" '
            'marker-end="url(#arrow)"/><text x="628" y="10">parent \u2192 child '
            '(dashed: reparented)</text></g>')


def render_html(svg: str, title: str) -> str:
    """A minimal HTML page embedding ``svg``."""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{escape(title)}</title>\n<style>body{{margin:16px;background:#fff;"
            f"font-family:{FONT}}}</style>\n</head>\n<body>\n{svg}</body>\n</html>\n")


def write(out: Path, text: str) -> None:
    """Write a page to ``out`` atomically (a reader never sees half of it); a file that
    cannot be written is one LedgerError naming it."""
    try:
        with replacing(out, "w") as f:
            f.write(text)
    except OSError as err:
        raise cannot_write(out, err) from None
