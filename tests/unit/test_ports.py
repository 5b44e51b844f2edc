"""The default ports of `rack up` and `fleet up`: the broker's and Prometheus's are fixed (a
dashboard finds them at every start), so they must clear every other default and stay below the
kernel's ephemeral range, for every preset."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from fusionrack.emulator import Topology, list_presets, load_manifest
from fusionrack.emulator.topology import DEFAULT_BASE_PORT
from fusionrack.fusionctl.client import DEFAULT_CONTROLLER
from fusionrack.fusionctl.fleet import DEFAULT_BASE_PORT as FLEET_BASE_PORT
from fusionrack.fusionctl.launcher.fleet import plan_fleet
from fusionrack.fusionctl.launcher.plan import RackPlan, controller_listens, planned_ports
from fusionrack.fusionctl.launcher.ports import (
    FLEET_MQTT_PORT,
    FLEET_PROMETHEUS_PORT,
    RACK_MQTT_PORT,
    RACK_PROMETHEUS_PORT,
    listen_address,
)
from fusionrack.fusionctl.rack import MAX_CONTROLLERS

EPHEMERAL_LOW = 32768  # Linux's default net.ipv4.ip_local_port_range starts here


@pytest.mark.parametrize("preset", list_presets())
def test_the_broker_and_prometheus_clear_every_default_port(preset: str) -> None:
    topology = Topology(load_manifest(preset))
    plan = RackPlan(topology, preset, "127.0.0.1", DEFAULT_BASE_PORT, Path("unused"))
    rack = planned_ports(plan, controller_listens(DEFAULT_CONTROLLER, MAX_CONTROLLERS))
    assert not {RACK_MQTT_PORT, RACK_PROMETHEUS_PORT} & rack
    racks = [(f"rack-{n:02d}", preset) for n in range(1, 11)]
    members = plan_fleet(racks, "127.0.0.1", FLEET_BASE_PORT, Path("unused"))
    fleet = set().union(*(planned_ports(m.plan, m.controller) for m in members))
    assert not {FLEET_MQTT_PORT, FLEET_PROMETHEUS_PORT} & (fleet | rack)
    assert not {RACK_MQTT_PORT, RACK_PROMETHEUS_PORT} & fleet
    ours = {RACK_MQTT_PORT, RACK_PROMETHEUS_PORT, FLEET_MQTT_PORT, FLEET_PROMETHEUS_PORT}
    assert max(ours | rack | fleet) < EPHEMERAL_LOW and len(ours) == 4
    assert not ours & {1883, 9090}  # a system's own mosquitto and Prometheus


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("127.0.0.1:20083", "127.0.0.1:20083"),
        ("0.0.0.0:0100", "0.0.0.0:100"),
        ("[::1]:9", "[::1]:9"),
    ],
)
def test_listen_address_takes_host_and_port(given: str, expected: str) -> None:
    assert listen_address(given) == expected


@pytest.mark.parametrize(
    "given", ["20083", ":20083", "host:", "host:0", "host:65536", "h:-1", "h:x"]
)
def test_listen_address_refuses_what_is_not_host_and_port(given: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected HOST:PORT with a port from 1"):
        listen_address(given)
