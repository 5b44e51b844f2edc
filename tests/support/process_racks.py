"""A rack of real processes to break, and loads to run on it while it breaks: shared by the
fault tests (tests/integration/test_faults_processes.py, tests/e2e/test_rack_recovery.py) and
the chaos benchmark (bench/chaos.py).

* `ProcessRack`: `fusionctl rack up --detach` from its own state directory on free ports, with
  the faults a user deals out by hand: SIGSTOP/SIGCONT (a hung tray), SIGKILL, `rack restart`.
* `CounterLoad`: initiators doing fetch-add(1) on one word through every way into the data
  plane (unary `Atomic`, `Execute`, `ExecutePacked`, `Stream`), tallying what each op was told:
  the word must end equal to the number of ops reported successful, exactly.
* `RegisterLoad`: initiators doing random load / store / compare-and-swap on a few words,
  recording a history for the linearizability checker (tests/support/linearizability.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import random
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from fusionrack.auth import Credentials, read_secret_file
from fusionrack.emulator import (
    AtomicOp,
    DataType,
    LinkState,
    Topology,
    choose_plane,
    fabric_address,
    load_manifest,
    packed,
)
from fusionrack.emulator.topology import tray_addresses, tray_port_span
from fusionrack.fusionctl.statedir import RackState
from fusionrack.rpc import free_port_range, open_channel
from fusionrack.v1 import memory_pb2, memory_pb2_grpc, tray_pb2, tray_pb2_grpc
from tests.support.fusionctl_runner import Fusionctl

__all__ = [
    "CHAOS_MANIFEST",
    "INITIATORS",
    "TARGET",
    "TARGET_TRAY",
    "CounterLoad",
    "ProcessRack",
    "RegisterLoad",
    "Tally",
    "active_links",
    "grpc_code_name",
    "hang_kill_restart",
    "read_word",
    "run_while",
    "word_through",
    "write_word",
]

# 5 compute trays of 2 GPUs (8 initiators on 4 trays, targets on the fifth) and 3 switch trays
# of 2 chips: 6 planes, so a switch tray lost leaves 4. Small enough to start in ~1 s.
CHAOS_MANIFEST = """\
version: 1
name: chaos
description: "Fault tests: 10 GPUs on 5 compute trays, 3 switch trays x 2 chips"
fabric:
  generation: nvlink5
  switch_chips_per_tray: 2
  ports_per_switch_chip: 16
  link_bandwidth: 100GB/s
  links_per_accelerator: 6
  default_partition: true
  multicast: {max_groups: 16, max_groups_per_partition: 4, granularity: 64KiB}
trays:
  - kind: compute
    count: 5
    accelerators: 2
    accelerator: {kind: gpu, model: B200, hbm: 1GiB}
  - kind: switch
    count: 3
