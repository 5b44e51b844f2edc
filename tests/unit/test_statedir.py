"""The state directories' files (`fusionctl/statedir.py`): written as `rack up` / `fleet up`
write them, read back as `rack status`, `rack down` and `--rack` read them, and a missing or
damaged file read as nothing rather than an error."""

from __future__ import annotations

import json
from pathlib import Path

from fusionrack.fusionctl.statedir import FleetState, RackState


def test_a_rack_is_up_while_its_processes_are_recorded(tmp_path: Path) -> None:
    state = RackState(tmp_path)
    assert not state.up() and state.pids() == {} and state.record() is None
    state.write_pids({"agents": 11, "controller": 12})
    state.write_record({"rack": "mini", "controller": "127.0.0.1:20051"})
    state.write_tray_pids({"compute-01": 13})
    assert state.up() and state.pids() == {"agents": 11, "controller": 12}
    assert state.record() == {"rack": "mini", "controller": "127.0.0.1:20051"}
    assert state.tray_pids() == {"compute-01": 13}
    # The files others read (tests, Prometheus's file_sd, people) keep their names.
    assert json.loads((tmp_path / "pids.json").read_text())["controller"] == 12
    assert (tmp_path / "rack.json").exists() and (tmp_path / "trays.json").exists()
    state.forget()
    assert not state.up() and state.record() is None


def test_a_damaged_file_reads_as_nothing(tmp_path: Path) -> None:
    (tmp_path / "pids.json").write_text("{not json")
    (tmp_path / "rack.json").write_text("")
    state = RackState(tmp_path)
    assert state.up()  # the file is there: a rack half gone is still up, as far as it goes
    assert state.pids() == {} and state.record() is None and state.tray_pids() == {}


def test_a_fleet_record_and_what_its_forking_programs_wrote(tmp_path: Path) -> None:
    fleet = FleetState(tmp_path)
    assert fleet.record() is None and fleet.forked("agents") is None
    fleet.write_record({"racks": [{"name": "rack-01", "state_dir": str(tmp_path / "rack-01")}]})
    fleet.forked_file("agents").write_text(json.dumps({"rack-01": 21}))
    assert fleet.forked("agents") == {"rack-01": 21}
    assert fleet.each_file("controllers") == tmp_path / "controllers.each.json"
    record = fleet.record()
    assert record is not None
    assert fleet.rack(record["racks"][0]["state_dir"]).path == tmp_path / "rack-01"
    fleet.forget()
    assert fleet.record() is None and not (tmp_path / "fleet.json").exists()
