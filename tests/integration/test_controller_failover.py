"""Controllers of one rack sharing a real etcd, as real `fusion-controller` processes: the
leader killed -9 in a storm of changes, and a leader paused until it was deposed.

The agents of a mini rack run in this process; the storm's clients (those of
test_controller_storm.py, each keeping an exact model of its part of the desired state) talk
to every controller through one `FailoverChannel` (`open_channel("A,B,C")`), starting at
different ones, so changes reach the leader directly and through standbys that forward them.
After each kill, a standby must lead within 3 s; once the storm stops, every acknowledged
change is there, every acknowledged idempotency key answers its first answer and changes
nothing, and every switch tray runs exactly the desired state in etcd, under the new leader's
epoch, with nothing left staged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import grpc
import pytest

from fusionrack import wire
from fusionrack.agent.serving import InProcessRack
from fusionrack.certs import make_rack_certificates
from fusionrack.controller.etcd_client import EtcdClient
from fusionrack.controller.store.etcd import EtcdStore
from fusionrack.emulator import FabricConfig, Topology
from fusionrack.rpc import free_port_range, open_channel
from fusionrack.v1 import (
    common_pb2,
    controller_pb2,
    controller_pb2_grpc,
    switch_pb2,
    switch_pb2_grpc,
)
from tests.support.etcd_server import Etcd
from tests.support.inprocess_racks import running_rack
from tests.support.mqtt_broker import Mosquitto

from .test_controller_storm import (
    REFUSED,
    UNKNOWN,
    Client,
    DrainClient,
    PartitionClient,
    Tally,
)

CONTROLLER = str(Path(sys.executable).with_name("fusion-controller"))
FUSIONCTL = str(Path(sys.executable).with_name("fusionctl"))
FAILOVER_TARGET = 3.0  # s from the kill to a standby leading


class EtcdController:
    """One `fusion-controller --store etcd://...` of the rack, started, killed, paused."""

    def __init__(
        self, name: str, rack: InProcessRack, etcd: Etcd, scratch: Path, address: str
    ) -> None:
        self.name, self.rack, self.etcd, self.address = name, rack, etcd, address
        self.log = scratch / f"controller-{name}.log"
        self.secret = scratch / "rack.secret"
        assert rack.secret is not None
        self.secret.write_text(rack.secret.hex())
        self.process: subprocess.Popen[bytes] | None = None
        self.options: list[str] = []  # more of fusion-controller's options (--mqtt URL, ...)

    def start(self) -> None:
        agents = [f"--agent={name}={self.rack.address(name)}" for name in self.rack.trays]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [CONTROLLER, "--manifest", "mini", "--store", self.etcd.url,
                 "--controller-id", self.name, "--listen", self.address, "--log-level", "INFO",
                 "--rack-secret-file", str(self.secret), *self.options, *agents],
                stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(timeout=10) == -signal.SIGKILL

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused one must hear the SIGTERM
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def stub(self, channel: grpc.aio.Channel) -> controller_pb2_grpc.ControllerStub:
        return controller_pb2_grpc.ControllerStub(channel)


@pytest.fixture
async def rack(mini: Topology) -> AsyncIterator[InProcessRack]:
    async with running_rack(mini) as running:
        yield running


def controllers_of(
    rack: InProcessRack, etcd: Etcd, scratch: Path, *names: str
) -> list[EtcdController]:
    """Controllers of `rack` named `names`, each on its own free port."""
    base = free_port_range(len(names))
    return [
        EtcdController(name, rack, etcd, scratch, f"127.0.0.1:{base + i}")
        for i, name in enumerate(names)
    ]


async def domain(controller: EtcdController, rack: InProcessRack) -> controller_pb2.DomainState:
    async with open_channel(controller.address, credentials=rack.credentials()) as channel:
        answer = await controller.stub(channel).GetDomain(
            controller_pb2.GetDomainRequest(), timeout=0.5
        )
    return answer.state


async def leader_of(
    controllers: list[EtcdController], rack: InProcessRack, timeout: float = 30.0
) -> tuple[EtcdController, float]:
    """The controller that says it leads, once every live one is ready (reaches every agent,
    no stale switch tray); and when it first said so."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leading, ready = None, True
        for controller in controllers:
            assert controller.process is not None
            assert controller.process.poll() is None, controller.log.read_text()
            try:
                state = await domain(controller, rack)
            except grpc.aio.AioRpcError:
                ready = False
                continue
            if state.leadership.leader:
                leading = leading or (controller, time.monotonic())
            ready = ready and state.reachable_tray_count == state.tray_count
            ready = ready and not state.stale_trays
        if leading is not None and ready:
            return leading
        await asyncio.sleep(0.01)
    logs = "\n".join(c.log.read_text()[-3000:] for c in controllers)
    raise AssertionError(f"no controller led and was ready in {timeout} s:\n{logs}")


