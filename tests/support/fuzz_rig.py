"""The rig the fuzzer runs on (`tests.support.fuzzer.Fuzzer` is this rig with its attacks): a
rack of real processes (`tests.support.process_racks.ProcessRack`) in the fuzz rack's shape,
the channels to it, the calls that record their status, and the invariants checked after each
phase.

* `FUZZ_MANIFEST`, `SERVICES` (fusionrack.v1's, and the health checking and reflection every
  server offers; which servers serve each) and `methods()`, every fuzzed RPC from the
  generated descriptors; `CONTROL_METHODS`, those fuzzed in their own phase.
* `FuzzRig`: an event loop on a thread of its own, one channel per server (allowed to send
  more than the servers accept) and the rig's own authenticated ones; `unary`,
  `server_stream` and `bidi` send a raw body and count its status per RPC (`Tally`) and keep
  findings (`Finding`): UNKNOWN or INTERNAL (also inside per-op results and reflection's
  in-band errors), calls past their deadline, dead processes, RSS growth, a broken invariant;
  `prepare`, `check`, `check_rss`, `reset` and `report`.
* `call_options()`: how a fuzz call is authenticated, in one place (the rack's credentials).

Invariants. Memory fuzzing runs on compute trays 1-4 (initiators 0-7) of a rack whose only
partition holds accelerators 0-7; the sentinel words live in accelerator 9 (compute tray 5),
which is in no partition: nothing the fuzzer sends may reach them, whatever its address, so an
unchanged sentinel checks isolation too. Fuzzed control calls (controller mutations,
ApplyConfig, faults, admin states, traffic) run in their own phase, after which every switch
tray's committed tables must equal what the controller says (the record of the fuzzed calls
that succeeded); then the rig undoes them through the controller (`reset`), and the tables
must be the initial ones again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor as pbd
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from fusionrack.auth import Credentials
from fusionrack.emulator import (
    fabric_address,
)
from fusionrack.rpc import MAX_MESSAGE_BYTES, open_channel
from fusionrack.v1 import (
    common_pb2,
    controller_pb2,
    controller_pb2_grpc,
    memory_pb2,
    switch_pb2,
    switch_pb2_grpc,
    tray_pb2,
)
from tests.support.fuzz_strategies import Facts, op_statuses
from tests.support.process_racks import ProcessRack, grpc_code_name

__all__ = [
    "BAD_CODES",
    "FUZZ_MANIFEST",
    "SENTINEL",
    "SERVICES",
    "Finding",
    "FuzzRig",
    "Method",
    "Tally",
    "authenticated_hello",
    "call_options",
    "methods",
]

# 5 compute trays of 2 GPUs, 3 switch trays of 2 chips, no default partition (the harness
# makes its own, leaving accelerators 8 and 9 out).
FUZZ_MANIFEST = """\
version: 1
name: fuzz
description: "Fuzzing: 10 GPUs on 5 compute trays, 3 switch trays x 2 chips"
fabric:
  generation: nvlink5
  switch_chips_per_tray: 2
  ports_per_switch_chip: 16
  link_bandwidth: 100GB/s
  links_per_accelerator: 6
  default_partition: false
  multicast: {max_groups: 16, max_groups_per_partition: 4, granularity: 64KiB}
trays:
  - kind: compute
    count: 5
    accelerators: 2
    accelerator: {kind: gpu, model: B200, hbm: 1GiB}
  - kind: switch
    count: 3
