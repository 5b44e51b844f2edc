"""Where the broker and Prometheus of `rack up` and `fleet up` listen: `--mqtt-listen` and
`--prometheus-listen`, fixed by default so that a dashboard or a test harness wired to them
finds them at every start.

Every default sits below Linux's ephemeral range (32768-60999), where an outgoing connection
may hold any port at the moment a server wants it, and clear of the other defaults:

=========  ===========================  ================================  ================
..         controllers                  trays                             broker, web
=========  ===========================  ================================  ================
rack up    20051-20060 (up to 5)        20100 on (gb200: 20100-20180)     20083, 20090
fleet up   two after each rack's trays  30000 on, a hundred or more each  29983, 29990
=========  ===========================  ================================  ================

The broker and Prometheus take the gap between the controllers and the first tray (the
fleet's: the hundred before its first rack); their last digits recall MQTT's 1883 and
Prometheus's 9090, which are left alone because a system's own mosquitto or Prometheus service
usually holds them. This module imports nothing heavy: every fusionctl start-up loads it.
"""

from __future__ import annotations

import argparse

from fusionrack.cli import split_listen

__all__ = [
    "FLEET_MQTT_PORT",
    "FLEET_PROMETHEUS_PORT",
    "RACK_MQTT_PORT",
    "RACK_PROMETHEUS_PORT",
    "add_listen_options",
    "listen_address",
]

RACK_MQTT_PORT = 20083
RACK_PROMETHEUS_PORT = 20090
FLEET_MQTT_PORT = 29983
FLEET_PROMETHEUS_PORT = 29990


def listen_address(text: str) -> str:
    """`HOST:PORT` as a flag gives it (argparse type): the host non-empty, the port 1-65535
    (not 0: the broker and Prometheus cannot say which port they picked)."""
    try:
        _, port = split_listen(text)
    except ValueError:
        port = 0
    if not port:
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT with a port from 1 to 65535 (e.g. 127.0.0.1:{RACK_MQTT_PORT}), "
            f"got {text!r}"
        )
    return f"{text.rpartition(':')[0]}:{port}"


def add_listen_options(
    parser: argparse.ArgumentParser, mqtt_port: int, prometheus_port: int
) -> None:
    """`--no-mqtt` or `--mqtt-listen`, and `--prometheus-listen`, of `rack up` (or `fleet up`,
    with its ports)."""
    broker = parser.add_mutually_exclusive_group()
    broker.add_argument(
        "--mqtt-listen",
        type=listen_address,
        metavar="HOST:PORT",
        help=f"where the MQTT broker (mosquitto) listens (default: --host, port {mqtt_port})",
    )
    broker.add_argument("--no-mqtt", action="store_true", help="start no broker, publish no events")
    parser.add_argument(
        "--prometheus-listen",
        type=listen_address,
        metavar="HOST:PORT",
        help="start Prometheus (as --prometheus) serving its API and pages there (default "
        f"127.0.0.1:{prometheus_port}; it has no authentication: loopback unless you say so)",
    )
