"""What a fault or drain targets (`emulator.targets`): a name's kind from its shape, and a
target checked for its kind before it is looked up, in the core and on `fusionctl`'s command
line (a usage error before any call)."""

from __future__ import annotations

import pytest

from fusionrack.emulator import FaultKind, InvalidArgument, NotFound, Topology, targets
from fusionrack.emulator.targets import Target
from fusionrack.fusionctl.main import main


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("compute-01", Target.TRAY),
        ("compute-01/gpu0", Target.ACCELERATOR),
        ("asic-01/asic3", Target.ACCELERATOR),
        ("compute-01/1", Target.ACCELERATOR),
        ("compute-01/gpu0/nvlink17", Target.LINK),
        ("asic-01/chiplet2", Target.CHIPLET),
        ("switch-1/chip1", Target.SWITCH_CHIP),
        ("", None),
        ("a/b/c/d", None),
        ("compute-01/gpu0/port3", None),
    ],
)
def test_a_names_shape_says_its_kind(name: str, shape: Target | None) -> None:
    assert targets.name_shape(name) == shape


def test_every_fault_kind_takes_one_kind_of_target() -> None:
    assert set(targets.FAULT_TARGETS) == set(FaultKind)


@pytest.mark.parametrize(
    ("kind", "name", "error", "says"),
    [
        # Another kind of component the rack has, or a name shaped like one: INVALID_ARGUMENT.
        (FaultKind.TRAY_LOSS, "switch-1/chip0", InvalidArgument,
         "TRAY_LOSS takes a tray (e.g. compute-01); 'switch-1/chip0' is a switch chip"),
        (FaultKind.LINK_DOWN, "compute-01/gpu7", InvalidArgument,
         "'compute-01/gpu7' is named like an accelerator"),
        (FaultKind.CHIPLET_FAILURE, "asic-09/chiplet0/x", NotFound, "no chiplet"),
        # The right kind, unknown: NOT_FOUND from its own table, naming what exists.
        (FaultKind.LINK_FLAP, "compute-01/gpu0/nvlink18", NotFound,
         "no link 'compute-01/gpu0/nvlink18' in rack gb200-nvl72 (compute-01/gpu0 has "
         "nvlink0..nvlink17)"),
        (FaultKind.TRAY_LOSS, "switch-10", NotFound,
         "no tray 'switch-10' in rack gb200-nvl72 (compute trays compute-01, compute-02, ..., "
         "compute-18; switch trays switch-1, switch-2, ..., switch-9)"),
        (FaultKind.SWITCH_CHIP_FAILURE, "switch-1/chip2", NotFound,
         "switch-1 has chip0..chip1"),
        (FaultKind.SWITCH_CHIP_FAILURE, "compute-01/chip0", NotFound,
         "switch chips switch-1/chip0, switch-1/chip1, ..., switch-9/chip1"),
        (FaultKind.CHIPLET_FAILURE, "compute-01/chiplet0", NotFound,
         "its accelerators are GPUs, which have no chiplet"),
    ],
)  # fmt: skip
def test_a_fault_target_is_checked_for_its_kind_then_looked_up_in_its_table(
    gb200: Topology, kind: FaultKind, name: str, error: type[Exception], says: str
) -> None:
    with pytest.raises(error) as caught:
        targets.find(gb200, name, [targets.FAULT_TARGETS[kind]], kind.name)
    assert says in str(caught.value)


def test_a_found_target_is_its_kind_and_canonical_name(gb200: Topology, trn4: Topology) -> None:
    assert targets.find(gb200, "compute-02/gpu1/nvlink4", [Target.LINK], "x") == (
        Target.LINK,
        "compute-02/gpu1/nvlink4",
    )
    chiplet = trn4.chiplets[5].name
    assert targets.find(trn4, chiplet, [Target.CHIPLET], "x") == (Target.CHIPLET, chiplet)
    assert targets.holders(gb200, Target.LINK, "compute-02/gpu1/nvlink4") == (
        "compute-02",
        "switch-3",
    )
    drain = targets.DRAIN_TARGETS
    assert targets.find(gb200, "switch-2", drain, "a drain") == (Target.TRAY, "switch-2")
    with pytest.raises(NotFound, match="no link or tray named 'a/b/c/d'"):
        targets.find(gb200, "a/b/c/d", drain, "a drain")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["fault", "inject", "link_down", "compute-01"],
         "argument TARGET: link_down takes a link (e.g. compute-01/gpu0/nvlink3); 'compute-01' "
         "is named like a tray"),
        (["fault", "inject", "tray_loss", "compute-01/gpu0/nvlink0"],
         "tray_loss takes a tray (e.g. compute-01); 'compute-01/gpu0/nvlink0' is named like a "
         "link"),
        (["fault", "inject", "switch_chip_failure", "asic-01/chiplet0"],
         "switch_chip_failure takes a switch chip"),
        (["drain", "switch-1/chip0"], "drain takes a link or a tray"),
        (["undrain", "compute-01/gpu0"], "'compute-01/gpu0' is named like an accelerator"),
    ],
)  # fmt: skip
def test_fusionctl_refuses_a_target_of_the_wrong_kind_while_parsing(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # No controller anywhere: the command line alone is wrong (exit 2, argparse's usage error).
    with pytest.raises(SystemExit) as caught:
        main([*argv, "--controller", "127.0.0.1:1"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
