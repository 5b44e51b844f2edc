"""Which links a tray coming up need not wait for (`rack restart`, `rack up`), and what `rack
status` says is wrong, from the trays' statuses: pure functions of the launcher."""

from __future__ import annotations

from fusionrack.emulator import LinkState, Topology
from fusionrack.fusionctl.launcher.readiness import (
    link_problems,
    links_not_expected,
    links_waited_for,
)
from fusionrack.v1 import common_pb2, tray_pb2


def status(
    top: Topology, tray: str, down: frozenset[str] | set[str] = frozenset(), **more: object
) -> tray_pb2.TrayStatus:
    """`tray`'s status with the links named in `down` DOWN, every other ACTIVE."""
    links = []
    for index in top.link_indices_of_tray(tray):
        link = top.links[index]
        state = LinkState.DOWN if link.name in down else LinkState.ACTIVE
        ref = common_pb2.LinkRef(accelerator=link.accelerator, link=link.plane)
        links.append(common_pb2.LinkStatus(link=ref, state=int(state)))
    return tray_pb2.TrayStatus(tray=tray, links=links, link_count=len(links), **more)


def fault(kind: int, target: str, tray: str) -> common_pb2.Fault:
    return common_pb2.Fault(id=f"{tray}/1", spec=common_pb2.FaultSpec(kind=kind),
                            target_name=target, tray=tray)  # fmt: skip


def names(top: Topology, why: dict[int, str]) -> dict[str, str]:
    return {top.links[index].name: reason for index, reason in why.items()}


def test_a_restarted_switch_tray_waits_for_no_link_a_fault_elsewhere_or_a_lost_tray_holds(
    mini: Topology,
) -> None:
    held = "compute-01/gpu0/nvlink0"  # on switch-1's plane 0
    statuses = {
        "compute-01": status(mini, "compute-01", {held}, faults=[
            fault(common_pb2.FAULT_KIND_LINK_DOWN, held, "compute-01")]),
        "compute-02": None,  # killed, not restarted
        "switch-1": status(mini, "switch-1", {held, *(f"compute-02/gpu{g}/nvlink{n}"
                                                      for g in (0, 1) for n in (0, 1))}),
    }  # fmt: skip
    why = links_not_expected(mini, statuses, starting={"switch-1"})
    assert names(mini, why) == {
        held: "held down by link_down fault compute-01/1 on compute-01/gpu0/nvlink0",
        **{f"compute-02/gpu{g}/nvlink{n}": "ending on compute-02, which does not answer"
           for g in (0, 1) for n in range(4)},
    }  # fmt: skip
    assert links_waited_for(statuses["switch-1"], mini, why) == []
    # compute-02 being started too: its links are waited for, and named.
    starting = links_not_expected(mini, statuses, starting={"switch-1", "compute-02"})
    assert sorted(links_waited_for(statuses["switch-1"], mini, starting) or []) == [
        f"compute-02/gpu{g}/nvlink{n} (down)" for g in (0, 1) for n in (0, 1)
    ]
    # A drain in the controller's desired state, and one held at a tray.
    drained = links_not_expected(mini, {}, drained={mini.link_named(held).index})
    assert names(mini, drained) == {held: "drained"}
    at_tray = status(mini, "compute-01")
    at_tray.links[0].admin_state = common_pb2.ADMIN_STATE_DOWN
    assert names(mini, links_not_expected(mini, {"compute-01": at_tray})) == {
        held: "drained at compute-01"
    }


def test_rack_status_names_each_fault_and_the_links_nothing_explains(mini: Topology) -> None:
    lost = {f"compute-02/gpu{g}/nvlink{n}" for g in (0, 1) for n in range(4)}
    statuses = {
        "compute-01": status(mini, "compute-01", {"compute-01/gpu1/nvlink3"}),
        "switch-1": status(mini, "switch-1", lost),
        "switch-2": status(mini, "switch-2", lost | {"compute-01/gpu1/nvlink3"}),
        "compute-02": status(mini, "compute-02", lost, state=common_pb2.COMPONENT_STATE_FAILED,
                             faults=[fault(common_pb2.FAULT_KIND_TRAY_LOSS, "compute-02",
                                           "compute-02")]),
    }  # fmt: skip
    problems, notes = link_problems(mini, statuses)
    assert problems == [
        "compute-02 is lost: tray_loss fault compute-02/1, 8 links down",
        "link is down with no fault, drain or silent tray to explain it: compute-01/gpu1/nvlink3",
    ]
    assert notes == []
