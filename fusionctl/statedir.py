"""The files `fusionctl rack up` and `fleet up` keep in their state directories, and their
formats: the one place that names them, reads and writes them.

A rack's state directory (`RackState`; `.fusionrack/<rack>` by default):

* `pids.json`: `{name: pid}` of every process the rack runs ("agents" or one per tray,
  "controller" or "controller-1".., "etcd", "mosquitto", "prometheus"); there while the rack
  is up (`up`), so its absence means no rack is up from here;
* `rack.json`: how the rack was started (`record`): `{"rack", "manifest", "renamed", "host",
  "base_port", "tls", "unprogrammed", "controller", "mqtt", "prometheus", "store",
  "in_process", "started", ...}`, with `"fleet"` and `"shared_pids"` for a rack of a fleet;
* `trays.json`: `{tray: pid}` of each tray's process, when the agents fork one per tray;
* `targets.json`: the Prometheus file_sd targets (`fusionctl/launcher/plan.py` writes them);
* the logs (`<process>.log`), the secret and tokens, `tls/`, the controller's state.

A fleet's state directory (`FleetState`; `.fusionrack/fleet` by default) holds `fleet.json`
(`record`: `{"racks": [{"name", "manifest", "controller", "state_dir", "base_port", "trays",
"accelerators"}], "host", "mqtt", "prometheus", "targets", "pids", "started"}`), the shared
broker's and Prometheus's files, its `targets.json`, for each of the two forking programs
("agents", "controllers") `<name>.each.json` (what to fork) and `<name>.pids.json` (`{rack:
pid}` of what it forked), and one rack state directory per rack.

A file that is missing or not JSON reads as None (or empty): a rack half gone is read as far
as it goes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = [
    "FLEET_FILE",
    "PIDS_FILE",
    "RACK_FILE",
    "TARGETS_FILE",
    "TRAYS_FILE",
    "FleetState",
    "RackState",
    "read_json",
    "write_json",
]

PIDS_FILE = "pids.json"
RACK_FILE = "rack.json"
TRAYS_FILE = "trays.json"
TARGETS_FILE = "targets.json"
FLEET_FILE = "fleet.json"


def read_json(path: Path) -> Any:
    """The JSON document in `path`, None when it is missing or not JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, document: Any, indent: int | None = None) -> None:
    path.write_text(json.dumps(document, indent=indent) + "\n")


class RackState:
    """A rack's state directory, `path` (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def pids_file(self) -> Path:
        return self.path / PIDS_FILE

    @property
    def record_file(self) -> Path:
        return self.path / RACK_FILE

    @property
    def trays_file(self) -> Path:
        return self.path / TRAYS_FILE

    @property
    def targets_file(self) -> Path:
        return self.path / TARGETS_FILE

    def up(self) -> bool:
        """Whether a rack is up from here (its processes are recorded)."""
        return self.pids_file.exists()

    def pids(self) -> dict[str, int]:
        """`pids.json`: {process name: pid}; empty when no rack is up."""
        return read_json(self.pids_file) or {}

    def write_pids(self, pids: dict[str, int]) -> None:
        write_json(self.pids_file, pids)

    def record(self) -> dict[str, Any] | None:
        """`rack.json`: how the rack was started; None when there is none."""
        return read_json(self.record_file)

    def write_record(self, record: dict[str, Any]) -> None:
        write_json(self.record_file, record, indent=2)

    def tray_pids(self) -> dict[str, int]:
        """`trays.json`: {tray: pid} of each tray's own process; empty when none."""
        return read_json(self.trays_file) or {}

    def write_tray_pids(self, pids: dict[str, int]) -> None:
        write_json(self.trays_file, pids)

    def forget(self) -> None:
        """The rack is down: its processes and how it was started are no longer recorded."""
        self.pids_file.unlink(missing_ok=True)
        self.record_file.unlink(missing_ok=True)


class FleetState:
    """A fleet's state directory, `path` (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def record_file(self) -> Path:
        return self.path / FLEET_FILE

    def record(self) -> dict[str, Any] | None:
        """`fleet.json`: the fleet's racks and shared services; None when no fleet is up."""
        return read_json(self.record_file)

    def write_record(self, record: dict[str, Any]) -> None:
        write_json(self.record_file, record, indent=2)

    def forget(self) -> None:
        self.record_file.unlink(missing_ok=True)

    def each_file(self, program: str) -> Path:
        """What the forking `program` ("agents", "controllers") forks, one entry per rack."""
        return self.path / f"{program}.each.json"

    def forked_file(self, program: str) -> Path:
        """Where the forking `program` writes {rack: pid} once it has forked every rack."""
        return self.path / f"{program}.pids.json"

    def forked(self, program: str) -> dict[str, int] | None:
        """{rack: pid} the forking `program` wrote; None until it has."""
        return read_json(self.forked_file(program))

    def rack(self, state_dir: str | Path) -> RackState:
        """The state directory of one of its racks (as `record()["racks"][i]["state_dir"]`)."""
        return RackState(Path(state_dir))
