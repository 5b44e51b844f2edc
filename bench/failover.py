"""Benchmark of controller failover: three controllers on one etcd, the leader killed -9.

    python -m bench.failover           # gb200-nvl72, 10 kills (~1 min)
    python -m bench.failover --quick   # mini rack, 2 kills, for tests

The agents run one process per tray (forked from one start-up, as `fusionctl rack up` does),
the three `fusion-controller --store etcd://...` processes and a real etcd (Debian's
`etcd-server`, on free loopback ports, with its default timings, so leases get its minimum TTL
of 2 s) beside them. Each round: the leader is found (GetDomain), killed with SIGKILL, and two
times are taken from the kill:

* **leads**: a standby says it leads (GetDomain polled every 10 ms on both standbys). It is
  bounded by the lease: at most its TTL after the dead leader's last keep-alive, plus etcd's
  expiry check (every 500 ms). Target: <= 3 s.
* **change accepted**: a CreatePartition sent right after the kill through a `FailoverChannel`
  over all three controllers (what `fusionctl --controller A,B,C` does), answered OK: what a
  client sees.

The killed controller is started again (a standby) before the next round (with `--quick`, two
kills leave one controller of three, with no restart between). Printed: p50 and max of both
over the rounds, and the ratio of each to the 3 s target.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc
import numpy as np

from bench.agents import BIN, Rack, verdict
from fusionrack.cli import ArgumentParser
from fusionrack.rpc import free_port_range, open_channel
from fusionrack.v1 import common_pb2, controller_pb2, controller_pb2_grpc
from tests.support.etcd_server import Etcd  # how the tests start a real etcd, too

TARGET = 3.0  # s from the kill to a standby leading


class Controllers:
    """Three `fusion-controller` processes of one rack sharing one etcd."""

    def __init__(self, rack: Rack, etcd: Etcd, scratch: Path) -> None:
        self.rack, self.etcd, self.scratch = rack, etcd, scratch
        base = free_port_range(3)
        self.addresses = [f"127.0.0.1:{base + i}" for i in range(3)]
        self.processes: list[subprocess.Popen[bytes] | None] = [None, None, None]

    def start(self, i: int) -> None:
        with open(self.scratch / f"controller-{i}.log", "ab") as log:
            self.processes[i] = subprocess.Popen(
                [str(BIN / "fusion-controller"), "--manifest", self.rack.manifest,
                 "--base-port", str(self.rack.base), "--store", self.etcd.url,
                 "--controller-id", f"controller-{i}", "--listen", self.addresses[i],
                 "--rack-secret-file", str(self.rack.secret_file), "--log-level", "WARNING"],
                stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip

    def kill(self, i: int) -> None:
        process = self.processes[i]
        assert process is not None
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop(self) -> None:
        for process in self.processes:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()


async def state_of(address: str) -> controller_pb2.DomainState | None:
    try:
        async with open_channel(address) as channel:
            answer = await controller_pb2_grpc.ControllerStub(channel).GetDomain(
                controller_pb2.GetDomainRequest(), timeout=0.5
            )
        return answer.state
    except grpc.aio.AioRpcError:
        return None


async def ready_leader(controllers: Controllers, timeout: float = 60.0) -> int:
    """The index of the leader, once every live controller answers and reaches every tray."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = [a for a, p in zip(controllers.addresses, controllers.processes, strict=True)
                if p is not None and p.poll() is None]  # fmt: skip
        states = [await state_of(a) for a in live]
        if all(s is not None and s.reachable_tray_count == s.tray_count for s in states):
            leaders = [a for a, s in zip(live, states, strict=True)
                       if s is not None and s.leadership.leader]  # fmt: skip
            if leaders and not any(s.stale_trays for s in states if s is not None):
                return controllers.addresses.index(leaders[0])
        await asyncio.sleep(0.05)
    logs = "".join(
        (controllers.scratch / f"controller-{i}.log").read_text()[-1500:] for i in range(3)
    )
    raise SystemExit(f"the controllers were not ready with a leader in {timeout} s:\n{logs}")


