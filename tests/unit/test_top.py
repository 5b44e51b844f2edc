"""`fusionctl top`'s frames, drawn from hand-made snapshots (no server, no terminal): the
heatmap's digits and marks, the partitions, events cut to the width, the fit to a window, and
the utilization measured from two samples of the controller's answers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import pytest

from fusionrack.fusionctl.main import build_parser
from fusionrack.fusionctl.output import GREEN, RED, RESET
from fusionrack.fusionctl.topview import (
    AcceleratorRow,
    Cell,
    PartitionLine,
    Sample,
    Snapshot,
    TrayLine,
    build_snapshot,
    cell_glyph,
    clip,
    frame_json,
    render_frame,
    visible_width,
)
from fusionrack.v1 import common_pb2, controller_pb2, events_pb2

ACTIVE, DOWN = common_pb2.LINK_STATE_ACTIVE, common_pb2.LINK_STATE_DOWN
INIT, ADMIN_DOWN = common_pb2.LINK_STATE_INIT, common_pb2.LINK_STATE_ADMIN_DOWN
NOON = datetime(2025, 5, 1, 12, 0, 0)
GBPS = 1e9


def busy(share: float) -> Cell:
    """An active link at `share` of a 100 GB/s capacity."""
    return Cell(ACTIVE, share, share * 100 * GBPS)


IDLE = Cell(ACTIVE, 0.0, 0.0)


def event(subject: str, second: int = 1) -> events_pb2.Event:
    e = events_pb2.Event(
        kind=common_pb2.EVENT_KIND_LINK_STATE_CHANGED,
        source="controller",
        subject=subject,
        link_state_changed=events_pb2.LinkStateChanged(state=DOWN, previous=ACTIVE),
    )
    e.time.FromDatetime(NOON.replace(second=second))
    return e


def snapshot(
    rows: Sequence[Sequence[Cell]],
    *,
    events: Sequence[events_pb2.Event] = (),
    partitions: Sequence[PartitionLine] = (),
    interval: float | None = 1.0,
    planes_per_switch_tray: int = 2,
) -> Snapshot:
    planes = len(rows[0])
    names = [f"compute-{i // 2 + 1:02}/gpu{i % 2}" for i in range(len(rows))]
    return Snapshot(
        rack="mini",
        time=NOON,
        control_plane=controller_pb2.CONTROL_PLANE_STATE_READY,
        reachable_trays=3,
        tray_count=4,
        fabric="nvlink5",
        table_generation=7,
        interval=interval,
        trays=[
            TrayLine("compute-01", common_pb2.TRAY_KIND_COMPUTE, 1, True, False),
            TrayLine("switch-1", common_pb2.TRAY_KIND_SWITCH, 1, True, True),
            TrayLine("switch-2", common_pb2.TRAY_KIND_SWITCH, 1, True, False),
            TrayLine("compute-02", common_pb2.TRAY_KIND_COMPUTE, 2, False, False),
        ],
        plane_trays=[f"switch-{p // planes_per_switch_tray + 1}" for p in range(planes)],
        accelerators=[
            AcceleratorRow(i, name, cells)
            for i, (name, cells) in enumerate(zip(names, rows, strict=True))
        ],
        partitions=list(partitions),
        events=list(events),
        events_seen=len(events) + 5,
    )


def test_a_cell_is_its_tens_of_percent_or_its_link_state() -> None:
    assert [cell_glyph(busy(u)) for u in (1e-6, 0.05, 0.1, 0.45, 0.899, 0.9, 1.0, 1.7)] == list(
        "00148999"
    )
    assert cell_glyph(IDLE) == "."  # not a byte: idle, which a trickle (0) is not
    assert cell_glyph(Cell(DOWN, 0.3, 30 * GBPS)) == "X"  # down wins over a figure
    assert cell_glyph(Cell(ADMIN_DOWN, 0.0, 0.0)) == "D"
    assert cell_glyph(Cell(INIT)) == "~"
    assert cell_glyph(Cell(ACTIVE)) == "?"  # no previous sample
    assert cell_glyph(Cell(common_pb2.LINK_STATE_UNSPECIFIED)) == "?"  # not listed


def test_a_frame_shows_the_rack_its_heatmap_partitions_and_events() -> None:
    snap = snapshot(
        [
            [busy(0.45), Cell(DOWN), IDLE, busy(0.95)],
            [IDLE, IDLE, Cell(ADMIN_DOWN), busy(0.001)],
            [Cell(ACTIVE), Cell(INIT), IDLE, IDLE],
            [IDLE, IDLE, IDLE, IDLE],
        ],
        partitions=[
            PartitionLine(1, "train", 2, common_pb2.PARTITION_HEALTH_DEGRADED_BANDWIDTH, "1 down"),
            PartitionLine(32766, "default", 2, common_pb2.PARTITION_HEALTH_HEALTHY),
        ],
        events=[event("compute-01/gpu0/nvlink1")],
    )
    lines = render_frame(snap)
    text = "\n".join(lines)
    assert lines[0] == (
        "rack mini  2025-05-01 12:00:00Z  control plane ready  trays 3/4 reachable  "
        "fabric nvlink5, tables generation 7"
    )
    assert lines[1] == (
        "links 13/16 active  traffic 140.1 GB/s (tx+rx of every link, over 1.0 s), "
        "busiest link at 95%"
    )
    # Trays: state, and only the marks that say something is off.
    assert "compute-01 ok " in text and "switch-1 ok drained" in text
    assert "compute-02 failed unreachable" in text
    # One row per accelerator; columns grouped by switch tray (2 planes each).
    heat = text[text.index("LINKS") :].splitlines()
    assert heat[1].strip() == "01 23"
    assert [row.split("  ")[1:3] for row in heat[2:6]] == [
        ["0 compute-01/gpu0", "4X .9"],
        ["1 compute-01/gpu1", ".. D0"],
        ["2 compute-02/gpu0", "?~ .."],
        ["3 compute-02/gpu1", ".. .."],
    ]
    assert heat[2].endswith("140 GB/s")  # 45 + 95 GB/s on its links
    assert "X down" in heat[6] and "D drained" in heat[6] and "? not measured" in heat[6]
    partitions = text[text.index("PARTITIONS") :].splitlines()
    assert partitions[1].split() == ["ID", "NAME", "MEMBERS", "HEALTH", "REASON"]
    assert partitions[2].split() == ["1", "train", "2", "degraded_bandwidth", "1", "down"]
    assert partitions[3].split()[:4] == ["32766", "default", "2", "healthy"]
    assert lines[-2] == "EVENTS  the last 1 of 6 since top started"
    assert lines[-1] == (
        "  12:00:01  link_state_changed        compute-01/gpu0/nvlink1  down (was active)"
    )


def test_events_are_cut_to_the_width_and_the_latest_kept() -> None:
    long = event("compute-01/gpu0/nvlink1" + "x" * 200, second=9)
    snap = snapshot([[IDLE] * 4] * 4, events=[event(f"link-{i}", i) for i in range(8)] + [long])
    lines = render_frame(snap, width=60, events=3)
    assert max(map(len, lines)) <= 60
    assert lines[-4] == "EVENTS  the last 3 of 14 since top started"
    assert [line[:12] for line in lines[-3:]] == ["  12:00:06  ", "  12:00:07  ", "  12:00:09  "]
    assert len(lines[-1]) == 60


def test_a_frame_before_the_second_sample_says_it_is_measuring() -> None:
    lines = render_frame(snapshot([[Cell(ACTIVE)] * 4] * 4, interval=None))
    assert "traffic: measuring until the next refresh" in lines[1]
    row = next(line for line in lines if "compute-01/gpu0" in line)
    assert "?? ??" in row


def test_a_large_rack_fits_the_window() -> None:
    rows = [[IDLE] * 18 for _ in range(72)]
    rows[71][17] = busy(0.5)
    snap = snapshot(rows, events=[event(f"e{i}", i) for i in range(20)])
    wide = render_frame(snap, width=200, height=45, hint="q quits")
    assert len(wide) == 45 and max(map(visible_width, wide)) <= 200
    assert wide[1].startswith("links 1296/1296 active  [q quits]  traffic 50 GB/s")
    text = "\n".join(wide)
    # The heatmap went side by side: every accelerator is on screen, the last one included.
    assert all(f"compute-{i // 2 + 1:02}/gpu{i % 2}" in text for i in range(72))
    assert "71 compute-36/gpu1  .. .. .. .. .. .. .. .. .5  50 GB/s" in text
    assert text.count("01 23 45 67 89 01 23 45 67") == 3  # each column of rows has its heading
    # The events take the lines left over, the latest last.
    assert "EVENTS  the last 7 of 25" in text and wide[-1].endswith("e19  down (was active)")
    narrow = render_frame(snap, width=60, height=40)
    assert len(narrow) <= 40 and max(map(len, narrow)) <= 60
    assert any("more accelerators (a larger window shows them)" in line for line in narrow)


def test_colour_is_only_paint() -> None:
    snap = snapshot([[busy(0.05), Cell(DOWN), busy(0.8), IDLE]] * 4)
    plain, painted = render_frame(snap), render_frame(snap, colour=True)
    assert painted != plain
    assert [visible_width(line) for line in painted] == [len(line) for line in plain]
    row = next(line for line in painted if "compute-01/gpu0" in line)
    assert f"{GREEN}0{RESET}{RED}X{RESET} {RED}8{RESET}" in row


def test_clip_keeps_colour_codes_whole() -> None:
    text = f"ab{RED}cdef{RESET}gh"
    assert clip(text, 10) == text
    assert clip(text, 4) == f"ab{RED}cd{RESET}"
    assert clip(text, 2) == "ab"
    assert visible_width(clip(text, 7)) == 7


# -- utilization from the controller's answers -------------------------------------------------


def link(accelerator: int, plane: int, tx: int, rx: int, **kw: object) -> common_pb2.Link:
    return common_pb2.Link(
        ref=common_pb2.LinkRef(accelerator=accelerator, link=plane),
        index=accelerator * 2 + plane,
        name=f"a{accelerator}/nvlink{plane}",
        counters=common_pb2.LinkCounters(tx_bytes=tx, rx_bytes=rx),
        **kw,  # type: ignore[arg-type]
    )


def sample(links: Sequence[common_pb2.Link], taken: float) -> Sample:
    domain = controller_pb2.GetDomainResponse(
        properties=controller_pb2.DomainProperties(
            rack="r", links_per_accelerator=2, link_bandwidth_bytes_per_second=int(100 * GBPS)
        )
    )
    compute = common_pb2.TrayInfo(
        name="compute-01",
        kind=common_pb2.TRAY_KIND_COMPUTE,
        accelerators=[
            common_pb2.Accelerator(index=1, name="compute-01/gpu1"),
            common_pb2.Accelerator(index=0, name="compute-01/gpu0"),
        ],
    )
    switch = common_pb2.TrayInfo(
        name="switch-1",
        kind=common_pb2.TRAY_KIND_SWITCH,
        switch_chips=[common_pb2.SwitchChip(index=0), common_pb2.SwitchChip(index=1)],
    )
    return Sample(domain, [compute, switch], links, [], taken, NOON)


def test_utilization_is_bytes_both_ways_over_capacity_and_seconds() -> None:
    before = sample(
        [
            link(0, 0, 1000, 1000, state=ACTIVE, capacity_bytes_per_second=int(100 * GBPS)),
            link(0, 1, 5000, 0, state=ACTIVE),
            link(1, 0, 0, 0, state=ACTIVE),
            link(1, 1, 0, 0, state=DOWN),
        ],
        taken=10.0,
    )
    now = sample(
        [
            # 25 GB up and 25 GB down in 2 s of a 100 GB/s (both ways) link: 25%.
            link(
                0,
                0,
                1000 + 25 * 10**9,
                1000 + 25 * 10**9,
                state=ACTIVE,
                capacity_bytes_per_second=int(100 * GBPS),
            ),
            link(0, 1, 100, 0, state=ACTIVE),  # went back: its agent restarted
            link(1, 0, 2 * 10**9, 0, state=ACTIVE),  # no capacity of its own: the domain's
            link(1, 1, 0, 0, state=DOWN),
        ],
        taken=12.0,
    )
    snap = build_snapshot(now, before)
    assert snap.interval == 2.0
    assert [r.name for r in snap.accelerators] == ["compute-01/gpu0", "compute-01/gpu1"]
    assert snap.plane_trays == ["switch-1", "switch-1"]
    (a, b), (c, d) = (row.cells for row in snap.accelerators)
    assert (a.utilization, a.bytes_per_second) == (0.25, 25 * GBPS)
    assert b.utilization is None and cell_glyph(b) == "?"
    assert c.utilization == pytest.approx(0.01)
    assert cell_glyph(d) == "X"
    assert all(c.utilization is None for row in build_snapshot(now).accelerators for c in row.cells)


def test_json_frame_is_the_matrix_and_the_rest() -> None:
    snap = snapshot(
        [[busy(0.5), Cell(DOWN)], [IDLE, Cell(ACTIVE)]],
        partitions=[PartitionLine(1, "p", 2, common_pb2.PARTITION_HEALTH_HEALTHY)],
        events=[event("x")],
        planes_per_switch_tray=1,
    )
    document = json.loads(json.dumps(frame_json(snap)))  # plain JSON values only
    assert document["utilization"] == [[0.5, None], [0.0, None]]
    assert document["link_states"] == [
        ["LINK_STATE_ACTIVE", "LINK_STATE_DOWN"],
        ["LINK_STATE_ACTIVE", "LINK_STATE_ACTIVE"],
    ]
    assert document["accelerators"] == [
        {"index": 0, "name": "compute-01/gpu0"},
        {"index": 1, "name": "compute-01/gpu1"},
    ]
    assert document["plane_switch_trays"] == ["switch-1", "switch-2"]
    assert document["partitions"][0]["health"] == "PARTITION_HEALTH_HEALTHY"
    assert document["events"][0]["subject"] == "x"
    assert document["time"] == "2025-05-01T12:00:00.000Z"
    assert document["control_plane_state"] == "CONTROL_PLANE_STATE_READY"


def test_the_interval_is_a_positive_number_of_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["top", "--once", "--interval", "0.5", "-o", "json"])
    assert (args.interval, args.once, args.output, args.events) == (0.5, True, "json", 10)
    assert build_parser().parse_args(["top"]).interval == 1.0
    for bad in ("0", "-1", "soon", "nan"):
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args(["top", "--interval", bad])
        assert exited.value.code == 2
    assert "--interval" in capsys.readouterr().err