"""
MEMBERS = list(range(8))  # the fuzz partition
SENTINEL = 9  # accelerator holding the sentinel words (compute-05, in no partition)
SENTINEL_OFFSETS = (0, 4096, 1 << 29)
SENTINEL_WORD = 0x5E47_14E1_DEAD_BEEF
MEMORY_TRAYS = ("compute-01", "compute-02", "compute-03", "compute-04")
FORGED_TRAY = "compute-05"  # the compute tray whose hello the Forward fuzzer forges

# Which servers serve a service (None: the controller). Health checking and reflection are
# on every server, built alike (fusionrack.rpc.start_server): one of each kind is fuzzed.
EVERY_KIND = ("compute-01", "switch-1", "controller")
HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"
SERVICES: dict[str, tuple[str, ...] | None] = {
    "fusionrack.v1.Memory": MEMORY_TRAYS,
    "fusionrack.v1.Switch": ("switch-1", "switch-2", "switch-3"),
    "fusionrack.v1.Tray": ("compute-01", "switch-1"),
    "fusionrack.v1.Controller": None,
    HEALTH: EVERY_KIND,
    REFLECTION: EVERY_KIND,
}
# Methods that change the fabric's control state: fuzzed in their own phase.
CONTROL_METHODS = {
    "Switch.ApplyConfig", "Tray.InjectFault", "Tray.ClearFault", "Tray.SetAdminState",
    "Tray.SetTraffic", "Controller.CreatePartition", "Controller.DeletePartition",
    "Controller.AddAccelerators", "Controller.RemoveAccelerators",
    "Controller.CreateMulticastGroup", "Controller.DeleteMulticastGroup",
    "Controller.SetAdminState", "Controller.InjectFault", "Controller.ClearFault",
    "Controller.StartTraffic", "Controller.StopTraffic",
}  # fmt: skip
# Statuses that say the server failed, not the request.
BAD_CODES = {"UNKNOWN", "INTERNAL"}
DEADLINE = 10.0  # every fuzz call's deadline
TAKEN_BACK_DEADLINE = 3.0  # a taken-back Forward stream ends in milliseconds
SLACK = 2.0  # a call that returns later than its deadline plus this has overrun it
POOL_FILES = (common_pb2, controller_pb2, memory_pb2, switch_pb2, tray_pb2, health_pb2,
              reflection_pb2)  # fmt: skip


@dataclass(frozen=True)
class Method:
    """One RPC, from its descriptor."""

    service: str  # full service name
    name: str
    request: pbd.Descriptor
    response: pbd.Descriptor
    client_streaming: bool
    server_streaming: bool

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"

    @property
    def key(self) -> str:
        """ "Service.Method", as reports show it."""
        return f"{self.service.rsplit('.', 1)[-1]}.{self.name}"


def methods() -> list[Method]:
    """Every method of every fuzzed service, from the generated descriptors."""
    found = []
    for module in POOL_FILES:
        for service in module.DESCRIPTOR.services_by_name.values():
            if service.full_name not in SERVICES:
                continue
            for m in service.methods:
                found.append(Method(service.full_name, m.name, m.input_type, m.output_type,
                                    m.client_streaming, m.server_streaming))  # fmt: skip
    return found


def call_options(credentials: Credentials | None) -> dict[str, Any]:
    """How a fuzz call is authenticated: keyword arguments for every gRPC call. With the rack's
    credentials (its secret and admin token) the fuzzer reaches past the guard into every
    method; without, UNAUTHENTICATED or PERMISSION_DENIED is a fine answer."""
    return {"metadata": credentials.metadata()} if credentials else {}


def authenticated_hello(credentials: Credentials | None, hello: Any) -> Any:
    """The framed transport's and Forward's admitted hello: with the rack's secret, if any."""
    if credentials and credentials.secret:
        hello.rack_secret = credentials.secret
    return hello


@dataclass
class Tally:
    """What one RPC (or attack) was answered."""

    cases: int = 0
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    op_statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    slowest: float = 0.0


@dataclass
class Finding:
    what: str  # "INTERNAL", "deadline", "dead process", "rss", "invariant", ...
    where: str  # the RPC or process
    detail: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}: {self.detail}"


