"""A switch tray's configuration staging: the PREPARE, COMMIT and ABORT phases of
`Switch.ApplyConfig` (switch.proto), apart from the routing that uses the committed tables.

`ConfigStaging` holds what a controller staged (the PREPAREd generation, until its
prepare_timeout) and the newest controller epoch that programmed the tray (an older one is a
deposed leader, refused). A COMMIT hands the staged tables to the `SwitchAgent`, which makes
them the ones it routes with; a phase that is refused changes nothing.
"""

from __future__ import annotations

import logging

from fusionrack import wire
from fusionrack.emulator import FabricConfig, FailedPrecondition, InvalidArgument, Topology
from fusionrack.v1 import switch_pb2

__all__ = ["DEFAULT_PREPARE_TIMEOUT", "ConfigStaging"]

log = logging.getLogger(__name__)

DEFAULT_PREPARE_TIMEOUT = 30.0  # s, when a PREPARE gives no prepare_timeout


class ConfigStaging:
    """The staged generation and the newest controller epoch of switch tray `name`."""

    def __init__(self, topology: Topology, name: str) -> None:
        self.topology = topology
        self.name = name
        self.prepared: tuple[FabricConfig, float] | None = None  # tables, and when they expire
        # The newest leadership epoch of a controller that programmed this tray: older ones are
        # deposed leaders and refused (ApplyConfigRequest.controller_epoch).
        self.controller_epoch = 0

    @property
    def prepared_generation(self) -> int:
        """The generation staged now (0: none)."""
        return self.prepared[0].generation if self.prepared else 0

    def apply(
        self, request: switch_pb2.ApplyConfigRequest, committed: int, now: float
    ) -> FabricConfig | None:
        """Run one phase against the `committed` generation at time `now`: the tables to make
        the committed ones (a COMMIT), else None. A refused phase raises and changes nothing."""
        _check_phase(request)  # before the tray's state is looked at
        if self.prepared is not None and self.prepared[1] < now:
            log.warning(
                "%s: prepared generation %d expired", self.name, self.prepared[0].generation
            )
            self.prepared = None
        epoch = request.controller_epoch
        previous = self.controller_epoch, self.prepared  # a refused phase changes neither
        if epoch < self.controller_epoch:
            raise FailedPrecondition(
                f"controller epoch {epoch} is older than epoch {self.controller_epoch}, whose "
                "leader programs this tray now: a deposed controller may not change it"
            )
        if epoch > self.controller_epoch:
            if self.prepared is not None:
                log.info("%s: controller epoch %d drops generation %d staged before it",
                         self.name, epoch, self.prepared[0].generation)  # fmt: skip
                self.prepared = None
            self.controller_epoch = epoch
        try:
            return self._apply_phase(request, committed, now)
        except BaseException:
            self.controller_epoch, self.prepared = previous
            raise

    def _apply_phase(
        self, request: switch_pb2.ApplyConfigRequest, committed: int, now: float
    ) -> FabricConfig | None:
        phase, generation = request.phase, request.generation
        if phase == switch_pb2.CONFIG_PHASE_PREPARE:
            if generation <= committed:
                raise FailedPrecondition(
                    f"generation {generation} is not newer than the committed {committed}"
                )
            config = wire.fabric_config(self.topology, request.config, generation)
            timeout = (
                request.prepare_timeout.ToNanoseconds() / 1e9
                if request.HasField("prepare_timeout")
                else DEFAULT_PREPARE_TIMEOUT
            )
            self.prepared = (config, now + timeout)
        elif phase == switch_pb2.CONFIG_PHASE_COMMIT:
            if self.prepared is None or self.prepared[0].generation != generation:
                staged = self.prepared[0].generation if self.prepared else "none"
                raise FailedPrecondition(
                    f"generation {generation} is not prepared (prepared: {staged})"
                )
            config, self.prepared = self.prepared[0], None
            return config
        elif self.prepared is not None and generation == self.prepared[0].generation:  # ABORT
            self.prepared = None
        return None


def _check_phase(request: switch_pb2.ApplyConfigRequest) -> None:
    """What switch.proto asks of every phase, checked before the tray looks at its state: a
    phase it defines, a generation > 0, a prepare_timeout > 0 when given (0 staged a
    generation that expired at once)."""
    if request.phase not in _PHASES:
        raise InvalidArgument(
            f"config phase {request.phase} is not one of {', '.join(_PHASES.values())}"
        )
    if request.generation == 0:
        raise InvalidArgument(
            f"{_PHASES[request.phase]} of generation 0: generations are > 0 (the controller's "
            "counter of changes)"
        )
    timeout = request.prepare_timeout.ToNanoseconds() / 1e9
    if request.HasField("prepare_timeout") and timeout <= 0:
        raise InvalidArgument(
            f"prepare_timeout {timeout:g} s: give > 0, or leave it unset "
            f"({DEFAULT_PREPARE_TIMEOUT:g} s)"
        )


_PHASES = {
    switch_pb2.CONFIG_PHASE_PREPARE: "PREPARE",
    switch_pb2.CONFIG_PHASE_COMMIT: "COMMIT",
    switch_pb2.CONFIG_PHASE_ABORT: "ABORT",
}
