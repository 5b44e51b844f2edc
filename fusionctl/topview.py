"""What `fusionctl top` shows, as pure functions: a `Snapshot` of the rack is built from what the
controller answered (`build_snapshot`), and drawn as lines of text (`render_frame`) or as one
JSON document (`frame_json`). No server, no terminal, no clock: `top.py` gathers the data and
draws; the tests build snapshots by hand.

Link utilization over an interval is `(delta tx + delta rx) / (capacity x seconds)`: a link's
capacity (`Link.capacity_bytes_per_second`, `fusionrack_link_capacity_bytes_per_second`) counts
both directions together, so a link carrying line rate both ways is at 100%. The counters are
the accelerator end's, as the controller's ListLinks reports them.

The heatmap has one row per accelerator and one column per plane (switch chip), the columns
grouped by switch tray. A cell is the tens digit of its utilization in percent (`0` = under
10%, `9` = 90% and more), `.` when not a byte moved, `X` down, `~` training, `D` drained and
`?` not measured (the first sample, or a counter that went back: its agent restarted).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fusionrack.v1 import common_pb2, controller_pb2, events_pb2

from .arguments import enum_word
from .output import GREEN, RED, RESET, YELLOW, Palette, Word, rate, table, to_json
from .views import event_line

__all__ = [
    "AcceleratorRow",
    "Cell",
    "PartitionLine",
    "Sample",
    "Snapshot",
    "TrayLine",
    "build_snapshot",
    "cell_glyph",
    "clip",
    "frame_json",
    "render_frame",
    "visible_width",
]

IDLE, DOWN, TRAINING, DRAINED, UNMEASURED = ".", "X", "~", "D", "?"
LEGEND = (
    "0-9 tens of % of capacity used (tx+rx)  . idle  X down  ~ training  D drained  ? not measured"
)
DIM = "\033[2m"

# When the window is short, the heatmap and the events share what is left: events keep at
# least this many lines, partitions at most this many rows.
MIN_EVENT_LINES = 3
MAX_PARTITION_ROWS = 8
# Layout width when none is given (plain output to a pipe): the tray grid needs one.
PLAIN_WIDTH = 100


@dataclass(frozen=True)
class Sample:
    """What one poll of the controller returned, and when."""

    domain: controller_pb2.GetDomainResponse
    trays: Sequence[common_pb2.TrayInfo]
    links: Sequence[common_pb2.Link]
    partitions: Sequence[common_pb2.Partition]
    taken: float  # monotonic clock, seconds: utilization divides by the difference of two
    time: datetime  # wall clock (UTC), for the header


@dataclass(frozen=True)
class Cell:
    """One link of the heatmap."""

    state: int  # common_pb2.LinkState; UNSPECIFIED when the controller did not list it
    utilization: float | None = None  # share of capacity used over the interval; None: unknown
    bytes_per_second: float | None = None  # tx + rx over the interval


@dataclass(frozen=True)
class AcceleratorRow:
    index: int
    name: str
    cells: Sequence[Cell]  # one per plane, in plane order


@dataclass(frozen=True)
class TrayLine:
    name: str
    kind: int  # common_pb2.TrayKind
    state: int  # common_pb2.ComponentState
    reachable: bool
    drained: bool


@dataclass(frozen=True)
class PartitionLine:
    id: int
    name: str
    members: int
    health: int  # common_pb2.PartitionHealth
    reason: str = ""


@dataclass(frozen=True)
class Snapshot:
    """Everything one frame shows."""

    rack: str
    time: datetime
    control_plane: int  # controller_pb2.ControlPlaneState
    reachable_trays: int
    tray_count: int
    fabric: str  # fabric generation label, e.g. "nvlink5"
    table_generation: int  # generation of the tables the controller last committed
    interval: float | None  # seconds the utilization covers; None: one sample, none measured
    trays: Sequence[TrayLine]
    plane_trays: Sequence[str]  # switch tray of each plane: the heatmap's column groups
    accelerators: Sequence[AcceleratorRow]
    partitions: Sequence[PartitionLine]
    events: Sequence[events_pb2.Event] = ()  # the latest last
    events_seen: int = 0  # events received since top started (the frame shows the latest)
    problem: str = ""  # shown under the header, e.g. the controller was lost and is retried


# -- building a snapshot from the controller's answers ---------------------------------------


def _cell(
    link: common_pb2.Link | None,
    before: common_pb2.Link | None,
    seconds: float | None,
    capacity: int,
) -> Cell:
    if link is None:
        return Cell(common_pb2.LINK_STATE_UNSPECIFIED)
    if before is None or not seconds or seconds <= 0:
        return Cell(link.state)
    tx = link.counters.tx_bytes - before.counters.tx_bytes
    rx = link.counters.rx_bytes - before.counters.rx_bytes
    capacity = link.capacity_bytes_per_second or capacity
    if tx < 0 or rx < 0 or not capacity:
        # A counter that went back belongs to an agent that restarted (or that the controller
        # could not reach, listed without counters): this interval cannot be measured.
        return Cell(link.state)
    moved = (tx + rx) / seconds
    return Cell(link.state, moved / capacity, moved)


def build_snapshot(
    now: Sample,
    before: Sample | None = None,
    events: Sequence[events_pb2.Event] = (),
    *,
    events_seen: int | None = None,
    problem: str = "",
) -> Snapshot:
    """The frame for `now`, with utilization measured since `before` (none without it)."""
    properties, state = now.domain.properties, now.domain.state
    planes = properties.links_per_accelerator
    plane_trays = [""] * planes
    for tray in now.trays:
        for chip in tray.switch_chips:
            if chip.index < planes:
                plane_trays[chip.index] = tray.name
    by_end = {(link.ref.accelerator, link.ref.link): link for link in now.links}
    earlier = {link.index: link for link in before.links} if before is not None else {}
    seconds = now.taken - before.taken if before is not None else None
    accelerators = sorted((a for t in now.trays for a in t.accelerators), key=lambda a: a.index)
    rows = []
    for accelerator in accelerators:
        cells = []
        for plane in range(planes):
            link = by_end.get((accelerator.index, plane))
            previous = earlier.get(link.index) if link is not None else None
            cells.append(_cell(link, previous, seconds, properties.link_bandwidth_bytes_per_second))
        rows.append(AcceleratorRow(accelerator.index, accelerator.name, cells))
    return Snapshot(
        rack=properties.rack,
        time=now.time,
        control_plane=state.control_plane_state,
        reachable_trays=state.reachable_tray_count,
        tray_count=state.tray_count,
        fabric=properties.fabric_generation,
        table_generation=state.fabric_generation,
        interval=seconds,
        trays=[
            TrayLine(
                t.name,
                t.kind,
                t.state,
                t.reachable,
                t.admin_state == common_pb2.ADMIN_STATE_DOWN,
            )
            for t in now.trays
        ],
        plane_trays=plane_trays,
        accelerators=rows,
        partitions=[
            PartitionLine(p.id, p.name, len(p.members), p.health, p.health_reason)
            for p in now.partitions
        ],
        events=list(events),
        events_seen=len(events) if events_seen is None else events_seen,
        problem=problem,
    )


# -- drawing -----------------------------------------------------------------------------------

_ESCAPE = re.compile(r"\033\[[0-9;?]*[A-Za-z]")


def visible_width(text: str) -> int:
    """Characters `text` takes on screen (colour codes take none)."""
    return len(_ESCAPE.sub("", text))


def clip(text: str, width: int | None) -> str:
    """`text` cut to `width` visible characters, colour codes kept whole (and a colour cut
    short reset), so a line never wraps on a terminal."""
    if width is None or visible_width(text) <= width:
        return text
    out, shown, painted = [], 0, False
    position = 0
    for match in _ESCAPE.finditer(text):
        plain = text[position : match.start()]
        take = plain[: max(0, width - shown)]
        out.append(take)
        shown += len(take)
        if shown >= width:
            break
        out.append(match.group())
        painted = match.group() != RESET
        position = match.end()
    else:
        out.append(text[position:][: max(0, width - shown)])
    return "".join(out) + (RESET if painted else "")


def cell_glyph(cell: Cell) -> str:
    """The character of one heatmap cell (see the module docstring)."""
    if cell.state == common_pb2.LINK_STATE_ADMIN_DOWN:
        return DRAINED
    if cell.state == common_pb2.LINK_STATE_DOWN:
        return DOWN
    if cell.state == common_pb2.LINK_STATE_INIT:
        return TRAINING
    if cell.state != common_pb2.LINK_STATE_ACTIVE or cell.utilization is None:
        return UNMEASURED
    if not cell.bytes_per_second:
        return IDLE
    # The tens digit: a trickle is 0 (not idle), 90% and more is 9.
    return str(min(9, int(cell.utilization * 10)))


def _paint_glyph(glyph: str) -> str:
    if glyph == IDLE:
        colour = DIM
    elif glyph == DOWN:
        colour = RED
    elif glyph in (TRAINING, DRAINED):
        colour = YELLOW
    elif glyph.isdigit():
        colour = GREEN if glyph < "4" else YELLOW if glyph < "7" else RED
    else:
        return glyph
    return f"{colour}{glyph}{RESET}"


def _tint(text: str, colour: str, enabled: bool) -> str:
    return f"{colour}{text}{RESET}" if enabled else text


def _percent(share: float) -> str:
    return f"{share * 100:.3g}%"


def _header(snap: Snapshot, paint: Palette, hint: str) -> list[str]:
    plane_state = paint(enum_word(controller_pb2.ControlPlaneState, snap.control_plane))
    trays = f"{snap.reachable_trays}/{snap.tray_count}"
    if snap.reachable_trays < snap.tray_count:
        trays = _tint(trays, RED, paint.enabled)
    # The least telling figures last: a narrow window cuts them first.
    lines = [
        f"rack {snap.rack}  {snap.time:%Y-%m-%d %H:%M:%S}Z  control plane {plane_state}  "
        f"trays {trays} reachable  fabric {snap.fabric}, tables generation "
        f"{snap.table_generation}"
    ]
    cells = [c for row in snap.accelerators for c in row.cells]
    up = sum(1 for c in cells if c.state == common_pb2.LINK_STATE_ACTIVE)
    measured = [c for c in cells if c.utilization is not None]
    links = f"links {up}/{len(cells)} active  "
    keys = f"[{hint}]  " if hint else ""
    if snap.interval is None or not measured:
        lines.append(f"{links}{keys}traffic: measuring until the next refresh")
    else:
        moved = sum(c.bytes_per_second or 0.0 for c in measured)
        busiest = max(c.utilization or 0.0 for c in measured)
        lines.append(
            f"{links}{keys}traffic {rate(moved)} (tx+rx of every link, over "
            f"{snap.interval:.1f} s), busiest link at {_percent(busiest)}"
        )
    if snap.problem:
        lines.append(_tint(f"! {snap.problem}", RED, paint.enabled))
    return lines


def _trays(snap: Snapshot, paint: Palette, width: int) -> list[str]:
    entries = []
    for t in snap.trays:
        words = [enum_word(common_pb2.ComponentState, t.state)]
        if not t.reachable:
            words.append(Word("unreachable"))
        if t.drained:
            words.append(Word("drained"))
        entries.append((t.name, words))
    if not entries:
        return ["TRAYS  none"]
    plain = [f"{name} {' '.join(words)}" for name, words in entries]
    cell = max(map(len, plain)) + 3
    per_line = max(1, (width - 2) // cell)
    lines = []
    for start in range(0, len(entries), per_line):
        chunk = []
        for (name, words), text in zip(
            entries[start : start + per_line], plain[start : start + per_line], strict=True
        ):
            chunk.append(f"{name} {' '.join(paint(w) for w in words)}" + " " * (cell - len(text)))
        lines.append(("  " + "".join(chunk)).rstrip())
    return [f"TRAYS  {snap.reachable_trays} of {snap.tray_count} reachable", *lines]


def _plane_columns(snap: Snapshot) -> list[list[int]]:
    """Planes grouped by switch tray, in plane order."""
    groups: list[list[int]] = []
    for plane, tray in enumerate(snap.plane_trays):
        if groups and snap.plane_trays[groups[-1][-1]] == tray:
            groups[-1].append(plane)
        else:
            groups.append([plane])
    return groups


@dataclass(frozen=True)
class _Heatmap:
    title: str
    heading: list[str]  # plane numbers over the cells
    rows: list[str]  # one per accelerator
    legend: str

    def block(self, rows: Sequence[str]) -> list[str]:
        return [*self.heading, *rows]


def _heatmap(snap: Snapshot, colour: bool) -> _Heatmap:
    groups = _plane_columns(snap)
    labels = [f"{r.index:>3} {r.name}" for r in snap.accelerators]
    label = max(map(len, labels), default=0)

    def columns(digit: int) -> str:
        return " ".join("".join(str(p // digit % 10) for p in g) for g in groups)

    lead = " " * (label + 2)
    heading = [f"{lead}{columns(10)}"] if len(snap.plane_trays) > 10 else []
    heading.append(f"{lead}{columns(1)}")
    over = f"over {snap.interval:.1f} s" if snap.interval else "(measuring)"
    title = f"LINKS  utilization {over}: accelerators x planes (grouped by switch tray)"
    traffic = []
    for row in snap.accelerators:
        moved = [c.bytes_per_second for c in row.cells if c.bytes_per_second is not None]
        traffic.append(rate(sum(moved)) if moved else "")
    right = max(map(len, traffic), default=0)
    rows = []
    for text, row, moved in zip(labels, snap.accelerators, traffic, strict=True):
        glyphs = [cell_glyph(c) for c in row.cells]
        shown = [_paint_glyph(g) for g in glyphs] if colour else glyphs
        cells = " ".join("".join(shown[p] for p in g) for g in groups)
        rows.append(f"{text:<{label}}  {cells}  {moved:>{right}}".rstrip())
    return _Heatmap(title, heading, rows, f"  {LEGEND}")


def _partitions(snap: Snapshot, paint: Palette, limit: int | None) -> list[str]:
    if not snap.partitions:
        return ["PARTITIONS  none"]
    shown = list(snap.partitions)
    more = 0
    if limit is not None and len(shown) > limit:
        # Keep the ones that need attention in view.
        shown.sort(key=lambda p: (p.health == common_pb2.PARTITION_HEALTH_HEALTHY, p.id))
        shown, more = sorted(shown[: limit - 1], key=lambda p: p.id), len(shown) - limit + 1
    rows = [
        (
            p.id,
            p.name,
            p.members,
            enum_word(common_pb2.PartitionHealth, p.health),
            p.reason or "-",
        )
        for p in shown
    ]
    lines = table(rows, ("ID", "NAME", "MEMBERS", "HEALTH", "REASON"), paint).splitlines()
    lines = [f"PARTITIONS  {len(snap.partitions)}", *("  " + line for line in lines)]
    if more:
        lines.append(f"  ... and {more} more healthy (fusionctl partition list)")
    return lines


def _events(snap: Snapshot, paint: Palette, room: int | None) -> list[str]:
    if not snap.events:
        return ["EVENTS  none since top started"]
    shown = list(snap.events) if room is None else list(snap.events)[-room:] if room else []
    title = f"EVENTS  the last {len(shown)} of {snap.events_seen} since top started"
    return [title, *("  " + event_line(paint, e, clock=True) for e in shown)]


def _side_by_side(blocks: Sequence[Sequence[str]], gap: int = 4) -> list[str]:
    """Blocks of lines next to each other, each padded to its widest line."""
    out = []
    for i in range(max(map(len, blocks))):
        parts = [block[i] if i < len(block) else "" for block in blocks]
        widths = [max(map(visible_width, block)) + gap for block in blocks]
        padded = [p + " " * (w - visible_width(p)) for p, w in zip(parts, widths, strict=True)]
        out.append("".join(padded).rstrip())
    return out


def render_frame(
    snap: Snapshot,
    *,
    width: int | None = None,
    height: int | None = None,
    colour: bool = False,
    events: int | None = 10,
    hint: str = "",
) -> list[str]:
    """The lines of one frame. Without `height` everything is shown (one line per accelerator,
    the last `events` events); with it the frame fits in `height` lines: the events take what
    is left (at least a few), and the heatmap is laid out in several columns side by side when
    the accelerators do not fit one under another and `width` allows (else it is cut, saying
    how many are not shown). Every line is cut to `width` visible characters. `hint` ends the
    header's second line (the live view's keys)."""
    paint = Palette(colour)
    layout_width = width or PLAIN_WIDTH
    header = _header(snap, paint, hint)
    trays = _trays(snap, paint, layout_width)
    heatmap = _heatmap(snap, colour)
    rows = heatmap.rows
    if height is None:
        links = [heatmap.title, *heatmap.block(rows), heatmap.legend]
        sections = [header, trays, links, _partitions(snap, paint, None)]
        sections.append(_events(snap, paint, events))
    else:
        partitions = _partitions(snap, paint, MAX_PARTITION_ROWS)
        blanks = 4  # between the five sections
        fixed = len(header) + len(trays) + 2 + len(heatmap.heading) + len(partitions) + blanks
        wanted_events = min(MIN_EVENT_LINES, len(snap.events))
        room = height - fixed - 1 - wanted_events  # 1: the events title
        body = heatmap.block(rows)
        if len(rows) > max(room, 1):
            count = math.ceil(len(rows) / max(room, 1))
            per = math.ceil(len(rows) / count)
            side = _side_by_side(
                [heatmap.block(rows[i : i + per]) for i in range(0, len(rows), per)]
            )
            if room > 0 and max(map(visible_width, side)) <= layout_width:
                body = side
            else:
                keep = max(room - 1, 0)
                more = f"  ... {len(rows) - keep} more accelerators (a larger window shows them)"
                body = heatmap.block([*rows[:keep], more])
        left = height - fixed - len(body) + len(heatmap.heading) - 1
        if events is not None:
            left = min(left, events)
        sections = [header, trays, [heatmap.title, *body, heatmap.legend], partitions]
        sections.append(_events(snap, paint, max(left, 0)))
    lines: list[str] = []
    for section in sections:
        if lines:
            lines.append("")
        lines.extend(section)
    if height is not None:
        lines = lines[:height]
    return [clip(line, width) for line in lines]


# -- JSON ---------------------------------------------------------------------------------------


def _matrix(snap: Snapshot, value: Any) -> list[list[Any]]:
    return [[value(c) for c in row.cells] for row in snap.accelerators]


def frame_json(snap: Snapshot) -> dict[str, Any]:
    """One frame for programs: enums by their proto names (as `-o json` elsewhere), the
    heatmap as matrices indexed [row][plane] with `accelerators` naming the rows; utilization
    is a fraction of capacity (null: not measured), bytes_per_second is tx + rx."""
    return {
        "rack": snap.rack,
        "time": snap.time.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "interval_seconds": snap.interval,
        "control_plane_state": controller_pb2.ControlPlaneState.Name(snap.control_plane),
        "reachable_tray_count": snap.reachable_trays,
        "tray_count": snap.tray_count,
        "fabric_generation": snap.fabric,
        "table_generation": snap.table_generation,
        "problem": snap.problem,
        "trays": [
            {
                "name": t.name,
                "kind": common_pb2.TrayKind.Name(t.kind),
                "state": common_pb2.ComponentState.Name(t.state),
                "reachable": t.reachable,
                "drained": t.drained,
            }
            for t in snap.trays
        ],
        "accelerators": [{"index": r.index, "name": r.name} for r in snap.accelerators],
        "plane_switch_trays": list(snap.plane_trays),
        "link_states": _matrix(snap, lambda c: common_pb2.LinkState.Name(c.state)),
        "utilization": _matrix(snap, lambda c: c.utilization),
        "bytes_per_second": _matrix(snap, lambda c: c.bytes_per_second),
        "partitions": [
            {
                "id": p.id,
                "name": p.name,
                "members": p.members,
                "health": common_pb2.PartitionHealth.Name(p.health),
                "health_reason": p.reason,
            }
            for p in snap.partitions
        ],
        "events": [to_json(e) for e in snap.events],
        "events_seen": snap.events_seen,
    }
