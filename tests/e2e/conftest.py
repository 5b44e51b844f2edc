"""Fixtures of the fusionctl tests: a mini rack and its controller in this process, and the real
`fusionctl` (a subprocess) pointed at that controller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fusionrack.agent.serving import InProcessRack
from fusionrack.controller.main import RunningController
from fusionrack.emulator.topology import Topology
from tests.support.fusionctl_runner import Fusionctl
from tests.support.inprocess_racks import running_controller, running_rack


@pytest.fixture
async def rack(mini: Topology) -> AsyncIterator[InProcessRack]:
    # Closed until the controller programs it, as `rack up` starts a rack with a controller.
    async with running_rack(mini, unprogrammed="closed") as running:
        yield running


@pytest.fixture
async def controller(rack: InProcessRack, tmp_path: Path) -> AsyncIterator[RunningController]:
    async with running_controller(rack, tmp_path / "state.sqlite") as running:
        yield running


@pytest.fixture
def ctl(controller: RunningController) -> Fusionctl:
    return Fusionctl(controller.server.address)
