"""How any command finds the racks and fleets `fusionctl rack up` and `fleet up` started from
here (their state directories' files are `statedir.py`'s).

A fleet: `fleet.json` in the fleet's state directory (`--state-dir` of `fleet up`, else
`$FUSIONRACK_FLEET_DIR`, else `.fusionrack/fleet`) lists every rack with its controller's
address and its own state directory (`<fleet dir>/<rack>`, a rack's state directory as
`rack up` makes one: `rack status --rack NAME` reads it); `--rack NAME` finds one of its racks.
A rack: `rack.json` in its state directory (`--state-dir`, else `.fusionrack/<rack>`).

A command that finds nothing says where it looked, why there (the option, the variable or the
default) and how to point it elsewhere; `fleet up` and `rack up` print the exact command that
finds what they started (`FUSIONRACK_FLEET_DIR=DIR fusionctl --rack rack-01 domain`).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from fusionrack.emulator import NotFound

from .statedir import RACK_FILE, FleetState, RackState

__all__ = [
    "DEFAULT_BASE_PORT",
    "DEFAULT_PRESET",
    "ENV_FLEET_DIR",
    "RACKS_DIR",
    "fleet_dir",
    "fleet_env",
    "fleet_rack",
    "fleet_state_dir_option",
    "no_fleet",
    "no_rack",
    "rack_options",
    "racks_up_here",
]

ENV_FLEET_DIR = "FUSIONRACK_FLEET_DIR"
DEFAULT_BASE_PORT = 30000  # clear of `rack up`'s 20100 and of Linux's ephemeral ports (32768-)
DEFAULT_PRESET = "gb200-nvl72"


def fleet_dir(given: Path | None = None) -> Path:
    """The fleet's state directory: `given`, else $FUSIONRACK_FLEET_DIR, else .fusionrack/fleet."""
    if given is not None:
        return given
    return Path(os.environ.get(ENV_FLEET_DIR) or Path(".fusionrack") / "fleet")


def _quoted(path: Path | str) -> str:
    return shlex.quote(str(path))


def fleet_env(directory: Path) -> str:
    """What goes before `fusionctl --rack NAME ...` for it to find the fleet up from
    `directory`: nothing when that is where it looks anyway, else `FUSIONRACK_FLEET_DIR=DIR `."""
    return "" if fleet_dir() == directory else f"{ENV_FLEET_DIR}={_quoted(directory)} "


def fleet_state_dir_option(directory: Path) -> str:
    """What goes after `fusionctl fleet status` / `down` for them to find the fleet up from
    `directory`: nothing when that is where they look anyway, else ` --state-dir DIR`."""
    return "" if fleet_dir() == directory else f" --state-dir {_quoted(directory)}"


def _looked(given: Path | None, option: str) -> str:
    """Why the fleet was looked for where it was."""
    if given is not None:
        return f"given by {option}"
    if os.environ.get(ENV_FLEET_DIR):
        return f"from ${ENV_FLEET_DIR}"
    return "the default"


def no_fleet(given: Path | None = None, option: str = "--state-dir") -> str:
    """The message for: no fleet is up where `fleet_dir(given)` looked."""
    return (
        f"no fleet is up from {fleet_dir(given)} ({_looked(given, option)}); a fleet started "
        f"with `fusionctl fleet up --state-dir DIR` is found with --state-dir DIR (fleet "
        f"status, fleet down) or {ENV_FLEET_DIR}=DIR (every other command)"
    )


def fleet_rack(name: str, directory: Path | None = None) -> dict[str, Any]:
    """The record of rack `name` of the fleet up from `directory` (see `fleet_dir`):
    `{"name", "manifest", "controller", "state_dir", "base_port"}`; NotFound saying what there
    is otherwise."""
    where = fleet_dir(directory)
    fleet = FleetState(where).record()
    if fleet is None:
        raise NotFound(f"no rack {name!r}: {no_fleet(directory)}")
    for rack in fleet["racks"]:
        if rack["name"] == name:
            return dict(rack)
    names = ", ".join(rack["name"] for rack in fleet["racks"])
    raise NotFound(f"the fleet up from {where} has no rack {name!r}; it has {names}")


RACKS_DIR = Path(".fusionrack")


def rack_options(rack: str, manifest: str, state_dir: Path) -> str:
    """What goes after `fusionctl rack status` / `down` / `restart` for them to find the rack
    `rack` (of `manifest`) up from `state_dir`: nothing for the default rack in its default
    place, ` --manifest M` for another rack there, ` --state-dir DIR` elsewhere."""
    if state_dir != RACKS_DIR / rack:
        return f" --state-dir {_quoted(state_dir)}"
    return "" if rack == DEFAULT_PRESET else f" --manifest {_quoted(manifest)}"


def racks_up_here() -> list[tuple[Path, dict[str, Any]]]:
    """(state dir, `rack.json`) of every rack `rack up` started from this directory in its
    default place (`.fusionrack/<rack>`) that is up."""
    found = []
    for record in sorted(RACKS_DIR.glob(f"*/{RACK_FILE}")):
        state = RackState(record.parent)
        rack = state.record()
        if state.up() and isinstance(rack, dict) and isinstance(rack.get("rack"), str):
            found.append((record.parent, rack))
    return found


def no_rack(state_dir: Path) -> str:
    """The message for: no rack is up from `state_dir`; it names the racks up from here and
    how to find them, and how a rack started elsewhere is found."""
    found = [
        f"{rack['rack']} (`fusionctl rack status"
        f"{rack_options(rack['rack'], str(rack.get('manifest')), where)}`)"
        for where, rack in racks_up_here()
        if where != state_dir
    ]
    here = f"; up from here: {', '.join(found)}" if found else ""
    return (
        f"no rack is up from {state_dir}{here}; a rack started with `rack up --state-dir DIR` "
        "is found with --state-dir DIR, a rack of a fleet with --rack NAME"
    )
