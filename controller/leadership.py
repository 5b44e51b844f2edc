"""Which controller of a rack leads: elected with an etcd lease, fenced by an epoch.

Two or three controllers of one rack share an etcd store (`store.etcd.EtcdStore`). Only the
leader makes changes and programs the switch trays; the others (standbys) answer reads from the
shared desired state and forward changes to the leader (`forwarding.py`).

* **Lease.** Every controller holds an etcd lease of `ttl` seconds, kept alive over one stream
  every quarter of the TTL etcd granted (etcd grants at least its minimum, 2 s with its default
  timings).
* **Election.** `/fusionrack/<rack>/leader` names the leader (its id and gRPC address) and is
  attached to its lease. A controller campaigns with a transaction that creates the key only if
  it does not exist; standbys watch it and campaign again the moment it goes: when the leader's
  lease expires (it died, hung or lost etcd: at most `ttl` after its last keep-alive) or is
  revoked (a leader that stops cleanly hands over at once).
* **Epoch.** A leadership's epoch is the etcd revision at which its leader key was created.
  Revisions only grow, so every leadership's epoch is greater than all before it: a fencing
  token. The leader's store writes are transactions conditioned on the key still having been
  created at its epoch (`EtcdStore.fence`), and the switch trays refuse `ApplyConfig` from an
  epoch older than the last one they accepted (`controller_epoch`), so a deposed leader, paused
  or cut off while a successor took over, cannot write the store nor program a switch.
* **Knowing when to stop.** A leader leads only while its lease surely holds: until `TTL`
  seconds after it *sent* the last keep-alive etcd answered (etcd counts from receipt, later).
  `leads` turns False at that moment by itself, so a process resuming from a pause finds itself
  deposed before it does anything, and the controller checks it before every switch phase.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import grpc

from fusionrack.emulator import Unavailable
from fusionrack.etcdv3 import kv_pb2, rpc_pb2
from fusionrack.tasks import BackgroundTasks

from .etcd_client import EtcdClient, EtcdUnavailable, compare_create_revision, put

__all__ = [
    "DEFAULT_LEASE_TTL",
    "LEADER_METADATA",
    "Leader",
    "Leadership",
    "LeadershipView",
    "NotLeader",
    "SoleLeadership",
    "leader_key",
]

log = logging.getLogger(__name__)

DEFAULT_LEASE_TTL = 2  # s; etcd's minimum with its default timings; a standby leads ~2-2.5 s
# after the leader dies
RETRY_SECONDS = 0.1  # between campaigns after etcd failed us
# gRPC metadata naming the leader's address ("host:port") on a change a standby could not
# forward (trailing metadata of its UNAVAILABLE).
LEADER_METADATA = "fusionrack-leader"


class NotLeader(Unavailable):
    """This controller does not lead its rack (now): the change was not made."""


@dataclass(frozen=True)
class Leader:
    """The controller that leads: its id, gRPC address and leadership epoch."""

    id: str
    address: str
    epoch: int


class LeadershipView(Protocol):
    """What the controller and its service read of a leadership."""

    @property
    def id(self) -> str: ...
    @property
    def leads(self) -> bool: ...
    @property
    def epoch(self) -> int: ...
    @property
    def leader(self) -> Leader | None: ...
    @property
    def since(self) -> float: ...
    @property
    def shared(self) -> bool: ...


def leader_key(rack: str) -> bytes:
    """The etcd key naming the leader of `rack`."""
    return f"/fusionrack/{rack}/leader".encode()


class SoleLeadership:
    """A controller alone with its store (SQLite): it always leads, at epoch 0."""

    def __init__(self, controller_id: str, address: str = "") -> None:
        self.id = controller_id
        self.address = address
        self.since = time.time()

    @property
    def leads(self) -> bool:
        return True

    @property
    def epoch(self) -> int:
        return 0

    @property
    def leader(self) -> Leader:
        return Leader(self.id, self.address, 0)

    @property
    def shared(self) -> bool:
        return False


class _LeaseLost(Unavailable):
    """The lease expired, or no keep-alive was answered before it would."""


class Leadership:
    """One controller's part in its rack's election (see the module docstring)."""

    def __init__(
        self,
        client: EtcdClient,
        rack: str,
        controller_id: str,
        *,
        ttl: int = DEFAULT_LEASE_TTL,
        on_elected: Callable[[int], Awaitable[None]],
        on_deposed: Callable[[], Awaitable[None]],
    ) -> None:
        self.client = client
        self.rack = rack
        self.id = controller_id
        self.address = ""  # set once the gRPC server listens, before start()
        self.ttl = ttl
        self.key = leader_key(rack)
        self.on_elected = on_elected
        self.on_deposed = on_deposed
        self.leader: Leader | None = None
        self.epoch = 0
        self.since = time.time()  # when this controller last became leader or standby
        self.elections = 0  # leaderships won
        self.granted_ttl = ttl
        self._leading = False
        self._expires = 0.0  # loop time until which the lease surely holds
        self._lease = 0
        self._tasks = BackgroundTasks(f"leadership {controller_id}")

    @property
    def shared(self) -> bool:
        return True

    @property
    def leads(self) -> bool:
        """Whether this controller leads now (False from the moment its lease may be gone)."""
        return self._leading and asyncio.get_running_loop().time() < self._expires

    def start(self) -> None:
        """Campaign, and keep campaigning, in a task of its own (stopped by `stop`)."""
        if not self.address:
            raise ValueError("give the leadership its gRPC address before starting it")
        self._tasks.start("campaign", self._run())

    async def stop(self) -> None:
        """Stop campaigning; a leader revokes its lease, so a standby takes over at once."""
        await self._tasks.stop()
        self._leading = False
        if self._lease:
            try:
                await self.client.revoke(self._lease, timeout=1.0)
            except (EtcdUnavailable, grpc.aio.AioRpcError) as error:
                log.info("could not revoke lease %x (it expires by itself): %s", self._lease,
                         getattr(error, "message", error))  # fmt: skip
            self._lease = 0

    # -- the loop ------------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0  # sessions in a row that ended early: etcd away, or refusing us
        while True:
            began = loop.time()
            try:
                await self._session()
            except (Unavailable, grpc.aio.AioRpcError) as error:
                message = error.message if isinstance(error, Unavailable) else error.details()
                log.warning("%s: %s", self.id, message)
            except Exception:  # keep campaigning whatever happened
                log.exception("%s: the election failed", self.id)
            await self._depose()
            failures = failures + 1 if loop.time() - began < self.granted_ttl else 0
            # At once after a session that held; backing off to 1 s while etcd stays away.
            await asyncio.sleep(min(1.0, RETRY_SECONDS * 2 ** max(0, failures - 1)))

    async def _session(self) -> None:
        """One lease: keep it alive and campaign with it, until it or the leadership is lost."""
        loop = asyncio.get_running_loop()
        sent = loop.time()
        grant = await self.client.grant(self.ttl)
        self._lease, self.granted_ttl = grant.ID, grant.TTL
        self._expires = sent + grant.TTL
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._keep_alive(grant.ID), name="lease-keep-alive")
                group.create_task(self._campaign(grant.ID), name="campaign")
        except BaseExceptionGroup as errors:
            raise errors.exceptions[0] from None
        finally:
            lease, self._lease = self._lease, 0
            if self._leading and loop.time() < self._expires:
                # Deposed with the lease alive (the key was deleted): end it, start afresh.
                with contextlib.suppress(EtcdUnavailable, grpc.aio.AioRpcError):
                    await self.client.revoke(lease, timeout=0.5)

    async def _keep_alive(self, lease: int) -> None:
        """Renew `lease` every quarter TTL, on the next member when one fails; raises
        `_LeaseLost` once it may have expired."""
        loop = asyncio.get_running_loop()
        while True:
            call = self.client.keep_alive_stream()
            try:
                while True:
                    sent = loop.time()
                    await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease))
                    async with asyncio.timeout_at(self._expires):
                        answer = await call.read()
                    if answer is grpc.aio.EOF:
                        raise EtcdUnavailable(f"etcd {self.client.url} ended the keep-alives")
                    if answer.TTL <= 0:
                        raise _LeaseLost(f"etcd says lease {lease:x} has expired")
                    self._expires = sent + answer.TTL
                    await asyncio.sleep(max(0.05, answer.TTL / 4))
            except TimeoutError:
                raise _LeaseLost(
                    f"no keep-alive of lease {lease:x} was answered before it could expire"
                ) from None
            except (grpc.aio.AioRpcError, EtcdUnavailable) as error:
                if loop.time() >= self._expires:
                    raise _LeaseLost(
                        f"etcd {self.client.url} could not renew lease {lease:x}"
                    ) from error
                self.client.next_member()
                await asyncio.sleep(RETRY_SECONDS)
            finally:
                call.cancel()

    async def _campaign(self, lease: int) -> None:
        """Take the leader key when it is free; follow its holder while it is not."""
        value = json.dumps({"id": self.id, "address": self.address}).encode()
        while True:
            answer = await self.client.txn(
                rpc_pb2.TxnRequest(
                    compare=[compare_create_revision(self.key, 0)],
                    success=[put(self.key, value, lease)],
                    failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=self.key))],
                )
            )
            if answer.succeeded:
                await self._lead(answer.header.revision)  # returns only when deposed
                raise Unavailable(f"{self.id}: the leader key of rack {self.rack} went")
            held = answer.responses[0].response_range.kvs
            if not held:
                continue  # it went meanwhile
            holder = held[0]
            if holder.lease == lease:  # ours: an earlier try took it and its answer was lost
                await self._lead(holder.create_revision)
                raise Unavailable(f"{self.id}: the leader key of rack {self.rack} went")
            self.leader = _leader_of(holder)
            log.info("%s: standby; %s leads rack %s (epoch %d)", self.id, self.leader.id,
                     self.rack, self.leader.epoch)  # fmt: skip
            await self._until_vacant(holder)

    async def _lead(self, epoch: int) -> None:
        """Lead at `epoch` until the leader key is no longer ours."""
        self.epoch, self._leading, self.since = epoch, True, time.time()
        self.elections += 1
        self.leader = Leader(self.id, self.address, epoch)
        log.info("%s: leading rack %s (epoch %d)", self.id, self.rack, epoch)
        await self.on_elected(epoch)
        held = await self.client.get(self.key)
        if held is not None and held.create_revision == epoch:
            await self._until_vacant(held)

    async def _until_vacant(self, holder: kv_pb2.KeyValue) -> None:
        """Return when the key `holder` describes is deleted or created anew; meanwhile keep
        `leader` up to date. A broken watch is opened again (on the next member)."""
        created, revision = holder.create_revision, holder.mod_revision
        while True:
            try:
                async for event in self.client.watch(self.key, revision + 1):
                    if event.type == kv_pb2.Event.DELETE or event.kv.create_revision != created:
                        return
                    revision = event.kv.mod_revision
                    self.leader = _leader_of(event.kv)
            except (grpc.aio.AioRpcError, EtcdUnavailable) as error:
                log.debug("%s: watch of %s broke: %s", self.id, self.key.decode(), error)
                self.client.next_member()
                await asyncio.sleep(RETRY_SECONDS)
            try:
                held = await self.client.get(self.key)
            except (grpc.aio.AioRpcError, EtcdUnavailable):
                continue  # etcd away: the lease decides (the keep-alives raise if it goes)
            if held is None or held.create_revision != created:
                return
            revision = held.mod_revision

    async def _depose(self) -> None:
        """No longer leading (if it was): say so, and let the controller fence itself."""
        was, self._leading = self._leading, False
        if self.leader is not None and self.leader.id == self.id:
            self.leader = None
        if was:
            self.since = time.time()
            log.warning("%s: no longer leads rack %s (epoch %d)", self.id, self.rack, self.epoch)
            await self.on_deposed()


def _leader_of(held: kv_pb2.KeyValue) -> Leader:
    """The leader a leader key names (a value we cannot read names nobody reachable)."""
    try:
        value = json.loads(held.value)
        return Leader(str(value["id"]), str(value["address"]), held.create_revision)
    except (ValueError, KeyError, TypeError):
        return Leader(f"unknown (leader key value {held.value[:40]!r})", "", held.create_revision)