async def first_to_lead(candidates: list[EtcdController], rack: InProcessRack) -> float:
    """When the first of `candidates` says it leads (polled every 10 ms)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for controller in candidates:
            try:
                if (await domain(controller, rack)).leadership.leader:
                    return time.monotonic()
            except grpc.aio.AioRpcError:
                pass
        await asyncio.sleep(0.01)
    raise AssertionError("no standby took over within 10 s")


async def storm(client: Client, stub: Any, stop: asyncio.Event, tally: Tally) -> None:
    """`client`'s changes one after another until `stop`. The failover channel retries what
    finds no leader; a change whose deadline passed all the same is settled as after a kill."""
    while not stop.is_set():
        call = client.next_call()
        try:
            answer = await getattr(stub, call.method)(call.request, timeout=8)
        except grpc.aio.AioRpcError as error:
            code, details = error.code().name, error.details()
        else:
            code = ""
        if code:
            tally.codes[code] = tally.codes.get(code, 0) + 1
            if code in REFUSED:
                assert code == call.refused, f"{call.method}: {code}: {details}"
                tally.refused += 1
                continue
            assert code in UNKNOWN, f"{call.method}: {code}: {details}"
            client.pending = call
            tally.in_flight += 1
            await client.resolve(stub)
            continue
        tally.acknowledged += 1
        call.apply(answer)
        if call.keyed:
            client.answered.append((call, answer.SerializeToString()))


async def switches_agree(rack: InProcessRack, etcd: Etcd, epoch: int) -> None:
    """Until every switch tray runs the generation and tables of the desired state in etcd,
    under `epoch`, with nothing staged."""
    topology = rack.topology
    store = EtcdStore(EtcdClient([etcd.address]), topology.name)
    deadline = time.monotonic() + 10
    seen: list[Any] = []
    try:
        while time.monotonic() < deadline:
            document = await store.load(topology.name)
            assert document is not None
            config = FabricConfig.from_dict(topology, document)
            tables = wire.switch_config(config)
            seen = []
            for tray in topology.trays:
                if tray.kind.name != "SWITCH":
                    continue
                async with open_channel(
                    rack.address(tray.name), credentials=rack.credentials()
                ) as channel:
                    got = await switch_pb2_grpc.SwitchStub(channel).GetConfig(
                        switch_pb2.GetConfigRequest(), timeout=5
                    )
                seen.append((tray.name, got.committed_generation, got.config == tables,
                             got.prepared_generation, got.controller_epoch))  # fmt: skip
            if all(
                (g, same, staged, at) == (config.generation, True, 0, epoch)
                for _, g, same, staged, at in seen
            ):
                return
            await asyncio.sleep(0.02)
    finally:
        await store.close()
    raise AssertionError(f"switch trays do not run the desired state (epoch {epoch}): {seen}")


async def check_everything(
    clients: list[Client], stub: Any, rng: random.Random, tally: Tally
) -> None:
    """Every client's part as acknowledged; acknowledged keys answer their first answer and
    change nothing."""
    for client in clients:
        await client.check(stub)  # type: ignore[attr-defined]
    for client in clients:
        for call, first in rng.sample(client.answered, min(4, len(client.answered))):
            again = await getattr(stub, call.method)(call.request, timeout=5)
            assert again.SerializeToString() == first, (client.name, call.method)
            tally.retried += 1
    for client in clients:
        await client.check(stub)  # type: ignore[attr-defined]


async def test_the_leader_killed_in_a_storm_a_standby_leads_within_3_s_and_loses_nothing(
    rack: InProcessRack, etcd: Etcd, tmp_path: Path
) -> None:
    seed = int(os.environ.get("STORM_SEED", random.randrange(1 << 30)))
    print(f"storm seed {seed} (STORM_SEED={seed} repeats it)")
    rng = random.Random(seed)
    topology = rack.topology
    tally = Tally()
    computes = [t.name for t in topology.trays if t.kind.name == "COMPUTE"]
    links = [link.name for link in topology.links]
    partition_clients = [
        PartitionClient(f"parts{i}", random.Random(rng.random()), tally, topology, tray)
        for i, tray in enumerate(computes)
    ]
    drains = [DrainClient("drains", random.Random(rng.random()), tally, links[:4])]
    clients: list[Client] = [*partition_clients, *drains]
    controllers = everyone = controllers_of(rack, etcd, tmp_path, "a", "b", "c")
    failovers = []
    try:
        for controller in controllers:
            controller.start()
        leader, _ = await leader_of(controllers, rack)
        for round_ in range(2):
            # Each client lists every controller, from a different one: some changes go to the
            # leader, the others through a standby.
            channels = [
                open_channel(",".join(c.address for c in controllers[i:] + controllers[:i]),
                             credentials=rack.credentials())
                for i in range(len(clients))
            ]  # fmt: skip
            stubs = [controller_pb2_grpc.ControllerStub(c) for c in channels]
            if round_ == 0:
                properties = (
                    await stubs[0].GetDomain(controller_pb2.GetDomainRequest())
                ).properties
                for client in partition_clients:
                    client.granularity = properties.multicast_granularity_bytes
            stop = asyncio.Event()
            storms = [
                asyncio.create_task(storm(c, s, stop, tally), name=c.name)
                for c, s in zip(clients, stubs, strict=True)
            ]
            await asyncio.sleep(rng.uniform(0.4, 0.8))
            before = tally.acknowledged
            killed = time.monotonic()
            leader.kill()
            standbys = [c for c in controllers if c is not leader]
            failovers.append(await first_to_lead(standbys, rack) - killed)
            await asyncio.sleep(0.5)  # the storm goes on under the new leader
            stop.set()
            async with asyncio.timeout(30):
                await asyncio.gather(*storms)
            assert tally.acknowledged > before, "no change was acknowledged around the kill"
            for channel in channels:
                await channel.close()
            controllers = standbys  # the next round kills the new leader: one is left
            leader, _ = await leader_of(controllers, rack)
            async with open_channel(leader.address, credentials=rack.credentials()) as channel:
                stub = leader.stub(channel)
                await check_everything(clients, stub, rng, tally)
                state = (await stub.GetDomain(controller_pb2.GetDomainRequest())).state
            await switches_agree(rack, etcd, state.leadership.epoch)
    finally:
        for controller in everyone:
            controller.stop()
    print(
        f"failover after kill -9: {', '.join(f'{f:.2f} s' for f in failovers)}; "
        f"{tally.acknowledged} changes acknowledged, {tally.refused} refused, "
        f"{tally.in_flight} past their deadline ({tally.landed} of them landed), "
        f"{tally.retried} acknowledged keys retried; errors {tally.codes}"
    )
    assert all(f < FAILOVER_TARGET for f in failovers), failovers
    assert tally.acknowledged >= 40 and tally.refused >= 2 and tally.retried >= 10


async def test_a_paused_leader_resumes_deposed_and_changes_nothing(
    rack: InProcessRack, etcd: Etcd, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    both = controllers_of(rack, etcd, tmp_path, "one", "two")
    status_topic = "fusionrack/mini/controller/status"
    try:
        for controller in both:
            controller.options = ["--mqtt", mosquitto.url]
            controller.start()
        first, _ = await leader_of(both, rack)
        second = next(c for c in both if c is not first)
        old_epoch = (await domain(first, rack)).leadership.epoch
        after = controller_pb2.CreatePartitionRequest(
            name="after", idempotency_key="after-1", locations=common_pb2.LocationList(
                locations=[common_pb2.Location(tray="compute-01", index=0)]),
        )  # fmt: skip
        first.signal(signal.SIGSTOP)  # hung: its lease runs out while it cannot know
        await first_to_lead([second], rack)
        async with open_channel(
            f"{second.address},{first.address}", credentials=rack.credentials()
        ) as channel:
            stub = controller_pb2_grpc.ControllerStub(channel)
            created = await stub.CreatePartition(after, timeout=10)
            async with aiomqtt.Client(mosquitto.host, mosquitto.port) as watcher:
                await watcher.subscribe(status_topic, qos=1)
                before = await mqtt_messages(watcher)  # the retained status
                first.signal(signal.SIGCONT)
                # It resumes as it stopped, believing it leads: its lease tells it otherwise
                # before it acts, and every switch tray has seen the newer epoch anyway.
                # Nor does it speak on MQTT again (its session would take the new leader's).
                during = await mqtt_messages(watcher, quiet=2.0)
            assert [d["details"]["address"] for _, d in before if d] == [second.address], before
            assert during == [], during
            state = await domain(first, rack)
            assert not state.leadership.leader and state.leadership.leader_id == second.name
            assert state.leadership.epoch > old_epoch
            await switches_agree(rack, etcd, state.leadership.epoch)
        async with open_channel(first.address, credentials=rack.credentials()) as channel:
            # A change sent to it now is forwarded to the leader, and applied once.
            stub = controller_pb2_grpc.ControllerStub(channel)
            again = await stub.CreatePartition(after, timeout=10)
            assert again.SerializeToString() == created.SerializeToString()
            listed = await stub.ListPartitions(controller_pb2.ListPartitionsRequest())
            assert [p.name for p in listed.partitions if p.id != 32766] == ["after"]
        # The deposed leader's epoch cannot program a switch tray any more.
        async with open_channel(
            rack.address("switch-1"), credentials=rack.credentials()
        ) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await switch_pb2_grpc.SwitchStub(channel).ApplyConfig(
                    switch_pb2.ApplyConfigRequest(
                        phase=switch_pb2.CONFIG_PHASE_PREPARE, generation=1 << 40,
                        controller_epoch=old_epoch,
                    ),
                    timeout=5,
                )  # fmt: skip
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert f"controller epoch {old_epoch} is older" in (refused.value.details() or "")
        # fusionctl with both addresses: the domain says who answers and who leads.
        fusionctl = await asyncio.create_subprocess_exec(
            FUSIONCTL, "--controller", f"{first.address},{second.address}", "domain",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(fusionctl.communicate(), 30)
        assert fusionctl.returncode == 0, err.decode()
        line = f"controller     {first.name} (standby); leader {second.name} at {second.address}"
        assert line.encode() in out, out.decode()
    finally:
        for controller in both:
            controller.stop()


async def mqtt_messages(
    client: aiomqtt.Client, quiet: float = 1.0
) -> list[tuple[str, dict[str, Any] | None]]:
    """(topic, document) of what `client` receives until nothing came for `quiet` s (or, if
    messages never stop, for 15 s)."""
    got: list[tuple[str, dict[str, Any] | None]] = []
    deadline = time.monotonic() + 15
    with contextlib.suppress(TimeoutError):
        while time.monotonic() < deadline:
            async with asyncio.timeout(quiet):
                message = await anext(aiter(client.messages))
            assert isinstance(message.payload, bytes)
            got.append((message.topic.value, json.loads(message.payload or b"null")))
    return got


async def subscribed(channel: grpc.aio.Channel, kinds: list[int]) -> Any:
    """A Subscribe stream of `kinds`, past its snapshot (so surely registered)."""
    stream = controller_pb2_grpc.ControllerStub(channel).Subscribe(
        controller_pb2.SubscribeRequest(kinds=kinds, include_snapshot=True)
    )
    while (await stream.read()).WhichOneof("item") != "snapshot_end":
        pass
    return stream


async def test_with_mqtt_only_the_leader_speaks_for_the_rack_and_a_standby_streams_its_changes(
    rack: InProcessRack, etcd: Etcd, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    trio = controllers_of(rack, etcd, tmp_path, "one", "two", "three")
    status_topic = "fusionrack/mini/controller/status"
    wanted = [
        getattr(common_pb2, f"EVENT_KIND_{kind}")
        for kind in ("PARTITION_CREATED", "PARTITION_UPDATED", "PARTITION_DELETED",
                     "MULTICAST_GROUP_CREATED", "MULTICAST_GROUP_DELETED")
    ]  # fmt: skip
    try:
        for controller in trio:
            controller.options = ["--mqtt", mosquitto.url]
            controller.start()
        leader, _ = await leader_of(trio, rack)
        standby = next(c for c in trio if c is not leader)
        addresses = ",".join(c.address for c in trio)
        async with (
            aiomqtt.Client(mosquitto.host, mosquitto.port) as watcher,
            open_channel(addresses, credentials=rack.credentials()) as channel,
            open_channel(standby.address, credentials=rack.credentials()) as at_standby,
        ):
            await watcher.subscribe("fusionrack/mini/controller/#", qos=1)
            await watcher.subscribe("fusionrack/mini/partitions/+", qos=1)
            # The retained status names the leader, and stays put: three controllers with one
            # client id would take the broker's session from each other over and over.
            first = await mqtt_messages(watcher, quiet=2.0)
            statuses = [doc for topic, doc in first if topic == status_topic]
            assert [(d["status"], d["details"].get("address")) for d in statuses if d] == [
                ("online", leader.address)
            ], first
            stream = await subscribed(at_standby, wanted)
            stub = controller_pb2_grpc.ControllerStub(channel)
            made = await stub.CreatePartition(
                controller_pb2.CreatePartitionRequest(
                    name="train", locations=common_pb2.LocationList(
                        locations=[common_pb2.Location(tray="compute-01", index=0)])),
                timeout=10,
            )  # fmt: skip
            await stub.AddAccelerators(
                controller_pb2.AddAcceleratorsRequest(
                    partition=common_pb2.PartitionRef(name="train"),
                    locations=common_pb2.LocationList(
                        locations=[common_pb2.Location(tray="compute-02", index=0)]),
                ),
                timeout=10,
            )  # fmt: skip
            group = await stub.CreateMulticastGroup(
                controller_pb2.CreateMulticastGroupRequest(
                    partition=common_pb2.PartitionRef(name="train"), size_bytes=64 * 1024
                ),
                timeout=10,
            )
            # The standby's Subscribe streams the leader's changes, with their bodies.
            seen = []
            async with asyncio.timeout(10):
                while len(seen) < 3:
                    seen.append((await stream.read()).event)
            assert [(e.kind, e.subject) for e in seen] == [
                (common_pb2.EVENT_KIND_PARTITION_CREATED, "train"),
                (common_pb2.EVENT_KIND_PARTITION_UPDATED, "train"),
                (common_pb2.EVENT_KIND_MULTICAST_GROUP_CREATED, f"mcast-{group.group.id}"),
            ]
            assert seen[0].partition.id == made.partition.id
            assert len(seen[1].partition.members) == 2 and list(seen[1].partition_ids) == [
                made.partition.id
            ]
            assert seen[2].multicast_group.id == group.group.id
            # On MQTT, each change once: from the leader alone.
            after = await mqtt_messages(watcher)
            kinds = [t.rsplit("/", 1)[1] for t, _ in after if "/events/" in t]
            for kind in ("partition_created", "partition_updated", "multicast_group_created"):
                assert kinds.count(kind) == 1, after
            assert not [d for t, d in after if t == status_topic], after

            # The leader dies: its will says so, and the new leader says it speaks now.
            leader.kill()
            await first_to_lead([c for c in trio if c is not leader], rack)
            new_leader, _ = await leader_of([c for c in trio if c is not leader], rack)
            still = next(c for c in trio if c not in (leader, new_leader))
            async with open_channel(still.address, credentials=rack.credentials()) as at_still:
                stream = await subscribed(at_still, wanted)
                await stub.DeletePartition(
                    controller_pb2.DeletePartitionRequest(
                        partition=common_pb2.PartitionRef(name="train"),
                        delete_multicast_groups=True,
                    ),
                    timeout=10,
                )
                async with asyncio.timeout(10):
                    gone = [(await stream.read()).event for _ in range(2)]
            # As the leader announces it: the group deleted with the partition, then it.
            assert [(e.kind, e.subject) for e in gone] == [
                (common_pb2.EVENT_KIND_MULTICAST_GROUP_DELETED, f"mcast-{group.group.id}"),
                (common_pb2.EVENT_KIND_PARTITION_DELETED, "train"),
            ]
            after = await mqtt_messages(watcher)
            statuses = [(d["status"], d["details"].get("address")) for t, d in after
                        if t == status_topic and d]  # fmt: skip
            assert statuses == [("offline", None), ("online", new_leader.address)], after
            kinds = [t.rsplit("/", 1)[1] for t, _ in after if "/events/" in t]
            assert kinds.count("partition_deleted") == 1, after
            assert kinds.count("multicast_group_deleted") == 1, after
            assert (f"fusionrack/mini/partitions/{made.partition.id}", None) in after
        # Late subscribers see the present: the new leader online, the partition gone.
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as late:
            await late.subscribe(status_topic, qos=1)
            await late.subscribe("fusionrack/mini/partitions/+", qos=1)
            present = dict(await mqtt_messages(late))
        assert present[status_topic]["details"]["address"] == new_leader.address
        assert f"fusionrack/mini/partitions/{made.partition.id}" not in present
        assert "fusionrack/mini/partitions/32766" in present
    finally:
        for controller in trio:
            controller.stop()


async def test_over_tls_to_an_etcd_that_asks_for_client_certificates(
    rack: InProcessRack, tmp_path: Path
) -> None:
    tls = tmp_path / "tls"
    make_rack_certificates(tls, "mini", [("etcd", "switch")], hosts=["127.0.0.1"])
    secure = Etcd(tmp_path / "etcd", tls=(tls / "etcd.pem", tls / "etcd.key", tls / "ca.pem"))
    secure.start()
    pair = controllers_of(rack, secure, tmp_path, "one", "two")
    try:
        # Without a client certificate etcd refuses the handshake: the controller says why.
        alone = await asyncio.create_subprocess_exec(
            CONTROLLER, "--manifest", "mini", "--store", secure.url, "--store-timeout", "1",
            "--etcd-ca", str(tls / "ca.pem"), "--listen", "127.0.0.1:0",
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(alone.communicate(), 30)
        assert alone.returncode != 0
        assert f"cannot reach etcd at {secure.address}" in err.decode(), err.decode()
        assert "--etcd-cert/--etcd-key" in err.decode(), err.decode()
        for controller in pair:
            controller.options = [
                "--etcd-ca", str(tls / "ca.pem"), "--etcd-cert", str(tls / "controller.pem"),
                "--etcd-key", str(tls / "controller.key"),
            ]  # fmt: skip
            controller.start()
        leader, _ = await leader_of(pair, rack)
        standby = next(c for c in pair if c is not leader)
        async with open_channel(standby.address, credentials=rack.credentials()) as channel:
            made = await controller_pb2_grpc.ControllerStub(channel).CreatePartition(
                controller_pb2.CreatePartitionRequest(
                    name="sealed", locations=common_pb2.LocationList(
                        locations=[common_pb2.Location(tray="compute-01", index=0)])),
                timeout=10,
            )  # fmt: skip
        leader.kill()
        await first_to_lead([standby], rack)
        async with open_channel(standby.address, credentials=rack.credentials()) as channel:
            listed = await controller_pb2_grpc.ControllerStub(channel).ListPartitions(
                controller_pb2.ListPartitionsRequest(), timeout=10
            )
        assert made.partition.id in [p.id for p in listed.partitions]
    finally:
        for controller in pair:
            controller.stop()
        secure.close()
