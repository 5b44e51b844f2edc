"""Programming the switch trays: PREPARE and COMMIT of a generation, under the leader's epoch.

`SwitchProgrammer` is the one place that builds `ApplyConfigRequest`s (`request`) and sends
them: to every switch tray at once for a change (`program`: a tray that cannot prepare aborts
it everywhere), or to one tray that is behind (`program_one`). It holds the leadership epoch
the trays are programmed under (`ApplyConfigRequest.controller_epoch`): set by a new leader
(`lead_at`), and raised by a controller that is not elected when some other caller holding the
rack secret programmed a tray under a newer one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import grpc
from google.protobuf import duration_pb2

from fusionrack import wire
from fusionrack.emulator import FabricConfig, Unavailable
from fusionrack.v1 import switch_pb2

from .agents import AgentView, describe_error

__all__ = ["PREPARE_TIMEOUT", "SwitchProgrammer"]

log = logging.getLogger(__name__)

# How long a switch tray keeps a prepared generation waiting for its COMMIT.
PREPARE_TIMEOUT = 30  # s


class SwitchProgrammer:
    """Sends the switch trays their configurations (see the module docstring).

    `check_leads` raises unless this controller leads now (checked before every phase: a
    deposed leader sends no further phase); `elected`: the controller is one of several
    sharing a store, fenced by its epoch; `commit_missed` is called when a tray that prepared
    did not commit (the reconcile loop brings it along).
    """

    def __init__(
        self,
        switches: Sequence[AgentView],
        *,
        rpc_timeout: float,
        check_leads: Callable[[], None],
        elected: bool,
        commit_missed: Callable[[], None],
    ) -> None:
        self.switches = list(switches)
        self.rpc_timeout = rpc_timeout
        self.check_leads = check_leads
        self.elected = elected
        self.commit_missed = commit_missed
        self.epoch = 0  # the leadership epoch the switch trays are programmed under

    def lead_at(self, epoch: int) -> None:
        """Program under `epoch` from now on (a new leadership's, which fences the last)."""
        self.epoch = epoch

    def request(
        self, phase: int, generation: int, config: FabricConfig | None = None
    ) -> switch_pb2.ApplyConfigRequest:
        """The ApplyConfig request of `phase` for `generation` under the current epoch; a
        PREPARE carries `config`'s tables."""
        request = switch_pb2.ApplyConfigRequest(
            phase=phase, generation=generation, controller_epoch=self.epoch
        )
        if phase == switch_pb2.CONFIG_PHASE_PREPARE:
            assert config is not None, "a PREPARE carries the config"
            request.config.CopyFrom(wire.switch_config(config))
            request.prepare_timeout.CopyFrom(duration_pb2.Duration(seconds=PREPARE_TIMEOUT))
        return request

    async def program(self, config: FabricConfig, generation: int) -> None:
        """PREPARE `generation` on every switch tray, then COMMIT; abort everywhere on failure
        (Unavailable). A tray that prepared but did not commit is left to the reconcile loop."""
        switches = self.switches
        down = [v.name for v in switches if not v.reachable]
        if down:
            raise Unavailable(
                f"switch tray(s) {', '.join(down)} cannot be reached: nothing was changed "
                "(every switch tray must take a change)"
            )
        prepare = self.request(switch_pb2.CONFIG_PHASE_PREPARE, generation, config)
        results = await asyncio.gather(
            *(self._apply(v, prepare) for v in switches), return_exceptions=True
        )
        failed = [
            (v, r) for v, r in zip(switches, results, strict=True) if isinstance(r, Exception)
        ]
        if failed:
            abort = self.request(switch_pb2.CONFIG_PHASE_ABORT, generation)
            await asyncio.gather(*(self._apply(v, abort) for v in switches), return_exceptions=True)
            view, error = failed[0]
            raise Unavailable(
                f"switch tray {view.name} could not prepare generation {generation} "
                f"({describe_error(error)}); the change was aborted on every switch tray"
            )
        commit = self.request(switch_pb2.CONFIG_PHASE_COMMIT, generation)
        results = await asyncio.gather(
            *(self._apply(v, commit) for v in switches), return_exceptions=True
        )
        for view, result in zip(switches, results, strict=True):
            if isinstance(result, Exception):
                # Everyone prepared, so the change stands; reconcile brings this tray along.
                log.warning("%s did not commit generation %d: %s", view.name, generation, result)
                self.commit_missed()
            else:
                view.generation, view.programmed = generation, True

    async def program_each(
        self, views: Sequence[AgentView], config: FabricConfig, generation: int
    ) -> list[BaseException | None]:
        """PREPARE and COMMIT `generation` on each of `views` on its own, all at once (trays
        that are behind: one that fails does not hold the others back); per tray, its error
        or None."""
        prepare = self.request(switch_pb2.CONFIG_PHASE_PREPARE, generation, config)
        commit = self.request(switch_pb2.CONFIG_PHASE_COMMIT, generation)

        async def one(view: AgentView) -> None:
            for request in (prepare, commit):
                await self._apply(view, request)
            view.generation, view.programmed = generation, True

        results = await asyncio.gather(*(one(v) for v in views), return_exceptions=True)
        return [r if isinstance(r, BaseException) else None for r in results]

    async def _apply(
        self, view: AgentView, request: switch_pb2.ApplyConfigRequest
    ) -> switch_pb2.ApplyConfigResponse:
        assert view.switch is not None
        self.check_leads()  # a deposed leader sends no further phase
        try:
            return await view.switch.ApplyConfig(request, timeout=self.rpc_timeout)
        except grpc.aio.AioRpcError as error:
            if self.elected or error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            # A controller that is not elected has nobody to be fenced from: a newer epoch on
            # the tray is some other caller's (one holding the rack secret), not a successor's.
            # It takes that epoch and sends the phase again, rather than lose the tray.
            config = await view.switch.GetConfig(
                switch_pb2.GetConfigRequest(), timeout=self.rpc_timeout
            )
            if config.controller_epoch <= request.controller_epoch:
                raise
            log.warning("%s was programmed under epoch %d by another caller: taking it",
                        view.name, config.controller_epoch)  # fmt: skip
            self.epoch = max(self.epoch, config.controller_epoch)
            again = switch_pb2.ApplyConfigRequest()
            again.CopyFrom(request)  # the caller's is shared with the other trays' calls
            again.controller_epoch = self.epoch
            return await view.switch.ApplyConfig(again, timeout=self.rpc_timeout)
