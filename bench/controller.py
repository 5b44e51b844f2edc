"""Benchmark of the controller on gb200-nvl72: provisioning latency and re-programming.

    python -m bench.controller           # full run (~30 s)
    python -m bench.controller --quick   # a few seconds' worth of samples, for tests

The agents run one process per tray (forked from one start-up, as `fusionctl rack up` does), the
controller in its own `fusion-controller` process, the client in this process.

* CreatePartition + DeletePartition of a 72-accelerator partition (by count), one pair at a
  time, vs the floor of any two-phase change: two rounds of parallel no-op RPCs (grpc health
  Check) to the 9 switch trays, from this process, in the same run. Target: p50 <= 20 ms.
* A switch tray killed with SIGKILL and restarted: the time from its health check answering
  SERVING to its partitions being usable again (it is programmed with the controller's
  generation, every compute tray's links to it are ACTIVE, and a store through it lands).
  Target: <= 1 s.

How long `fusionctl rack up` takes to READY is bench/startup.py's.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.agents import BIN, Rack, percentiles, verdict
from fusionrack.cli import ArgumentParser
from fusionrack.emulator import (
    LinkState,
    TrayKind,
    choose_plane,
    fabric_address,
)
from fusionrack.rpc import free_port_range, open_channel
from fusionrack.v1 import (
    common_pb2,
    controller_pb2,
    controller_pb2_grpc,
    memory_pb2,
    memory_pb2_grpc,
    tray_pb2,
    tray_pb2_grpc,
)

MANIFEST = "gb200-nvl72"
READY = controller_pb2.CONTROL_PLANE_STATE_READY


async def until(check, timeout: float = 30.0, every: float = 0.005) -> float:  # type: ignore[no-untyped-def]
    """Poll `check()` (async, True when done) and return the time it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await check():
                return time.monotonic()
        except grpc.aio.AioRpcError:  # a tray coming up refuses calls for a while
            pass
        await asyncio.sleep(every)
    raise TimeoutError(f"{check} still false after {timeout} s")