async def one_kill(
    controllers: Controllers, stub: controller_pb2_grpc.ControllerStub, restart: bool
) -> tuple[float, float]:
    """(seconds to a standby leading, seconds to a change accepted), from a kill of the leader."""
    leader = await ready_leader(controllers)
    standbys = [a for i, a in enumerate(controllers.addresses) if i != leader]
    compute = next(t.name for t in controllers.rack.topology.trays if t.kind.name == "COMPUTE")
    request = controller_pb2.CreatePartitionRequest(
        name=f"after-{uuid.uuid4().hex[:8]}",
        locations=common_pb2.LocationList(locations=[common_pb2.Location(tray=compute, index=0)]),
        idempotency_key=uuid.uuid4().hex,
    )
    killed = time.monotonic()
    controllers.kill(leader)
    change = asyncio.ensure_future(stub.CreatePartition(request, timeout=15))
    leads = None
    while leads is None:
        for address in standbys:
            state = await state_of(address)
            if state is not None and state.leadership.leader:
                leads = time.monotonic() - killed
                break
        else:
            if time.monotonic() - killed > 15:
                raise SystemExit("no standby took over within 15 s")
            await asyncio.sleep(0.01)
    created = await change
    accepted = time.monotonic() - killed
    await stub.DeletePartition(
        controller_pb2.DeletePartitionRequest(
            partition=common_pb2.PartitionRef(id=created.partition.id),
            idempotency_key=uuid.uuid4().hex,
        ),
        timeout=15,
    )
    if restart:
        controllers.start(leader)  # back, as a standby
    return leads, accepted


async def main_async(quick: bool) -> int:
    manifest = "mini" if quick else "gb200-nvl72"
    kills = 2 if quick else 10
    rack = Rack(manifest, "fork")
    with tempfile.TemporaryDirectory(prefix="fusionrack-bench-") as scratch:
        etcd = Etcd(Path(scratch) / "etcd")
        controllers = None
        try:
            etcd.start()
            rack.start()
            await rack.wait_ready()
            # Ports picked once the agents hold theirs (a free range is free only until bound).
            controllers = Controllers(rack, etcd, Path(scratch))
            for i in range(3):
                controllers.start(i)
            async with open_channel(",".join(controllers.addresses)) as channel:
                stub = controller_pb2_grpc.ControllerStub(channel)
                results = [await one_kill(controllers, stub, not quick) for _ in range(kills)]
        finally:
            if controllers is not None:
                controllers.stop()
            rack.stop()
            etcd.close()
    leads = np.array([r[0] for r in results])
    accepted = np.array([r[1] for r in results])
    print(f"fusionrack failover benchmark ({manifest}: agent processes, 3 controller processes "
          f"on one etcd {etcd.version()}, lease TTL 2 s; {kills} kills of the leader)")  # fmt: skip
    print(f"  {'measure':36s} {'p50':>8s} {'max':>8s}  verdict")
    for name, values in (("kill -9 -> a standby leads", leads),
                         ("kill -9 -> a change accepted", accepted)):  # fmt: skip
        p50, worst = float(np.median(values)), float(values.max())
        print(
            f"  {name:36s} {f'{p50:.2f} s':>8s} {f'{worst:.2f} s':>8s}  "
            f"p50 {p50 / TARGET:.2f}, max {worst / TARGET:.2f} of the {TARGET:g} s target "
            f"({verdict(worst <= TARGET)})"
        )
    print(f"  every kill: {', '.join(f'{v:.2f}' for v in leads)} s to lead")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="mini rack, 2 kills")
    args = parser.parse_args(argv)
    return asyncio.run(main_async(args.quick))


if __name__ == "__main__":
    sys.exit(main())
