"""A switch tray's configuration staging (agent/switch_config.py, `ConfigStaging`): the
PREPARE / COMMIT / ABORT phases of ApplyConfig and the controller epochs, without a server."""

from __future__ import annotations

import pytest

from fusionrack.agent.switch_config import DEFAULT_PREPARE_TIMEOUT, ConfigStaging
from fusionrack.emulator import FailedPrecondition, InvalidArgument
from fusionrack.emulator.topology import Topology
from fusionrack.v1 import switch_pb2

PREPARE, COMMIT, ABORT = (
    switch_pb2.CONFIG_PHASE_PREPARE,
    switch_pb2.CONFIG_PHASE_COMMIT,
    switch_pb2.CONFIG_PHASE_ABORT,
)
TABLES = switch_pb2.SwitchConfig(
    partitions=[switch_pb2.PartitionTableEntry(id=1, accelerators=[0, 1])]
)


def request(phase: int, generation: int, epoch: int = 0) -> switch_pb2.ApplyConfigRequest:
    return switch_pb2.ApplyConfigRequest(
        phase=phase, generation=generation, controller_epoch=epoch, config=TABLES
    )


def test_a_commit_hands_over_the_prepared_tables_once(mini: Topology) -> None:
    staging = ConfigStaging(mini, "switch-1")
    assert staging.apply(request(PREPARE, 3), committed=0, now=0.0) is None
    assert staging.prepared_generation == 3
    config = staging.apply(request(COMMIT, 3), committed=0, now=1.0)
    assert config is not None and config.generation == 3
    assert config.partitions.same_partition(0, 1)
    assert staging.prepared_generation == 0
    with pytest.raises(FailedPrecondition, match="generation 3 is not prepared"):
        staging.apply(request(COMMIT, 3), committed=3, now=2.0)


def test_a_prepare_must_be_newer_than_the_committed_generation(mini: Topology) -> None:
    staging = ConfigStaging(mini, "switch-1")
    with pytest.raises(FailedPrecondition, match="not newer than the committed 5"):
        staging.apply(request(PREPARE, 5), committed=5, now=0.0)
    assert staging.prepared_generation == 0


def test_an_abort_drops_only_its_own_generation(mini: Topology) -> None:
    staging = ConfigStaging(mini, "switch-1")
    staging.apply(request(PREPARE, 2), committed=0, now=0.0)
    assert staging.apply(request(ABORT, 7), committed=0, now=0.0) is None
    assert staging.prepared_generation == 2
    staging.apply(request(ABORT, 2), committed=0, now=0.0)
    assert staging.prepared_generation == 0


def test_a_staged_generation_expires_after_its_prepare_timeout(mini: Topology) -> None:
    staging = ConfigStaging(mini, "switch-1")
    staging.apply(request(PREPARE, 2), committed=0, now=100.0)
    with pytest.raises(FailedPrecondition, match="prepared: none"):
        staging.apply(request(COMMIT, 2), committed=0, now=100.0 + DEFAULT_PREPARE_TIMEOUT + 1)
    short = request(PREPARE, 2)
    short.prepare_timeout.FromSeconds(1)
    staging.apply(short, committed=0, now=0.0)
    assert staging.apply(request(COMMIT, 2), committed=0, now=0.5) is not None


def test_a_deposed_controller_is_refused_and_a_refused_phase_changes_nothing(
    mini: Topology,
) -> None:
    staging = ConfigStaging(mini, "switch-1")
    staging.apply(request(PREPARE, 2, epoch=4), committed=0, now=0.0)
    with pytest.raises(FailedPrecondition, match="epoch 3 is older than epoch 4"):
        staging.apply(request(COMMIT, 2, epoch=3), committed=0, now=0.0)
    # A newer leader drops what the old one staged; its own refused COMMIT restores nothing
    # it did not have: the epoch and the staged generation are as before the call.
    with pytest.raises(FailedPrecondition, match="not prepared"):
        staging.apply(request(COMMIT, 2, epoch=9), committed=0, now=0.0)
    assert (staging.controller_epoch, staging.prepared_generation) == (4, 2)
    staging.apply(request(PREPARE, 3, epoch=9), committed=0, now=0.0)
    assert (staging.controller_epoch, staging.prepared_generation) == (9, 3)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"phase": 9, "generation": 1}, "config phase 9 is not one of PREPARE, COMMIT, ABORT"),
        ({"phase": PREPARE, "generation": 0}, "PREPARE of generation 0"),
    ],
)
def test_a_malformed_phase_is_refused_before_the_state_is_looked_at(
    mini: Topology, fields: dict, words: str
) -> None:
    staging = ConfigStaging(mini, "switch-1")
    with pytest.raises(InvalidArgument, match=words):
        staging.apply(switch_pb2.ApplyConfigRequest(**fields), committed=0, now=0.0)
    zero = request(PREPARE, 1)
    zero.prepare_timeout.FromSeconds(0)
    with pytest.raises(InvalidArgument, match="prepare_timeout 0 s"):
        staging.apply(zero, committed=0, now=0.0)