class FuzzRig:
    """Calls against a running `ProcessRack` from a synchronous caller (hypothesis drives the
    cases; `fuzzer.Fuzzer` is this rig with its attacks); the calls themselves run on an event
    loop of a thread of their own."""

    def __init__(self, rack: ProcessRack, *, forge: bool = True,
                 authenticated: bool = True) -> None:  # fmt: skip
        """`forge`: also send Forward streams and framed connections an admitted hello as
        FORGED_TRAY (with the rack's secret, when `authenticated`, the fuzzer is one of the
        rack's own parts: it and the real tray then take the switch's stream from each
        other)."""
        self.rack, self.forge = rack, forge
        # `authenticated`: calls carry the rack's secret and admin token (else none).
        self.credentials = rack.credentials() if authenticated else None
        self.auth = call_options(self.credentials)
        self.tallies: dict[str, Tally] = collections.defaultdict(Tally)
        self.findings: list[Finding] = []
        self.examples: dict[tuple[str, str], bytes] = {}  # smallest request per finding
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz loop",
                                       daemon=True)  # fmt: skip
        self.thread.start()
        self.channels: dict[str, grpc.aio.Channel] = {}
        self.owned: dict[str, grpc.aio.Channel] = {}
        self.blocking: dict[str, grpc.Channel] = {}
        self.facts = Facts(avoid=SENTINEL)
        self.rss_before: dict[str, int] = {}

    # -- plumbing --------------------------------------------------------------------------

    def run(self, coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def close_all() -> None:
            for channel in [*self.channels.values(), *self.owned.values()]:
                await channel.close()

        self.run(close_all())
        for channel in self.blocking.values():
            channel.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def address(self, server: str) -> str:
        return self.rack.controller if server == "controller" else self.rack.addresses[server]

    def channel(self, server: str) -> grpc.aio.Channel:
        """One channel per server, allowed to send more than the servers accept."""
        if server not in self.channels:
            limit = 2 * MAX_MESSAGE_BYTES
            options = [("grpc.max_send_message_length", limit),
                       ("grpc.max_receive_message_length", limit)]  # fmt: skip
            self.channels[server] = grpc.aio.insecure_channel(self.address(server), options=options)
        return self.channels[server]

    def own(self, server: str) -> grpc.aio.Channel:
        """The rig's own channel to a server (set-up, invariants): always with the rack's
        credentials, whatever the fuzz calls present."""
        if server not in self.owned:
            self.owned[server] = open_channel(self.address(server),
                                              credentials=self.rack.credentials())  # fmt: skip
        return self.owned[server]

    def servers(self, method: Method, request: Any = None) -> tuple[str, ...]:
        """Where a case goes: a Memory request to the tray of its initiator (when it names
        one of the fuzzed trays' accelerators), so it gets past the first check."""
        trays = SERVICES[method.service] or ("controller",)
        if method.service == "fusionrack.v1.Memory":
            first = request[0] if isinstance(request, list) else request
            initiator = getattr(first, "initiator", 0)
            return (trays[initiator // 2] if initiator < 2 * len(trays) else trays[0],)
        return trays

    # -- the rack's facts and invariants ------------------------------------------------------

    def prepare(self) -> None:
        """Make the rack's starting state (the fuzz partition, a multicast group in it, the
        sentinel words) and learn its facts."""
        self.run(self._prepare())

    async def _prepare(self) -> None:
        ctl = controller_pb2_grpc.ControllerStub(self.own("controller"))
        accelerators = (await ctl.ListAccelerators(controller_pb2.ListAcceleratorsRequest(),
                                                   timeout=DEADLINE)).accelerators  # fmt: skip
        uid = {a.index: a.uid for a in accelerators}
        existing = await ctl.ListPartitions(controller_pb2.ListPartitionsRequest(), timeout=10)
        self.facts = Facts(
            accelerators=len(accelerators),
            trays=tuple(t.name for t in self.rack.topology.trays),
            uids=tuple(uid[i] for i in range(len(accelerators))),
            digest=self.rack.topology.manifest.digest,
            avoid=SENTINEL,
            services=tuple(SERVICES),
            files=tuple(module.DESCRIPTOR.name for module in POOL_FILES),
        )
        if not existing.partitions:
            await self._create_partition(ctl)
            await self._create_group(ctl)
        for offset in SENTINEL_OFFSETS:
            await self._memory_on(FORGED_TRAY).Store(
                memory_pb2.StoreRequest(initiator=SENTINEL, address=self._sentinel(offset),
                                        data=SENTINEL_WORD.to_bytes(8, "little")),
                timeout=DEADLINE,
            )  # fmt: skip
        self.initial_tables = await self._switch_tables()
        self.rss_before = self.rss()

    async def _create_partition(self, ctl: Any) -> None:
        uids = [self.facts.uids[a] for a in MEMBERS]
        await ctl.CreatePartition(
            controller_pb2.CreatePartitionRequest(
                name="fuzz", id=1, uids=common_pb2.UidList(uids=uids)
            ),
            timeout=DEADLINE,
        )

    @staticmethod
    async def _create_group(ctl: Any) -> None:
        await ctl.CreateMulticastGroup(
            controller_pb2.CreateMulticastGroupRequest(
                partition=common_pb2.PartitionRef(id=1), size_bytes=65536, id=1,
                members=[controller_pb2.MulticastMemberSpec(
                    accelerator=common_pb2.AcceleratorRef(index=a), offset=1 << 20)
                    for a in MEMBERS[:4]],
            ),
            timeout=DEADLINE,
        )  # fmt: skip

    def _memory_on(self, tray: str) -> Any:
        from fusionrack.v1 import memory_pb2_grpc

        return memory_pb2_grpc.MemoryStub(self.own(tray))

    @staticmethod
    def _sentinel(offset: int) -> int:
        return fabric_address(SENTINEL, offset)

    async def _sentinels(self) -> list[int]:
        words = []
        for offset in SENTINEL_OFFSETS:
            answer = await self._memory_on(FORGED_TRAY).Load(
                memory_pb2.LoadRequest(initiator=SENTINEL, address=self._sentinel(offset),
                                       size=8),
                timeout=DEADLINE,
            )  # fmt: skip
            words.append(int.from_bytes(answer.data, "little"))
        return words

    async def _switch_tables(self) -> dict[str, tuple[Any, ...]]:
        """Every switch tray's committed partitions and groups, comparable."""
        tables = {}
        for name in SERVICES["fusionrack.v1.Switch"] or ():
            answer = await switch_pb2_grpc.SwitchStub(self.own(name)).GetConfig(
                switch_pb2.GetConfigRequest(), timeout=DEADLINE
            )
            tables[name] = _tables(answer.config)
        return tables

    async def _controller_tables(self) -> tuple[Any, ...]:
        """The tables the controller's desired state makes."""
        ctl = controller_pb2_grpc.ControllerStub(self.own("controller"))
        parts = await ctl.ListPartitions(controller_pb2.ListPartitionsRequest(), timeout=DEADLINE)
        groups = await ctl.ListMulticastGroups(controller_pb2.ListMulticastGroupsRequest(),
                                               timeout=DEADLINE)  # fmt: skip
        entries = sorted((p.id, tuple(sorted(m.accelerator for m in p.members)))
                         for p in parts.partitions)  # fmt: skip
        return (tuple(entries), tuple(sorted(g.id for g in groups.groups)))

    def rss(self) -> dict[str, int]:
        """Resident set size in KiB of every process of the rack."""
        sizes = {}
        for name in [*(t.name for t in self.rack.topology.trays), "controller"]:
            with contextlib.suppress(OSError, KeyError, ValueError):
                status = Path(f"/proc/{self.rack.pid(name)}/status").read_text()
                sizes[name] = int(status.split("VmRSS:")[1].split()[0])
        return sizes

    def check(self, phase: str, *, tables: str = "initial") -> None:
        """Findings for the invariants after a phase: every process alive, the sentinel words
        intact, the switch tables equal to the initial ones or to the controller's."""
        for name in [*(t.name for t in self.rack.topology.trays), "controller"]:
            try:
                os.kill(self.rack.pid(name), 0)
            except ProcessLookupError:
                self.findings.append(Finding("dead process", name, f"after {phase}"))
        try:
            words = self.run(self._sentinels(), timeout=60)
            if words != [SENTINEL_WORD] * len(SENTINEL_OFFSETS):
                seen = [hex(w) for w in words]
                self.findings.append(Finding("invariant", "sentinel", f"after {phase}: {seen}"))
            now = self.run(self._settled_tables(tables), timeout=60)
            if now is not None:
                self.findings.append(Finding("invariant", "partition table",
                                             f"after {phase}: {now}"))  # fmt: skip
        except grpc.aio.AioRpcError as error:
            self.findings.append(Finding("invariant", "check", f"after {phase}: {error}"))

    async def _settled_tables(self, against: str) -> str | None:
        """None once the switch trays' tables equal what they should (polled for a few
        seconds: the controller's reconcile may still be pushing), else what differs."""
        deadline = time.monotonic() + 10
        while True:
            switches = await self._switch_tables()
            want = self.initial_tables if against == "initial" else None
            if want is None:
                expected = await self._controller_tables()
                want = dict.fromkeys(switches, expected)
            if switches == want:
                return None
            if time.monotonic() > deadline:
                return f"switches {switches} vs {against} {want}"
            await asyncio.sleep(0.2)

    def check_rss(self, limit_kib: int = 256 * 1024) -> dict[str, tuple[int, int]]:
        """RSS before and after per process; growth past `limit_kib` is a finding."""
        after = self.rss()
        growth = {n: (self.rss_before.get(n, 0), kib) for n, kib in after.items()}
        for name, (before, now) in growth.items():
            if now - before > limit_kib:
                self.findings.append(Finding("rss", name, f"{before} -> {now} KiB"))
        return growth

    # -- one call ----------------------------------------------------------------------------

    def record(self, key: str, code: str, elapsed: float, request: bytes, deadline: float,
               ops: Iterable[int] = ()) -> None:  # fmt: skip
        tally = self.tallies[key]
        tally.cases += 1
        tally.statuses[code] += 1
        tally.slowest = max(tally.slowest, elapsed)
        for number in ops:
            tally.op_statuses[grpc_code_name(number)] += 1
            if grpc_code_name(number) in BAD_CODES:
                self._found(key, f"op {grpc_code_name(number)}", request)
        if code in BAD_CODES:
            self._found(key, code, request)
        if code == "DEADLINE_EXCEEDED" or elapsed > deadline + SLACK:
            self._found(key, "deadline", request, f"{elapsed:.1f} s")

    def _found(self, key: str, what: str, request: bytes, detail: str = "") -> None:
        known = self.examples.get((key, what))
        if known is None:
            self.findings.append(Finding(what, key, detail))
        if known is None or len(request) < len(known):
            self.examples[(key, what)] = request

    async def unary(self, server: str, method: Method, body: bytes, key: str | None = None,
                    deadline: float = DEADLINE) -> None:  # fmt: skip
        """One unary call with a raw body; its status (and per-op statuses) recorded."""
        call = self.channel(server).unary_unary(method.path)
        start = time.monotonic()
        code, ops = "OK", []
        try:
            answer = await call(body, timeout=deadline, **self.auth)
            response = message_factory.GetMessageClass(method.response).FromString(answer)
            ops = op_statuses(response)
        except grpc.aio.AioRpcError as error:
            code = error.code().name
            if code in BAD_CODES:
                self.examples.setdefault((key or method.key, f"{code} message"),
                                         (error.details() or "").encode())  # fmt: skip
        self.record(key or method.key, code, time.monotonic() - start, body, deadline, ops)

    async def server_stream(self, server: str, method: Method, body: bytes,
                            key: str | None = None) -> None:  # fmt: skip
        """Open a server stream, read what comes within 0.2 s (at most 2 messages), and
        cancel it: its status is the error it ended with, or OK for a stream still open."""
        call = self.channel(server).unary_stream(method.path)(body, timeout=DEADLINE,
                                                              **self.auth)  # fmt: skip
        start = time.monotonic()
        code = "OK"
        try:
            async with asyncio.timeout(0.2):
                for _ in range(2):
                    if await call.read() is grpc.aio.EOF:
                        break
        except TimeoutError:
            pass
        except grpc.aio.AioRpcError as error:
            code = error.code().name
        finally:
            call.cancel()
        self.record(key or method.key, code, time.monotonic() - start, body, DEADLINE)

    async def bidi(self, server: str, method: Method, frames: list[bytes], key: str | None = None,
                   answers: int = 0, deadline: float = DEADLINE) -> None:  # fmt: skip
        """Write `frames` on a bidirectional stream, half-close it and read to its end. With
        gRPC's blocking client in a thread: the asyncio client reports a stream the server
        ended while its writes were still in flight as INTERNAL ("Internal error from
        Core") instead of the server's status."""
        key = key or method.key
        cls = message_factory.GetMessageClass(method.response)
        start = time.monotonic()
        code, ops, got, details = await asyncio.to_thread(
            self._bidi, server, method, frames, cls, deadline
        )
        if code in BAD_CODES:
            self.examples.setdefault((key, f"{code} message"), details.encode())
        self.record(key, code, time.monotonic() - start, b"".join(frames), deadline, ops)
        if code == "OK" and got < answers:
            self._found(key, "unanswered", b"".join(frames), f"{got} of {answers} answers")

    def _bidi(self, server: str, method: Method, frames: list[bytes], cls: Any,
              deadline: float) -> tuple[str, list[int], int, str]:  # fmt: skip
        call = self.blocking_channel(server).stream_stream(method.path)
        ops: list[int] = []
        got = 0
        try:
            for answer in call(iter(frames), timeout=deadline, **self.auth):
                ops.extend(op_statuses(cls.FromString(answer)))
                got += 1
        except grpc.RpcError as error:
            return error.code().name, ops, got, error.details() or ""
        return "OK", ops, got, ""

    def blocking_channel(self, server: str) -> grpc.Channel:
        if server not in self.blocking:
            limit = 2 * MAX_MESSAGE_BYTES
            options = [("grpc.max_send_message_length", limit),
                       ("grpc.max_receive_message_length", limit)]  # fmt: skip
            self.blocking[server] = grpc.insecure_channel(self.address(server), options=options)
        return self.blocking[server]

    def report(self) -> str:
        """Cases and statuses per RPC, then the findings with the smallest request of each."""
        lines = [f"{'rpc':42} {'cases':>6}  statuses (per-op statuses)"]
        for key in sorted(self.tallies):
            tally = self.tallies[key]
            statuses = ", ".join(f"{c} {n}" for c, n in tally.statuses.most_common())
            ops = ", ".join(f"{c} {n}" for c, n in tally.op_statuses.most_common())
            lines.append(f"{key:42} {tally.cases:6}  {statuses}" + (f" ({ops})" if ops else ""))
        lines.append(f"findings: {len(self.findings)}")
        lines.extend(f"  {finding}" for finding in self.findings)
        for (key, what), example in sorted(self.examples.items()):
            lines.append(f"  example {key} {what}: {example[:200]!r}")
        return "\n".join(lines)

    def reset(self) -> None:
        """Undo what the control phase's fuzzed calls did, through the controller: traffic
        stopped, faults cleared, partitions and groups back to the starting ones."""
        self.run(self._reset(), timeout=120)

    async def _reset(self) -> None:
        ctl = controller_pb2_grpc.ControllerStub(self.own("controller"))
        t = DEADLINE
        await ctl.StopTraffic(controller_pb2.StopTrafficRequest(all=True), timeout=t)
        for fault in (await ctl.ListFaults(controller_pb2.ListFaultsRequest(), timeout=t)).faults:
            await ctl.ClearFault(common_pb2.ClearFaultRequest(fault_id=fault.id), timeout=t)
        groups = await ctl.ListMulticastGroups(controller_pb2.ListMulticastGroupsRequest(),
                                               timeout=t)  # fmt: skip
        for group in groups.groups:
            if group.id != 1:
                await ctl.DeleteMulticastGroup(
                    controller_pb2.DeleteMulticastGroupRequest(id=group.id), timeout=t
                )
        parts = await ctl.ListPartitions(controller_pb2.ListPartitionsRequest(), timeout=t)
        for part in parts.partitions:
            if part.id != 1:
                await ctl.DeletePartition(
                    controller_pb2.DeletePartitionRequest(
                        partition=common_pb2.PartitionRef(id=part.id)
                    ),
                    timeout=t,
                )
                continue
            have = {m.accelerator: m.uid for m in part.members}
            uid = dict(zip(range(self.facts.accelerators), self.facts.uids, strict=True))
            ref = common_pb2.PartitionRef(id=1)
            if extra := [u for a, u in have.items() if a not in MEMBERS]:
                await ctl.RemoveAccelerators(controller_pb2.RemoveAcceleratorsRequest(
                    partition=ref, uids=common_pb2.UidList(uids=extra)), timeout=t)  # fmt: skip
            if missing := [uid[a] for a in MEMBERS if a not in have]:
                await ctl.AddAccelerators(controller_pb2.AddAcceleratorsRequest(
                    partition=ref, uids=common_pb2.UidList(uids=missing)), timeout=t)  # fmt: skip
        if 1 not in {p.id for p in parts.partitions}:
            await self._create_partition(ctl)
        if 1 not in {g.id for g in groups.groups}:
            await self._create_group(ctl)


def _tables(config: Any) -> tuple[Any, ...]:
    entries = sorted((p.id, tuple(sorted(p.accelerators))) for p in config.partitions)
    return (tuple(entries), tuple(sorted(g.id for g in config.multicast_groups)))
