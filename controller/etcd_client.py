"""A small asyncio client of etcd's v3 gRPC API: what the etcd store and the election need.

It speaks etcd's own protos (vendored in `fusionrack.etcdv3`, generated with the grpcio-tools we
pin) over grpc.aio, so it shares the project's grpcio and protobuf instead of pinning its own
(the asyncio client libraries on PyPI either pin old grpcio/protobuf, dial one endpoint only,
or install bare top-level packages). It covers KV Range and Txn, Watch, and Lease Grant,
KeepAlive and Revoke, against etcd 3.4 and later (the v3 API has not changed there).

`etcd://HOST:PORT[,HOST:PORT...]` names the cluster's members. A unary call goes to the member
that answered last and, when that one cannot be reached (UNAVAILABLE: nothing was sent), to the
next; a call that timed out is not sent again (a write may have been applied). Streams
(keep-alives, watches) are opened on the current member by their owners, who open them again
when they break. Every call has a deadline.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from fusionrack.emulator import InvalidArgument, Unavailable
from fusionrack.etcdv3 import kv_pb2, rpc_pb2, rpc_pb2_grpc
from fusionrack.rpc import TlsFiles

__all__ = [
    "SCHEME",
    "EtcdClient",
    "EtcdUnavailable",
    "compare_create_revision",
    "parse_etcd_url",
    "put",
    "range_of",
]

log = logging.getLogger(__name__)

SCHEME = "etcd://"
CALL_TIMEOUT = 2.0  # s; an etcd on loopback answers in ~1 ms, a member that lost quorum never
# etcd's gRPC server takes requests of up to 1.5 MiB by default; ours are far smaller, but a
# range of many idempotency records can be large.
_OPTIONS = [("grpc.max_receive_message_length", 64 << 20)]


class EtcdUnavailable(Unavailable):
    """No member of the etcd cluster answers; the message names every address tried."""


def parse_etcd_url(url: str) -> list[str]:
    """The member addresses of ``etcd://HOST:PORT[,HOST:PORT...]``; InvalidArgument if not."""
    if not url.startswith(SCHEME):
        raise InvalidArgument(f"{url!r} is not an etcd URL: give etcd://HOST:PORT[,HOST:PORT...]")
    members = [m.strip() for m in url[len(SCHEME) :].rstrip("/").split(",")]
    for member in members:
        host, _, port = member.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidArgument(
                f"{url!r}: {member!r} is not HOST:PORT (give etcd://HOST:PORT[,HOST:PORT...])"
            )
    return members


def range_of(prefix: bytes) -> bytes:
    """The range_end that makes a request cover every key starting with `prefix`."""
    end = bytearray(prefix)
    while end and end[-1] == 0xFF:
        end.pop()
    if not end:
        return b"\0"  # every key
    end[-1] += 1
    return bytes(end)


def compare_create_revision(key: bytes, revision: int) -> rpc_pb2.Compare:
    """A Txn condition: `key` was created at `revision` (0: it does not exist)."""
    return rpc_pb2.Compare(
        key=key,
        target=rpc_pb2.Compare.CREATE,
        result=rpc_pb2.Compare.EQUAL,
        create_revision=revision,
    )


def put(key: bytes, value: bytes, lease: int = 0) -> rpc_pb2.RequestOp:
    """A Txn operation writing `value` at `key` (attached to `lease` if not 0)."""
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value, lease=lease))