"""

# In the chaos rack: 8 initiators, 2 on each of 4 compute trays, and the fifth holds targets.
INITIATORS = [(f"compute-0{tray}", 2 * (tray - 1) + k) for tray in range(1, 5) for k in (0, 1)]
TARGET_TRAY, TARGET = "compute-05", 8
HOP_DEADLINE = 5.0  # the agents' forward timeout

U64 = DataType.U64
DEADLINE = 30.0  # a client's deadline: far past the agents' own time for an op (10 s)


class ProcessRack:
    """A rack up in the background (`rack up --detach`) from its own state directory, every
    tray its own process; `options` are more `rack up` options."""

    def __init__(
        self, manifest: str | Path, state: Path, *, controller: bool = True, options: Any = ()
    ) -> None:
        self.topology = Topology(load_manifest(str(manifest)))
        span = tray_port_span(self.topology)
        self.base = free_port_range(span + 3)  # every tray's ports, the controller's two, MQTT
        self.controller = f"127.0.0.1:{self.base + span}"
        self.mqtt = f"127.0.0.1:{self.base + span + 2}"
        self.manifest, self.state, self.with_controller = str(manifest), state, controller
        self.options = list(options)
        self.ctl = Fusionctl(self.controller, token_file=self.state / "admin.token")
        scheme = tray_addresses(self.topology, "127.0.0.1", self.base)
        self.addresses = {name: a.grpc for name, a in scheme.items()}
        self.record: dict[str, Any] = {}

    async def up(self) -> None:
        await self.ctl.ok(
            "rack", "up", "--manifest", self.manifest, "--detach", "--base-port", str(self.base),
            "--controller-listen", self.controller, "--state-dir", str(self.state),
            "--mqtt-listen", self.mqtt, *(() if self.with_controller else ("--no-controller",)),
            *self.options, timeout=90,
        )  # fmt: skip
        self.record = RackState(self.state).record()

    def credentials(self) -> Credentials:
        """The rack secret and admin token `rack up` made in the state directory: what the
        rack's own parts and its administrator present (fabric-internal calls, mutations)."""
        return Credentials(read_secret_file(self.state / "rack.secret"),
                           (self.state / "admin.token").read_text().strip())  # fmt: skip

    def pid(self, name: str) -> int:
        """The process of `name`: a tray, "controller" or "mosquitto"."""
        tray = name not in ("controller", "mosquitto")
        state = RackState(self.state)
        pids = state.tray_pids() if tray else state.pids()
        return int(pids[name])

    def pause(self, name: str) -> None:
        """SIGSTOP: the process holds its sockets and answers nothing."""
        os.kill(self.pid(name), signal.SIGSTOP)

    def resume(self, name: str) -> None:
        os.kill(self.pid(name), signal.SIGCONT)

    def kill(self, name: str) -> None:
        """SIGKILL `name` and wait until it is gone."""
        pid = self.pid(name)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)
        raise AssertionError(f"{name} (pid {pid}) still runs after SIGKILL")

    async def restart(self, name: str) -> float:
        """`fusionctl rack restart NAME`: seconds until it was ready."""
        out = await self.ctl.ok("rack", "restart", name, "--state-dir", str(self.state),
                                "-o", "json", timeout=60)  # fmt: skip
        return float(json.loads(out)["seconds"])

    async def down(self) -> None:
        for tray in self.topology.trays:
            # A paused process would hold `rack down` until its stop times out.
            with contextlib.suppress(OSError, KeyError, ValueError):
                self.resume(tray.name)
        await self.ctl("rack", "down", "--state-dir", str(self.state), timeout=60)


async def hang_kill_restart(rack: ProcessRack, switch: str) -> None:
    """What a switch tray goes through in the fault tests: SIGSTOPped past the hop deadline,
    resumed, killed -9, restarted, with a little load-time between each."""
    await asyncio.sleep(0.5)
    rack.pause(switch)
    await asyncio.sleep(HOP_DEADLINE + 1)
    rack.resume(switch)
    await asyncio.sleep(1.0)
    rack.kill(switch)
    await asyncio.sleep(0.5)
    await rack.restart(switch)
    await asyncio.sleep(0.5)


async def active_links(rack: ProcessRack, tray: str) -> int:
    """How many of `tray`'s links are ACTIVE, as its agent says."""
    async with open_channel(rack.addresses[tray]) as channel:
        status = await tray_pb2_grpc.TrayStub(channel).GetStatus(
            tray_pb2.GetStatusRequest(), timeout=5
        )
    return sum(link.state == LinkState.ACTIVE for link in status.status.links)


def word_through(topology: Topology, target: int, switch: str, skip: int = 0) -> int:
    """The `skip`-th 8-byte word of accelerator `target` whose ops cross switch tray `switch`
    while every plane is usable (planes are chosen by address hash)."""
    usable = np.ones(topology.links_per_accelerator, bool)
    for offset in range(0, 1 << 24, 256):
        address = fabric_address(target, offset)
        if topology.switch_chips[choose_plane(address, usable)].tray == switch:
            if not skip:
                return address
            skip -= 1
    raise AssertionError(f"no word of accelerator {target} crosses {switch}")


@dataclass
class Tally:
    """What the initiators of a load were told, op by op."""

    ok: int = 0
    olds: list[int] = field(default_factory=list)  # old values returned by successful adds
    failed: collections.Counter[str] = field(default_factory=collections.Counter)
    by_api: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def unknown(self) -> int:
        """Ops told they may have been applied (DEADLINE_EXCEEDED)."""
        return self.failed["DEADLINE_EXCEEDED"]

    def __str__(self) -> str:
        failures = ", ".join(f"{k} {v}" for k, v in sorted(self.failed.items())) or "none"
        apis = ", ".join(f"{k} {v}" for k, v in sorted(self.by_api.items()))
        return f"{self.ok} ok ({apis}); failed: {failures}"


