"""Shared fixtures: topologies of the shipped presets, built once per session."""

from __future__ import annotations

import pytest

from fusionrack.emulator.manifest import load_manifest
from fusionrack.emulator.topology import Topology


@pytest.fixture(scope="session")
def mini() -> Topology:
    """2 compute trays x 2 GPUs, 2 switch trays x 2 chips: 4 accelerators, 4 planes."""
    return Topology(load_manifest("mini"))


@pytest.fixture(scope="session")
def gb200() -> Topology:
    return Topology(load_manifest("gb200-nvl72"))


@pytest.fixture(scope="session")
def trn4() -> Topology:
    return Topology(load_manifest("trn4-fusion"))
