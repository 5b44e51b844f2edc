"""Chaos under load (tests/support/chaos_load.py): while memory ops run, partitions, multicast
groups, traffic sessions and drains churn and a traffic session runs, a compute tray, a switch tray,
the controller and the broker are killed -9 in turn and restarted. Nothing acknowledged is lost, the
memory load never fails, the killed compute tray alone loses its HBM, and every switch tray ends
with the controller's config."""

from __future__ import annotations

from pathlib import Path

from tests.support.chaos_load import HBM_MARK, VICTIMS, chaos_under_load
from tests.support.process_racks import CHAOS_MANIFEST, ProcessRack


async def test_killing_each_part_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    manifest = tmp_path / "chaos.yaml"
    manifest.write_text(CHAOS_MANIFEST)
    rack = ProcessRack(manifest, tmp_path / "state")
    await rack.up()
    try:
        report = await chaos_under_load(rack)
    finally:
        await rack.down()
    control = report.control
    assert control is not None
    print(f"memory: {report.memory_ops} ops, by phase {report.memory_by_phase}; "
          f"control: {control.acked} changes acknowledged, calls {dict(control.calls)}; "
          f"restart {report.restart_seconds}, recovered {report.recovered_seconds}; "
          f"refusals {control.refusals}")  # fmt: skip
    assert not control.failures, control.failures
    # Ops that do not need the dead part keep succeeding: every one of them, in every phase.
    assert report.memory_ops > 0 and not report.memory_failed, report.memory_failed
    assert all(report.memory_by_phase[f"{victim} dead"] > 0 for victim in VICTIMS)
    assert report.memory_lost_or_twice == 0
    # A killed compute tray loses its HBM, as on hardware; the other trays keep theirs.
    assert report.hbm_after_loss == {"compute-04": 0, "compute-05": HBM_MARK}
    assert control.acked > 0
    assert report.mismatch is None, report.mismatch
    assert report.fabric is None, report.fabric
    assert set(report.recovered_seconds) == set(VICTIMS)