def _add(address: int) -> memory_pb2.AtomicRmwOp:
    return memory_pb2.AtomicRmwOp(
        address=address, op=AtomicOp.ADD, data_type=U64, operand=memory_pb2.Scalar(uint_value=1)
    )


class CounterLoad:
    """`initiators` ((tray, accelerator) pairs) add 1 to the word at `address`, one op in
    flight each, turning through the four ways in, until `stop` is set."""

    APIS = ("unary", "execute", "packed", "stream")

    def __init__(self, rack: ProcessRack, initiators: Iterable[tuple[str, int]], address: int):
        self.rack, self.initiators, self.address = rack, list(initiators), address
        self.tally = Tally()

    async def run(self, stop: asyncio.Event) -> Tally:
        await asyncio.gather(*(self._initiator(tray, a, stop) for tray, a in self.initiators))
        return self.tally

    async def _initiator(self, tray: str, initiator: int, stop: asyncio.Event) -> None:
        async with open_channel(self.rack.addresses[tray]) as channel:
            memory = memory_pb2_grpc.MemoryStub(channel)
            stream = memory.Stream(timeout=600)
            ids = iter(range(1, 1 << 62))
            try:
                turn = initiator
                while not stop.is_set():
                    api = self.APIS[turn % len(self.APIS)]
                    turn += 1
                    try:
                        old = await self._one(memory, stream, next(ids), api, initiator)
                    except grpc.aio.AioRpcError as error:
                        self.tally.failed[error.code().name] += 1
                        continue
                    except _OpFailed as failure:
                        self.tally.failed[failure.code] += 1
                        continue
                    self.tally.ok += 1
                    self.tally.by_api[api] += 1
                    self.tally.olds.append(old)
            finally:
                stream.cancel()

    async def _one(self, memory: memory_pb2_grpc.MemoryStub, stream: Any, request_id: int,
                   api: str, initiator: int) -> int:  # fmt: skip
        op = memory_pb2.MemoryOp(atomic=_add(self.address))
        if api == "unary":
            request = memory_pb2.AtomicRequest(initiator=initiator, address=self.address,
                                               op=AtomicOp.ADD, data_type=U64,
                                               operand=memory_pb2.Scalar(uint_value=1))  # fmt: skip
            return (await memory.Atomic(request, timeout=DEADLINE)).old_value.uint_value
        if api == "execute":
            response = await memory.Execute(
                memory_pb2.ExecuteRequest(initiator=initiator, ops=[op]), timeout=DEADLINE
            )
            return _result(response.results[0])
        if api == "packed":
            records = packed.pack_atomics([self.address], AtomicOp.ADD, U64, [1])
            response = await memory.ExecutePacked(
                memory_pb2.ExecutePackedRequest(
                    initiator=initiator, format_version=1, ops=records.tobytes()
                ),
                timeout=DEADLINE,
            )
            (record,) = np.frombuffer(response.results, packed.PACKED_RESULT_DTYPE)
            if record["status"]:
                raise _OpFailed(grpc_code_name(int(record["status"])))
            return int(record["value"])
        await stream.write(memory_pb2.StreamRequest(request_id=request_id, initiator=initiator,
                                                    op=op))  # fmt: skip
        async with asyncio.timeout(DEADLINE):
            answer = await stream.read()
        assert answer.request_id == request_id
        return _result(answer.result)