class EtcdClient:
    """Channels to the members of one etcd cluster, and the calls the controller makes."""

    def __init__(
        self,
        members: Sequence[str],
        *,
        timeout: float = CALL_TIMEOUT,
        tls: TlsFiles | None = None,
    ) -> None:
        """`tls`: speak TLS to every member, trusting `tls.ca` (None: the system's roots) and,
        for an etcd that requires client certificates, presenting `tls.cert`/`tls.key`."""
        if not members:
            raise InvalidArgument("an etcd client needs at least one member address")
        self.members = list(members)
        self.timeout = timeout
        self.tls = tls if tls is not None and tls.enabled else None
        if self.tls is None:
            self._channels = [grpc.aio.insecure_channel(m, options=_OPTIONS) for m in members]
        else:
            credentials = self.tls.channel_credentials()
            self._channels = [
                grpc.aio.secure_channel(m, credentials, options=_OPTIONS) for m in members
            ]
        self._current = 0

    @property
    def url(self) -> str:
        """The cluster as `--store` names it."""
        return SCHEME + ",".join(self.members)

    def channel(self) -> grpc.aio.Channel:
        """The channel to the member in use (for the owners of streams)."""
        return self._channels[self._current]

    def next_member(self) -> None:
        """Use the next member (a stream on the current one broke)."""
        self._current = (self._current + 1) % len(self._channels)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    async def _unary(self, service: str, method: str, request: Any, timeout: float | None) -> Any:
        """`service.method(request)` on the current member, else the next ones in turn."""
        stubs = {
            "KV": rpc_pb2_grpc.KVStub,
            "Lease": rpc_pb2_grpc.LeaseStub,
            "Maintenance": rpc_pb2_grpc.MaintenanceStub,
        }
        failures = []
        for _ in range(len(self._channels)):
            stub = stubs[service](self.channel())
            try:
                return await getattr(stub, method)(request, timeout=timeout or self.timeout)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                        raise EtcdUnavailable(
                            f"etcd member {self.members[self._current]} did not answer "
                            f"{method} within {timeout or self.timeout:g} s (it may have lost "
                            "its quorum)"
                        ) from error
                    raise
                failures.append(f"{self.members[self._current]}: {error.details()}")
                self.next_member()
        raise EtcdUnavailable(
            f"no member of etcd cluster {self.url} can be reached ({'; '.join(failures)})"
        )

    async def status(self, timeout: float | None = None) -> rpc_pb2.StatusResponse:
        """The current member's status (its version, the cluster's leader): a reachability test."""
        return await self._unary("Maintenance", "Status", rpc_pb2.StatusRequest(), timeout)

    async def get(self, key: bytes) -> kv_pb2.KeyValue | None:
        """The key's value now (a linearizable read), or None."""
        answer = await self._unary("KV", "Range", rpc_pb2.RangeRequest(key=key), None)
        return answer.kvs[0] if answer.kvs else None

    async def range(self, request: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        return await self._unary("KV", "Range", request, None)

    async def txn(self, request: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        return await self._unary("KV", "Txn", request, None)

    async def grant(self, ttl: int) -> rpc_pb2.LeaseGrantResponse:
        """A new lease of `ttl` seconds (etcd may grant more: its minimum TTL)."""
        answer = await self._unary("Lease", "LeaseGrant", rpc_pb2.LeaseGrantRequest(TTL=ttl), None)
        if answer.error:
            raise EtcdUnavailable(f"etcd {self.url} refused a lease: {answer.error}")
        return answer

    async def revoke(self, lease: int, timeout: float | None = None) -> None:
        """End `lease` now: every key attached to it goes."""
        await self._unary("Lease", "LeaseRevoke", rpc_pb2.LeaseRevokeRequest(ID=lease), timeout)

    def keep_alive_stream(self) -> Any:
        """A LeaseKeepAlive stream on the current member (write requests, read answers)."""
        return rpc_pb2_grpc.LeaseStub(self.channel()).LeaseKeepAlive()

    async def watch(self, key: bytes, start_revision: int) -> AsyncIterator[kv_pb2.Event]:
        """The events of `key` from `start_revision` on, until the stream breaks (raises).

        A revision etcd compacted away ends it with FailedPrecondition-like Unavailable: the
        caller reads the key again and watches from there.
        """
        call = rpc_pb2_grpc.WatchStub(self.channel()).Watch()
        try:
            await call.write(
                rpc_pb2.WatchRequest(
                    create_request=rpc_pb2.WatchCreateRequest(
                        key=key, start_revision=start_revision
                    )
                )
            )
            while True:
                answer = await call.read()
                if answer is grpc.aio.EOF:
                    raise EtcdUnavailable(f"etcd {self.url} ended the watch of {key.decode()!r}")
                if answer.canceled or answer.compact_revision:
                    raise EtcdUnavailable(
                        f"etcd {self.url} cancelled the watch of {key.decode()!r} "
                        f"({answer.cancel_reason or 'revision compacted'})"
                    )
                for event in answer.events:
                    yield event
        finally:
            call.cancel()


async def wait_reachable(client: EtcdClient, timeout: float) -> rpc_pb2.StatusResponse:
    """The status of a member of `client`'s cluster, trying every member until `timeout`;
    EtcdUnavailable naming them all if none answers."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await client.status(timeout=max(0.1, min(1.0, deadline - loop.time())))
        except EtcdUnavailable as error:
            if loop.time() >= deadline:
                remedy = (
                    "start etcd there, or give --store the addresses of its members "
                    "(etcd://HOST:PORT,...)"
                )
                if client.tls is not None:
                    remedy += (
                        "; with TLS, check that --etcd-ca signed etcd's certificate (for the "
                        "address given) and, if etcd asks for one, --etcd-cert/--etcd-key"
                    )
                raise EtcdUnavailable(
                    f"cannot reach etcd at {', '.join(client.members)} within {timeout:g} s "
                    f"({error.message}); {remedy}"
                ) from None
            await asyncio.sleep(0.1)
