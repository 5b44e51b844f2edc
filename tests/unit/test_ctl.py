"""The pure parts of `fusionctl`'s controller commands: how arguments are read, how tables and
colours are drawn, how messages become JSON (no server, no subprocess)."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from fusionrack.controller.main import DEFAULT_LISTEN
from fusionrack.emulator.manifest import list_presets, load_manifest
from fusionrack.emulator.topology import Topology, tray_addresses
from fusionrack.fusionctl import client
from fusionrack.fusionctl.arguments import (
    ATOMIC_OP,
    LINK_STATE,
    TRAFFIC_PATTERN,
    accelerator_ref,
    enum_word,
    location,
    locations,
    member_spec,
    partition_filter,
    partition_ref,
    quantity,
    seconds,
    uids,
)
from fusionrack.fusionctl.main import build_parser
from fusionrack.fusionctl.output import (
    GREEN,
    RED,
    RESET,
    Palette,
    Word,
    colour_enabled,
    print_json,
    table,
)
from fusionrack.v1 import common_pb2, controller_pb2


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_table_aligns_columns_and_paints_only_state_words() -> None:
    rows = [("compute-01", Word("active"), "ok"), ("switch-10", Word("down"), "x")]
    plain = table(rows, ("TRAY", "STATE", "NOTE"))
    assert plain.splitlines() == [
        "TRAY        STATE   NOTE",
        "compute-01  active  ok",
        "switch-10   down    x",
    ]
    painted = table(rows, ("TRAY", "STATE", "NOTE"), Palette(True))
    lines = painted.splitlines()
    # Colour codes come after the padding: the columns still line up on screen.
    assert lines[1] == f"compute-01  {GREEN}active{RESET}  ok"
    assert lines[2] == f"switch-10   {RED}down{RESET}    x"
    assert "ok" in lines[1] and GREEN + "ok" not in lines[1]  # a plain "ok" cell is not a Word


def test_colour_only_on_a_terminal_without_no_color() -> None:
    assert colour_enabled(Terminal(), {})
    assert not colour_enabled(Terminal(), {"NO_COLOR": "1"})
    assert colour_enabled(Terminal(), {"NO_COLOR": ""})  # no-color.org: set and not empty
    assert not colour_enabled(io.StringIO(), {})
    assert Palette(False)("down") == "down"
    assert Palette(True)("unknown-word") == "unknown-word"


def test_locations_accept_every_form_people_use() -> None:
    assert location("compute-01/3") == common_pb2.Location(tray="compute-01", index=3)
    assert location("compute-01/gpu2") == common_pb2.Location(tray="compute-01", index=2)
    assert location("gb200-nvl72/compute-18/0") == common_pb2.Location(
        rack="gb200-nvl72", tray="compute-18", index=0
    )
    assert [loc.index for loc in locations("compute-01/0, compute-02/1")] == [0, 1]
    for bad in ("compute-01", "compute-01/", "/0", "a/b/c/0", "compute-01/gpu"):
        with pytest.raises(argparse.ArgumentTypeError, match="TRAY/INDEX"):
            location(bad)


def test_references_and_quantities() -> None:
    assert accelerator_ref("5") == common_pb2.AcceleratorRef(index=5)
    assert accelerator_ref("0xBEEF") == common_pb2.AcceleratorRef(uid=0xBEEF)
    assert accelerator_ref("compute-01/gpu0") == common_pb2.AcceleratorRef(name="compute-01/gpu0")
    assert accelerator_ref("mini/compute-01/1").location.index == 1
    with pytest.raises(argparse.ArgumentTypeError):
        accelerator_ref("gpu0")
    spec = member_spec("compute-02/gpu1@128KiB")
    assert (spec.accelerator.name, spec.offset) == ("compute-02/gpu1", 131072)
    assert uids("0x10,17") == [16, 17]
    with pytest.raises(argparse.ArgumentTypeError):
        uids("0")
    assert [quantity(t) for t in ("4096", "0x1000", "4KiB", "0")] == [4096, 4096, 4096, 0]
    assert partition_ref("12") == common_pb2.PartitionRef(id=12)
    assert partition_ref("train") == common_pb2.PartitionRef(name="train")
    assert [partition_filter(t) for t in ("default", "none", "7")] == [32766, 0, 7]


def test_enum_words_both_ways() -> None:
    assert enum_word(common_pb2.LinkState, common_pb2.LINK_STATE_ADMIN_DOWN) == "admin_down"
    assert enum_word(common_pb2.LinkState, 99) == "99"  # a newer server's value still prints
    for text in ("admin_down", "ADMIN-DOWN", "LINK_STATE_ADMIN_DOWN", "Admin_Down"):
        assert LINK_STATE(text) == common_pb2.LINK_STATE_ADMIN_DOWN
    assert ATOMIC_OP("cas") == common_pb2.ATOMIC_OP_COMPARE_SWAP
    with pytest.raises(argparse.ArgumentTypeError, match="down, init, active, admin_down"):
        LINK_STATE("up")


@pytest.mark.parametrize("preset", list_presets())
def test_default_ports_lie_below_the_kernels_ephemeral_range(preset: str) -> None:
    # A port in the ephemeral range may be the local end of someone's outgoing connection.
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    controller = int(DEFAULT_LISTEN.rsplit(":", 1)[1])
    trays = tray_addresses(Topology(load_manifest(preset))).values()
    ports = [int(address.rsplit(":", 1)[1]) for tray in trays for address in tray]
    assert max([*ports, controller + 1]) < low  # +1: the controller's /metrics


def test_output_and_connection_options_go_before_or_after_the_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(client.ENV_CONTROLLER, raising=False)
    parse = build_parser().parse_args
    assert parse(["trays"]).output == "table"
    assert parse(["trays"]).controller == DEFAULT_LISTEN == client.DEFAULT_CONTROLLER
    assert parse(["-o", "json", "trays"]).output == "json"
    assert parse(["trays", "-o", "json"]).output == "json"
    assert parse(["--controller", "h:1", "trays"]).controller == "h:1"
    assert parse(["partition", "list", "--controller", "h:2"]).controller == "h:2"
    assert parse(["manifest", "show", "mini", "-o", "json"]).output == "json"
    monkeypatch.setenv(client.ENV_CONTROLLER, "envhost:3")
    assert build_parser().parse_args(["domain"]).controller == "envhost:3"
    args = parse(["partition", "create", "--name", "p", "--locations", "compute-01/0,compute-01/1",
                  "--locations", "compute-02/0", "--resiliency", "adaptive-bandwidth"])  # fmt: skip
    assert [(x.tray, x.index) for x in args.locations] == [
        ("compute-01", 0), ("compute-01", 1), ("compute-02", 0),
    ]  # fmt: skip
    assert args.resiliency == common_pb2.RESILIENCY_MODE_ADAPTIVE_BANDWIDTH
    assert args.idempotency_key is None  # a fresh UUID is made per invocation


def test_json_is_the_message_with_every_field() -> None:
    out = io.StringIO()
    print_json(common_pb2.ListLinksResponse(links=[common_pb2.Link(name="l", index=0)]), stream=out)
    link = json.loads(out.getvalue())["links"][0]
    # Zero values are present, enums by name, 64-bit integers as strings (proto3 JSON).
    assert link["index"] == 0 and link["state"] == "LINK_STATE_UNSPECIFIED"
    assert link["capacity_bytes_per_second"] == "0"
    lines = io.StringIO()
    print_json({"a": 1}, lines=True, stream=lines)
    assert lines.getvalue() == '{"a":1}\n'


def test_traffic_arguments() -> None:
    assert [seconds(t) for t in ("60s", "1.5m", "2h", "500ms", "90", " 3 s ")] == [
        60,
        90,
        7200,
        0.5,
        90,
        3,
    ]
    for bad in ("5x", "", "s", "1e3s", "-5s", "0", "0ms"):  # a duration is longer than 0
        with pytest.raises(argparse.ArgumentTypeError, match="duration"):
            seconds(bad)
    assert TRAFFIC_PATTERN("all-reduce") == controller_pb2.TRAFFIC_PATTERN_ALL_REDUCE
    assert TRAFFIC_PATTERN("ALL_TO_ALL") == controller_pb2.TRAFFIC_PATTERN_ALL_TO_ALL
    # The error spells them as README and --help do.
    with pytest.raises(
        argparse.ArgumentTypeError,
        match=r"'tree' is not one of all-reduce, all-gather, all-to-all, ring, multicast$",
    ):
        TRAFFIC_PATTERN("tree")
