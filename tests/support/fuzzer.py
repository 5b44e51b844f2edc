"""Every RPC of the rack fuzzed from the proto descriptors: shared by the quick fuzz test
(tests/integration/test_fuzz.py) and the long run (bench/fuzz.py).

* `fuzz_strategies.request_strategy(descriptor, facts)`: what is sent, a hypothesis strategy for
  any request message, built field by field from its descriptor (a new RPC or field is fuzzed
  without new code).
* `Fuzzer`: the rig (`fuzz_rig.FuzzRig`: the rack of real processes, its channels, the calls
  that count statuses and keep findings, the invariants) with the attacks: every method of
  every service called with drawn requests (`fuzz_round`: the data plane and reads, then the
  control mutations, each phase followed by its checks), and the things a hostile client does
  besides: raw random bytes as bodies and as the messages of streams, messages just over the
  limit, Forward streams taken back by the real tray, streams opened and abandoned, watchers
  that never read, the framed data plane fed random and nearly valid frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from typing import Any

import grpc
from google.protobuf import message_factory
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from fusionrack.agent.forward import heartbeat_interval_ms
from fusionrack.emulator import (
    fabric_address,
)
from fusionrack.rpc import MAX_MESSAGE_BYTES
from fusionrack.v1 import (
    common_pb2,
    controller_pb2,
    controller_pb2_grpc,
    memory_pb2,
    switch_pb2,
    switch_pb2_grpc,
    tray_pb2,
)
from tests.support.fuzz_rig import (
    CONTROL_METHODS,
    DEADLINE,
    FORGED_TRAY,
    HEALTH,
    REFLECTION,
    SENTINEL,
    SERVICES,
    TAKEN_BACK_DEADLINE,
    FuzzRig,
    Method,
    authenticated_hello,
    methods,
)
from tests.support.fuzz_strategies import op_statuses, request_strategy
from tests.support.process_racks import grpc_code_name

__all__ = ["Fuzzer"]


class Fuzzer(FuzzRig):
    """The rig (`FuzzRig`) with its attacks: drawn requests for every method, and what a hostile
    client does besides."""

    # -- cases from hypothesis ---------------------------------------------------------------

    def fuzz_method(self, method: Method, cases: int, rng_seed: int) -> None:
        """`cases` hypothesis-drawn requests of `method`, each sent to every server of it."""
        request = request_strategy(method.request, self.facts)
        if method.client_streaming:
            strategy: st.SearchStrategy[Any] = st.lists(request, min_size=1, max_size=6)
            if method.name == "Forward":
                strategy = st.tuples(self.hellos(), strategy).map(lambda t: [t[0], *t[1]])
        else:
            strategy = request

        @seed(rng_seed)
        @settings(max_examples=cases, phases=[Phase.generate], database=None, deadline=None,
                  suppress_health_check=list(HealthCheck), derandomize=False)  # fmt: skip
        @given(strategy)
        def case(drawn: Any) -> None:
            for server in self.servers(method, drawn):
                self.run(self._one(server, method, drawn), timeout=DEADLINE * 3)

        case()

    async def _one(self, server: str, method: Method, drawn: Any) -> None:
        if method.client_streaming:
            frames = [self._forged(m) for m in drawn] if method.name == "Forward" else drawn
            bodies = [m.SerializeToString() for m in frames]
            answers = len(bodies) if method.name == "Stream" and _distinct_ids(frames) else 0
            if method.service == REFLECTION:
                answers = len(bodies)  # reflection answers every request, errors in-band
            await self.bidi(server, method, bodies, answers=answers)
        elif method.server_streaming:
            await self.server_stream(server, method, drawn.SerializeToString())
        else:
            await self.unary(server, method, drawn.SerializeToString())
            if method.key == "Switch.ApplyConfig":
                await self._abort_fuzzed_prepare(server, drawn)

    def _forged(self, frame: Any) -> Any:
        """A fuzzed Forward frame, kept off the sentinel: on a stream admitted as FORGED_TRAY,
        a request naming SENTINEL as its initiator would pass the partition check (an
        accelerator reaches its own memory), so such requests name accelerator 0 instead."""
        if frame.WhichOneof("frame") == "request" and frame.request.initiator == SENTINEL:
            frame.request.initiator = 0
        return frame

    async def _abort_fuzzed_prepare(self, server: str, request: Any) -> None:
        """A fuzzed PREPARE that was staged is aborted at once, so no later fuzzed COMMIT can
        make fuzzed tables live behind the controller's back (an authenticated fuzzer holds
        the rack's secret, so the switch takes its ApplyConfig as the controller's)."""
        stub = switch_pb2_grpc.SwitchStub(self.own(server))
        config = await stub.GetConfig(switch_pb2.GetConfigRequest(), timeout=DEADLINE)
        if config.prepared_generation and request.phase == switch_pb2.CONFIG_PHASE_PREPARE:
            await stub.ApplyConfig(
                switch_pb2.ApplyConfigRequest(phase=switch_pb2.CONFIG_PHASE_ABORT,
                                              generation=config.prepared_generation,
                                              controller_epoch=config.controller_epoch),
                timeout=DEADLINE,
            )  # fmt: skip

    def hellos(self) -> st.SearchStrategy[Any]:
        """First frames of a Forward stream: random ones, hellos of the right manifest from
        trays that are not compute trays, and an admitted hello as FORGED_TRAY."""
        hello = switch_pb2.ForwardHello
        frame = switch_pb2.ForwardFrame
        hellos = st.one_of(
            request_strategy(switch_pb2.ForwardFrame.DESCRIPTOR, self.facts),
            st.builds(lambda t, hb: frame(hello=hello(tray=t, manifest_digest=self.facts.digest,
                                                     heartbeat_interval_ms=hb)),
                      st.sampled_from(["switch-1", "nobody", "", "compute-01\x00"]),
                      st.sampled_from([0, 1, 200, (1 << 32) - 1])),
            st.builds(lambda hb: frame(hello=authenticated_hello(self.credentials, hello(
                tray=FORGED_TRAY, boot_id="fuzz", manifest_digest=self.facts.digest,
                heartbeat_interval_ms=hb))),
                      st.sampled_from([0, 200, 1])),
        )  # fmt: skip
        if not self.forge:
            return hellos.filter(lambda f: f.WhichOneof("frame") != "hello"
                                 or f.hello.tray != FORGED_TRAY)  # fmt: skip
        return hellos

    def fuzz_all(self, cases: int, rng_seed: int, *, control: bool) -> None:
        """Every method of one phase: the data plane and reads, or the control mutations."""
        for method in methods():
            if (method.key in CONTROL_METHODS) == control:
                self.fuzz_method(method, cases, rng_seed)

    # -- what a hostile client does besides --------------------------------------------------

    def raw_bodies(self, cases: int, rng_seed: int) -> None:
        """Random bytes as the body of every method, the messages of every stream (most do
        not parse): INVALID_ARGUMENT, on every server (fusionrack.v1, health, reflection)."""
        for method in methods():
            if method.key not in CONTROL_METHODS:
                self._raw(method, cases, rng_seed)

    def _raw(self, method: Method, cases: int, rng_seed: int) -> None:
        key = f"{method.key} [raw bytes]"
        body = st.binary(max_size=200)
        if method.client_streaming:  # random messages, after a few that parse
            valid = request_strategy(method.request, self.facts).map(
                lambda m: m.SerializeToString()
            )
            strategy: st.SearchStrategy[Any] = st.tuples(
                st.lists(valid, max_size=2), st.lists(body, min_size=1, max_size=3)
            ).map(lambda t: [*t[0], *t[1]])
        else:
            strategy = body

        async def send(server: str, drawn: Any) -> None:
            if method.client_streaming:
                await self.bidi(server, method, drawn, key=key)
            elif method.server_streaming:
                await self.server_stream(server, method, drawn, key=key)
            else:
                await self.unary(server, method, drawn, key=key)

        @seed(rng_seed)
        @settings(max_examples=cases, phases=[Phase.generate], database=None,
                  deadline=None, suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(strategy)
        def case(drawn: Any) -> None:
            # Health and reflection on a server of each kind; the rest on one of its servers.
            servers = self.servers(method)
            for server in servers if method.service in (HEALTH, REFLECTION) else servers[:1]:
                self.run(send(server, drawn), DEADLINE * 3)

        case()

    def oversized(self) -> None:
        """A request just over the 64 MiB limit to one method of every service: refused
        (RESOURCE_EXHAUSTED), nothing else."""
        body = _bytes_field(3, MAX_MESSAGE_BYTES + 1 - 5)  # 5: the tag and length
        chosen = ("Memory.Store", "Switch.ApplyConfig", "Tray.SetTraffic",
                  "Controller.CreatePartition")  # fmt: skip
        for method in methods():
            if method.key in chosen:
                for server in self.servers(method)[:1]:
                    self.run(self.unary(server, method, body, key=f"{method.key} [oversized]"))
        stream = next(m for m in methods() if m.key == "Memory.Stream")
        self.run(self.bidi("compute-01", stream, [body], key="Memory.Stream [oversized]"))

    def taken_back(self, count: int) -> None:
        """`count` Forward streams admitted as FORGED_TRAY on switch-1, each half-closed after
        two requests: the real tray's reconnect takes the switch's stream back within
        milliseconds, often while the switch is writing to the forged one, whose call must
        then end at once (it once stayed open to its deadline: a handler that returned with a
        write still in gRPC's hands could not send its status)."""
        forward = next(m for m in methods() if m.key == "Switch.Forward")
        hello = switch_pb2.ForwardHello(tray=FORGED_TRAY, boot_id="fuzz",
                                        manifest_digest=self.facts.digest,
                                        heartbeat_interval_ms=heartbeat_interval_ms())  # fmt: skip
        batch = switch_pb2.ForwardFrame(request=switch_pb2.ForwardRequest(batch={}))
        frames = [switch_pb2.ForwardFrame(hello=authenticated_hello(self.credentials, hello)),
                  batch, batch]  # fmt: skip
        bodies = [frame.SerializeToString() for frame in frames]
        for _ in range(count):
            self.run(self.bidi("switch-1", forward, bodies, key="Switch.Forward [taken back]",
                               deadline=TAKEN_BACK_DEADLINE))  # fmt: skip

    def abandon_streams(self, count: int) -> None:
        """`count` streams of every streaming method opened (with a first message where the
        client streams) and dropped without a word, `count` at a time on one channel; then
        the server must still answer at once."""
        for method in methods():
            if not (method.client_streaming or method.server_streaming):
                continue
            self.run(self._abandon(method, count), timeout=120)

    async def _abandon(self, method: Method, count: int) -> None:
        server = self.servers(method, _first_request(method))[0]
        key = f"{method.key} [abandoned x{count}]"
        first = _first_request(method).SerializeToString()
        channel = grpc.aio.insecure_channel(self.address(server))
        start = time.monotonic()
        calls = []
        try:
            for _ in range(count):
                if method.client_streaming:
                    call = channel.stream_stream(method.path)(timeout=DEADLINE, **self.auth)
                    # A refused stream (Forward without a good hello) may end before the write.
                    with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
                        await call.write(first)
                else:
                    call = channel.unary_stream(method.path)(first, timeout=DEADLINE,
                                                             **self.auth)  # fmt: skip
                calls.append(call)
            await asyncio.sleep(0)
        finally:
            await channel.close(grace=None)  # every call on it cancelled at once
        await self._still_answers(server, key, start)

    async def _still_answers(self, server: str, key: str, start: float) -> None:
        """Record whether `server` answers a cheap call within 5 s after an attack."""
        code = "OK"
        try:
            if server == "controller":
                await controller_pb2_grpc.ControllerStub(self.own(server)).GetDomain(
                    controller_pb2.GetDomainRequest(), timeout=5
                )
            else:
                from fusionrack.v1 import tray_pb2_grpc

                await tray_pb2_grpc.TrayStub(self.own(server)).GetStatus(
                    tray_pb2.GetStatusRequest(), timeout=5
                )
        except grpc.aio.AioRpcError as error:
            code = error.code().name
        self.record(key, code, time.monotonic() - start, b"", 120)
        if code != "OK":
            self._found(key, "no answer after", b"", code)

    def never_read(self, seconds: float, watchers: int = 20) -> dict[str, tuple[int, int]]:
        """`watchers` WatchStatus calls (a status every millisecond) on a tray and Subscribe
        calls on the controller, never read, while the controller's events keep coming
        (partitions created and deleted): the servers' RSS must stay bounded."""
        return self.run(self._never_read(seconds, watchers), timeout=seconds + 120)

    async def _never_read(self, seconds: float, watchers: int) -> dict[str, tuple[int, int]]:
        before = self.rss()
        watch = tray_pb2.WatchStatusRequest()
        watch.heartbeat_interval.FromNanoseconds(1_000_000)
        subscribe = controller_pb2.SubscribeRequest(include_snapshot=True)
        opened = []
        channels = [grpc.aio.insecure_channel(self.address(s))
                    for s in ("compute-01", "controller")]  # fmt: skip
        start = time.monotonic()
        try:
            for channel, path, body in (
                (channels[0], "/fusionrack.v1.Tray/WatchStatus", watch),
                (channels[1], "/fusionrack.v1.Controller/Subscribe", subscribe),
            ):
                for _ in range(watchers):
                    opened.append(channel.unary_stream(path)(body.SerializeToString(),
                                                             **self.auth))  # fmt: skip
            ctl = controller_pb2_grpc.ControllerStub(self.own("controller"))
            n = 0
            while time.monotonic() - start < seconds:
                n += 1
                created = await ctl.CreatePartition(
                    controller_pb2.CreatePartitionRequest(name=f"churn{n}", count=1),
                    timeout=DEADLINE,
                )
                await ctl.DeletePartition(
                    controller_pb2.DeletePartitionRequest(
                        partition=common_pb2.PartitionRef(id=created.partition.id)
                    ),
                    timeout=DEADLINE,
                )
        finally:
            for channel in channels:
                await channel.close(grace=None)
        after = self.rss()
        growth = {n: (before[n], after.get(n, 0)) for n in ("compute-01", "controller")}
        for name, (was, now) in growth.items():
            if now - was > 64 * 1024:
                self._found(f"{name} [never-read watchers]", "rss", b"", f"{was} -> {now} KiB")
        await self._still_answers("compute-01", "Tray.WatchStatus [never read]", start)
        await self._still_answers("controller", "Controller.Subscribe [never read]", start)
        return growth

    def framed(self, cases: int, rng_seed: int) -> None:
        """The framed data plane (Switch.GetForwardEndpoint) of every switch tray fed random
        bytes, frames with lengths past the limit, and hellos (random, of other trays, or
        admitted as FORGED_TRAY) followed by fuzzed frames, whole, cut short or with a byte
        changed. A connection must be refused or answered, never fail a server."""
        endpoints = self.run(self._endpoints())
        frame = request_strategy(switch_pb2.ForwardFrame.DESCRIPTOR, self.facts)
        encoded = frame.map(lambda f: _encode(self._forged(f)))
        damaged = st.one_of(
            encoded,
            st.builds(lambda b, n: b[: max(0, len(b) - n)], encoded, st.integers(1, 8)),
            st.builds(lambda b, i, v: _replace_byte(b, i, v), encoded, st.integers(0, 1 << 16),
                      st.integers(0, 255)),
        )  # fmt: skip
        first = st.one_of(
            self.hellos().map(_encode),
            st.binary(max_size=64),
            st.sampled_from([0xFFFFFFFF, MAX_MESSAGE_BYTES + 1, (64 << 10) + 1, 0]).map(
                lambda n: struct.pack("<I", n)
            ),
        )
        strategy = st.tuples(first, st.lists(damaged, max_size=6))

        @seed(rng_seed)
        @settings(max_examples=cases, phases=[Phase.generate], database=None, deadline=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(strategy)
        def case(drawn: tuple[bytes, list[bytes]]) -> None:
            for address in endpoints:
                self.run(self._framed_one(address, [drawn[0], *drawn[1]]), DEADLINE * 3)

        case()

    async def _endpoints(self) -> list[str]:
        found = []
        for name in SERVICES["fusionrack.v1.Switch"] or ():
            answer = await switch_pb2_grpc.SwitchStub(self.own(name)).GetForwardEndpoint(
                switch_pb2.GetForwardEndpointRequest(), timeout=DEADLINE
            )
            if answer.address:
                found.append(answer.address)
        return found

    async def _framed_one(self, address: str, chunks: list[bytes]) -> None:
        """One connection: write `chunks`, read frames for up to 0.5 s after the last one (or
        until the switch closes), and record how it ended."""
        key = "Switch [framed transport]"
        host, _, port = address.rpartition(":")
        start = time.monotonic()
        reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
        code, ops = "open", []
        try:
            for chunk in chunks:
                writer.write(chunk)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            buffer = b""
            try:
                async with asyncio.timeout(0.5):
                    while data := await reader.read(1 << 16):
                        buffer += data
                    code = "closed"
            except TimeoutError:
                pass
            except ConnectionError:
                code = "reset"
            for reply in _decode_frames(buffer):
                if reply.WhichOneof("frame") == "refused":
                    code = f"refused {grpc_code_name(reply.refused.code)}"
                ops.extend(op_statuses(reply))
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        self.record(key, code, time.monotonic() - start, b"".join(chunks), DEADLINE, ops)

    def fuzz_round(self, cases: int, rng_seed: int) -> None:
        """One round: the data plane and reads (then: the initial tables, the sentinel), the
        control mutations (then: the switches agree with the controller), undone (then: the
        initial tables again)."""
        self.fuzz_all(cases, rng_seed, control=False)
        self.framed(cases, rng_seed)
        self.check("the data-plane phase")
        self.fuzz_all(cases, rng_seed, control=True)
        self.check("the control phase", tables="controller")
        self.reset()
        self.check("the reset")


def _encode(frame: Any) -> bytes:
    """A frame as the framed transport carries it: 4-byte little-endian length, bytes."""
    data = frame.SerializeToString()
    return struct.pack("<I", len(data)) + data


def _replace_byte(data: bytes, index: int, value: int) -> bytes:
    if not data:
        return data
    raw = bytearray(data)
    raw[index % len(raw)] = value
    return bytes(raw)


def _decode_frames(buffer: bytes) -> list[Any]:
    """The whole frames in `buffer`."""
    frames, at = [], 0
    while at + 4 <= len(buffer):
        (length,) = struct.unpack_from("<I", buffer, at)
        if at + 4 + length > len(buffer):
            break
        frames.append(switch_pb2.ForwardFrame.FromString(buffer[at + 4 : at + 4 + length]))
        at += 4 + length
    return frames


def _bytes_field(number: int, size: int) -> bytes:
    """A serialized message of one length-delimited field of `size` bytes."""
    tag, length = (number << 3) | 2, size
    varint = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        varint.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([tag]) + bytes(varint) + bytes(size)


def _first_request(method: Method) -> Any:
    """A plausible first message of a streaming method."""
    if method.name == "Forward":
        return switch_pb2.ForwardFrame(hello=switch_pb2.ForwardHello(tray="nobody"))
    if method.name == "Stream":
        return memory_pb2.StreamRequest(
            request_id=1, initiator=0,
            op=memory_pb2.MemoryOp(load=memory_pb2.LoadOp(address=fabric_address(1, 0), size=8)),
        )  # fmt: skip
    return message_factory.GetMessageClass(method.request)()


def _distinct_ids(requests: list[Any]) -> bool:
    ids = [r.request_id for r in requests]
    return len(set(ids)) == len(ids)