class Bench:
    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.rack = Rack(MANIFEST, "fork")
        self.state = tempfile.TemporaryDirectory(prefix="fusionrack-bench-")
        self.controller: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> Bench:
        try:
            return await self._start()
        except BaseException:
            await self.__aexit__()
            raise

    async def _start(self) -> Bench:
        self.rack.start()
        await self.rack.wait_ready()
        self.controller_address = f"127.0.0.1:{free_port_range(1)}"  # not one of the agents'
        self.controller = subprocess.Popen([
            str(BIN / "fusion-controller"), "--manifest", MANIFEST,
            "--base-port", str(self.rack.base), "--listen", self.controller_address,
            "--state", str(Path(self.state.name) / "controller.sqlite"), "--log-level", "WARNING",
            "--rack-secret-file", str(self.rack.secret_file),
        ])  # fmt: skip
        self.channel = open_channel(self.controller_address)
        self.stub = controller_pb2_grpc.ControllerStub(self.channel)
        await until(self._ready)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if hasattr(self, "channel"):
            await self.channel.close()
        if self.controller is not None:
            self.controller.send_signal(signal.SIGTERM)
            self.controller.wait(timeout=15)
        self.rack.stop()
        self.state.cleanup()

    async def _ready(self) -> bool:
        if self.controller is not None and self.controller.poll() is not None:
            raise SystemExit(f"fusion-controller exited with {self.controller.returncode}")
        domain = await self.stub.GetDomain(controller_pb2.GetDomainRequest(), timeout=2)
        return domain.state.control_plane_state == READY

    async def provisioning(self) -> tuple[tuple[float, float], tuple[float, float]]:
        switch_trays = [t.name for t in self.rack.topology.trays if t.kind == TrayKind.SWITCH]
        channels = [open_channel(self.rack.address(name)) for name in switch_trays]
        health = [health_pb2_grpc.HealthStub(c) for c in channels]
        check = health_pb2.HealthCheckRequest()

        async def two_rounds() -> None:
            for _ in range(2):
                await asyncio.gather(*(stub.Check(check) for stub in health))

        async def create_and_delete() -> None:
            created = await self.stub.CreatePartition(
                controller_pb2.CreatePartitionRequest(
                    name="bench", count=72, idempotency_key=uuid.uuid4().hex
                )
            )
            await self.stub.DeletePartition(
                controller_pb2.DeletePartitionRequest(
                    partition=common_pb2.PartitionRef(id=created.partition.id),
                    idempotency_key=uuid.uuid4().hex,
                )
            )

        n = 40 if self.quick else 400
        floor, ours = await percentiles([two_rounds, create_and_delete], n, block=20)
        for channel in channels:
            await channel.close()
        return ours, floor

    async def restart_switch_tray(self, name: str = "switch-1") -> float:
        """Seconds from the restarted tray answering its health check to usable partitions."""
        await self.stub.CreatePartition(controller_pb2.CreatePartitionRequest(name="kept", count=8))
        pids = self.rack.state.tray_pids()
        os.kill(pids[name], signal.SIGKILL)
        domain_stub = self.stub
        await until(lambda: self._unreachable(domain_stub, name))
        restarted = subprocess.Popen([
            str(BIN / "fusion-agent"), "--manifest", MANIFEST, "--tray", name,
            "--base-port", str(self.rack.base), "--log-level", "WARNING",
            "--rack-secret-file", str(self.rack.secret_file),
        ])  # fmt: skip
        self.rack.processes.append(restarted)
        address = self.rack.address(name)
        channel = open_channel(address)
        health = health_pb2_grpc.HealthStub(channel)
        serving = health_pb2.HealthCheckResponse.SERVING
        healthy = await until(
            lambda: _is(health.Check(health_pb2.HealthCheckRequest(), timeout=1), serving),
            every=0.002,
        )
        # Channels opened once: the polling must not load the machine it measures.
        top = self.rack.topology
        computes = {t.name: open_channel(self.rack.address(t.name))
                    for t in top.trays if t.kind == TrayKind.COMPUTE}  # fmt: skip
        usable = await until(lambda: self._usable_through(name, channel, computes))
        for opened in (channel, *computes.values()):
            await opened.close()
        return usable - healthy

    async def _unreachable(self, stub: controller_pb2_grpc.ControllerStub, name: str) -> bool:
        domain = await stub.GetDomain(controller_pb2.GetDomainRequest(), timeout=2)
        return name in domain.state.unreachable_trays

    async def _usable_through(self, name: str, channel, computes) -> bool:  # type: ignore[no-untyped-def]
        domain = await self.stub.GetDomain(controller_pb2.GetDomainRequest(), timeout=2)
        status = await tray_pb2_grpc.TrayStub(channel).GetStatus(
            tray_pb2.GetStatusRequest(), timeout=2
        )
        if status.status.config_generation != domain.state.fabric_generation:
            return False
        top = self.rack.topology
        planes = list(top.tray(name).switch_chips)
        for compute in computes.values():
            links = await tray_pb2_grpc.TrayStub(compute).GetStatus(
                tray_pb2.GetStatusRequest(), timeout=2
            )
            if any(
                link.state != LinkState.ACTIVE
                for link in links.status.links
                if link.link.link in planes
            ):
                return False
        # A store from accelerator 0 to 1 (both in "kept") on a plane of the restarted tray.
        mask = np.isin(np.arange(top.links_per_accelerator), planes)
        offset = next(o for o in range(0, 1 << 20, 256)
                      if choose_plane(fabric_address(1, o), mask) in planes)  # fmt: skip
        await memory_pb2_grpc.MemoryStub(computes[top.accelerators[0].location.tray]).Store(
            memory_pb2.StoreRequest(initiator=0, address=fabric_address(1, offset), data=b"1"),
            timeout=2,
        )
        return True


async def _is(call, expected: int) -> bool:  # type: ignore[no-untyped-def]
    return (await call).status == expected


async def main_async(quick: bool) -> int:
    async with Bench(quick) as bench:
        (p50, p99), (floor50, floor99) = await bench.provisioning()
        reprogrammed = await bench.restart_switch_tray()
    print(f"fusionrack controller benchmark ({MANIFEST}: 27 agent processes, controller process)")
    print(f"  {'measure':44s} {'fusionrack':>18s} {'floor':>18s}  verdict")
    print(
        f"  {'create + delete 72-accelerator partition':44s} "
        f"{f'{p50 * 1e3:.1f} / {p99 * 1e3:.1f} ms':>18s} "
        f"{f'{floor50 * 1e3:.1f} / {floor99 * 1e3:.1f} ms':>18s}  "
        f"p50 ratio {p50 / floor50:.2f} to 2 rounds of 9 parallel no-op RPCs "
        f"(p50 <= 20 ms {verdict(p50 <= 0.020)})"
    )
    print(
        f"  {'restarted switch tray healthy -> usable':44s} {f'{reprogrammed:.3f} s':>18s} "
        f"{'':>18s}  (<= 1 s {verdict(reprogrammed <= 1.0)})"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    args = parser.parse_args(argv)
    return asyncio.run(main_async(args.quick))


if __name__ == "__main__":
    sys.exit(main())
