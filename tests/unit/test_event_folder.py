"""`fusionctl events` folds a burst into one line: events that follow one another with the same
kind, source and change, about different subjects, within a second."""

from __future__ import annotations

from fusionrack.fusionctl.output import Palette
from fusionrack.fusionctl.views import EventFolder
from fusionrack.v1 import common_pb2, events_pb2


def link_down(
    name: str, trays: list[str], seconds: float, state: int = common_pb2.LINK_STATE_DOWN
) -> events_pb2.Event:
    event = events_pb2.Event(
        kind=common_pb2.EVENT_KIND_LINK_STATE_CHANGED, source="controller", subject=name,
        trays=trays,
        link_state_changed=events_pb2.LinkStateChanged(
            state=state, previous=common_pb2.LINK_STATE_ACTIVE
        ),
    )  # fmt: skip
    event.time.FromNanoseconds(int(seconds * 1e9))
    return event


def folded(events: list[events_pb2.Event]) -> list[str]:
    folder = EventFolder(Palette(False))
    lines = [line for e in events for line in folder.add(e)]
    return [line.split("  ", 1)[1] for line in [*lines, *folder.flush()]]  # without the time


DOWN = common_pb2.LINK_STATE_DOWN


def test_a_lost_trays_links_are_one_line_and_other_changes_their_own() -> None:
    lost = [link_down(f"compute-04/gpu{g}/nvlink{n}", ["compute-04", f"switch-{n // 2 + 1}"],
                      100 + 0.001 * n, DOWN) for g in range(4) for n in range(18)]  # fmt: skip
    later = link_down("compute-01/gpu0/nvlink0", ["compute-01", "switch-1"], 103, DOWN)
    training = common_pb2.LINK_STATE_INIT
    up = link_down("compute-01/gpu0/nvlink1", ["compute-01", "switch-1"], 103.1, training)
    assert folded([*lost, later, up]) == [
        "link_state_changed        72 links of compute-04  down (was active)",
        "link_state_changed        compute-01/gpu0/nvlink0  down (was active)",
        "link_state_changed        compute-01/gpu0/nvlink1  init (was active)",
    ]


def test_a_burst_across_trays_names_its_first_subjects_and_a_lone_event_stays_as_it_is() -> None:
    spread = [link_down(f"compute-0{t}/gpu0/nvlink0", [f"compute-0{t}", "switch-1"], 5, DOWN)
              for t in (1, 2)]  # fmt: skip
    spread.append(link_down("compute-03/gpu0/nvlink2", ["compute-03", "switch-2"], 5, DOWN))
    same_link_twice = [link_down("compute-05/gpu0/nvlink0", ["compute-05", "switch-1"], 9, DOWN)]
    same_link_twice.append(same_link_twice[0])
    assert folded([*spread, *same_link_twice]) == [
        "link_state_changed        3 links (compute-01/gpu0/nvlink0, compute-02/gpu0/nvlink0, "
        "compute-03/gpu0/nvlink2)  down (was active)",
        "link_state_changed        compute-05/gpu0/nvlink0  down (was active)",
        "link_state_changed        compute-05/gpu0/nvlink0  down (was active)",
    ]
