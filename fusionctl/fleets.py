"""Where `fusionctl fleet up` records a fleet, and how any command finds one of its racks
(`--rack NAME`): `fleet.json` in the fleet's state directory (`--state-dir` of `fleet up`,
else `$FUSIONRACK_FLEET_DIR`, else `.fusionrack/fleet`) lists every rack with its controller's
address and its own state directory (`<fleet dir>/<rack>`, a rack's state directory as
`rack up` makes one: `rack status --rack NAME` reads it)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fusionrack.emulator import NotFound

__all__ = [
    "DEFAULT_BASE_PORT",
    "DEFAULT_PRESET",
    "ENV_FLEET_DIR",
    "FLEET_FILE",
    "fleet_dir",
    "fleet_rack",
    "read_fleet",
]

ENV_FLEET_DIR = "FUSIONRACK_FLEET_DIR"
FLEET_FILE = "fleet.json"
DEFAULT_BASE_PORT = 30000  # clear of `rack up`'s 20100 and of Linux's ephemeral ports (32768-)
DEFAULT_PRESET = "gb200-nvl72"


def fleet_dir(given: Path | None = None) -> Path:
    """The fleet's state directory: `given`, else $FUSIONRACK_FLEET_DIR, else .fusionrack/fleet."""
    if given is not None:
        return given
    return Path(os.environ.get(ENV_FLEET_DIR) or Path(".fusionrack") / "fleet")


def read_fleet(directory: Path) -> dict[str, Any] | None:
    """The record of the fleet up from `directory`, None when none is."""
    try:
        return json.loads((directory / FLEET_FILE).read_text())
    except (OSError, ValueError):
        return None


def fleet_rack(name: str, directory: Path | None = None) -> dict[str, Any]:
    """The record of rack `name` of the fleet up from `directory` (see `fleet_dir`):
    `{"name", "manifest", "controller", "state_dir", "base_port"}`; NotFound saying what there
    is otherwise."""
    where = fleet_dir(directory)
    fleet = read_fleet(where)
    if fleet is None:
        raise NotFound(
            f"no fleet is up from {where}, so there is no rack {name!r} "
            f"(fusionctl fleet up; or set ${ENV_FLEET_DIR} to the fleet's --state-dir)"
        )
    for rack in fleet["racks"]:
        if rack["name"] == name:
            return dict(rack)
    names = ", ".join(rack["name"] for rack in fleet["racks"])
    raise NotFound(f"the fleet up from {where} has no rack {name!r}; it has {names}")