class _OpFailed(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def grpc_code_name(number: int) -> str:
    return _CODE_NAMES.get(number, str(number))


def _result(result: memory_pb2.OpResult) -> int:
    if result.status.code:
        raise _OpFailed(grpc_code_name(result.status.code))
    return result.old_value.uint_value


async def read_word(rack: ProcessRack, tray: str, initiator: int, address: int) -> int:
    async with open_channel(rack.addresses[tray]) as channel:
        answer = await memory_pb2_grpc.MemoryStub(channel).Load(
            memory_pb2.LoadRequest(initiator=initiator, address=address, size=8), timeout=DEADLINE
        )
    return int.from_bytes(answer.data, "little")


async def write_word(rack: ProcessRack, tray: str, initiator: int, address: int,
                     value: int) -> None:  # fmt: skip
    async with open_channel(rack.addresses[tray]) as channel:
        await memory_pb2_grpc.MemoryStub(channel).Store(
            memory_pb2.StoreRequest(initiator=initiator, address=address,
                                    data=value.to_bytes(8, "little")), timeout=DEADLINE,
        )  # fmt: skip


@dataclass
class RegisterOp:
    """One op of a recorded history (see tests/support/linearizability.py)."""

    client: int
    address: int
    kind: str  # "load", "store", "cas"
    args: tuple[int, ...]
    invoke: float
    response: float | None = None  # None: the outcome is unknown (it may have been applied)
    result: int | None = None


class RegisterLoad:
    """`initiators` do random loads, stores and compare-and-swaps (of small values, so CAS
    often succeeds) on `addresses`, one op in flight each, recording every op that was applied
    or may have been: ops that failed unapplied are left out."""

    def __init__(self, rack: ProcessRack, initiators: Iterable[tuple[str, int]],
                 addresses: list[int], seed: int) -> None:  # fmt: skip
        self.rack, self.initiators, self.addresses = rack, list(initiators), addresses
        self.random = random.Random(seed)
        self.history: list[RegisterOp] = []
        self.failed: collections.Counter[str] = collections.Counter()

    async def run(self, stop: asyncio.Event) -> list[RegisterOp]:
        await asyncio.gather(*(self._initiator(tray, a, stop) for tray, a in self.initiators))
        return self.history

    async def _initiator(self, tray: str, initiator: int, stop: asyncio.Event) -> None:
        async with open_channel(self.rack.addresses[tray]) as channel:
            memory = memory_pb2_grpc.MemoryStub(channel)
            while not stop.is_set():
                address = self.random.choice(self.addresses)
                kind = self.random.choice(("load", "store", "cas"))
                args: tuple[int, ...] = ()
                if kind == "store":
                    args = (self.random.randrange(4),)
                elif kind == "cas":
                    args = (self.random.randrange(4), self.random.randrange(4))
                op = RegisterOp(initiator, address, kind, args, time.monotonic())
                try:
                    op.result = await self._apply(memory, initiator, op)
                except grpc.aio.AioRpcError as error:
                    self.failed[error.code().name] += 1
                    if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                        self.history.append(op)  # it may have been applied
                    continue
                op.response = time.monotonic()
                self.history.append(op)

    async def _apply(self, memory: memory_pb2_grpc.MemoryStub, initiator: int,
                     op: RegisterOp) -> int | None:  # fmt: skip
        if op.kind == "load":
            answer = await memory.Load(
                memory_pb2.LoadRequest(initiator=initiator, address=op.address, size=8),
                timeout=DEADLINE,
            )
            return int.from_bytes(answer.data, "little")
        if op.kind == "store":
            await memory.Store(
                memory_pb2.StoreRequest(initiator=initiator, address=op.address,
                                        data=op.args[0].to_bytes(8, "little")),
                timeout=DEADLINE,
            )  # fmt: skip
            return None
        expected, new = op.args
        answer = await memory.Atomic(
            memory_pb2.AtomicRequest(
                initiator=initiator, address=op.address, op=AtomicOp.COMPARE_SWAP,
                data_type=U64, operand=memory_pb2.Scalar(uint_value=new),
                compare=memory_pb2.Scalar(uint_value=expected),
            ),
            timeout=DEADLINE,
        )  # fmt: skip
        return answer.old_value.uint_value


async def run_while(load: Callable[[asyncio.Event], Any], faults: Callable[[], Any]) -> Any:
    """Run `load` until `faults()` (a coroutine function dealing faults out) returns; the
    load's result."""
    stop = asyncio.Event()
    running = asyncio.ensure_future(load(stop))
    try:
        await faults()
    finally:
        stop.set()
    return await running


async def eventually(check: Callable[[], Any], what: str, timeout: float = 15) -> Any:
    """The first truthy result of `check` (a coroutine function), polled."""
    deadline = time.monotonic() + timeout
    while True:
        if result := await check():
            return result
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.05)
