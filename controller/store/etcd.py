"""The controller's desired state in etcd, shared by the two or three controllers of a rack.

Keys, under `/fusionrack/<rack>/`:

* `desired-state`: the desired-state document, in an envelope
  ``{"format": "fusionrack.desired-state", "version": 1, "rack": ..., "document": TEXT,
  "checksum": BLAKE2b(TEXT)}`` (the document is kept as the exact text its checksum covers);
* `idempotency/<key>`: the answer to a request made with idempotency key `<key>`:
  ``{"format": "fusionrack.idempotency", "version": 1, "method", "request_digest",
  "response": base64, "created": unix seconds, "checksum"}``;
* `leader`: the leader (`leadership.py`), attached to its lease.

Every write is one etcd transaction conditioned on the writer's leadership: the leader key must
still be the one created at the writer's epoch (`fence`). A document change and the record of
the request that caused it are in the same transaction, so either both are saved or neither.
A deposed leader's write fails the condition and changes nothing (`NotLeader`).

A value that is not this format (another program's key, a newer fusionrack's, bytes changed)
is refused with FailedPrecondition naming the cluster, the key, what is wrong and what to do,
never read as "no desired state": a controller started on an empty rack would tear down every
partition. Standbys follow the document with a watch (`documents`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from fusionrack.emulator import FailedPrecondition, InvalidArgument, Unavailable
from fusionrack.etcdv3 import kv_pb2, rpc_pb2
from fusionrack.rpc import TlsFiles

from ..etcd_client import (
    EtcdClient,
    EtcdUnavailable,
    compare_create_revision,
    put,
    range_of,
    wait_reachable,
)
from ..leadership import NotLeader, leader_key
from . import KEEP_SECONDS, Remembered, document_text

__all__ = ["DOCUMENT_FORMAT", "FORMAT_VERSION", "RECORD_FORMAT", "EtcdStore"]

log = logging.getLogger(__name__)

DOCUMENT_FORMAT = "fusionrack.desired-state"
RECORD_FORMAT = "fusionrack.idempotency"
FORMAT_VERSION = 1  # bump with a migration
CONNECT_TIMEOUT = 5.0  # s for etcd to answer when the controller starts


class EtcdStore:
    """The desired state and idempotency records of one rack, under its prefix in etcd."""

    def __init__(self, client: EtcdClient, rack: str) -> None:
        self.client = client
        self.rack = rack
        self.prefix = f"/fusionrack/{rack}/".encode()
        self.document_key = self.prefix + b"desired-state"
        self.records = self.prefix + b"idempotency/"
        self.leader_key = leader_key(rack)
        self._epoch = 0  # writes need the leader key created at this revision; 0: none allowed
        self._saved_revision = 0  # the document revision this controller wrote or read last

    @classmethod
    async def open(
        cls,
        members: list[str],
        rack: str,
        *,
        timeout: float = CONNECT_TIMEOUT,
        tls: TlsFiles | None = None,
    ) -> EtcdStore:
        """The store of `rack` in the etcd cluster of `members` (over TLS with `tls`), once a
        member answers; Unavailable naming every address if none does within `timeout`."""
        client = EtcdClient(members, tls=tls)
        try:
            await wait_reachable(client, timeout)
        except BaseException:
            await client.close()
            raise
        return cls(client, rack)

    @property
    def where(self) -> str:
        return f"{self.client.url} key {self.document_key.decode()}"

    @property
    def location(self) -> str:
        return self.client.url

    @property
    def shared(self) -> bool:
        return True

    def refusal(
        self, problem: str, remedy: str = "", *, damaged: bool = True, key: bytes | None = None
    ) -> FailedPrecondition:
        key = key or self.document_key
        members = ",".join(self.client.members)
        remedy = remedy or (
            "restore it from a backup of etcd (etcdctl snapshot restore); or, to start this "
            "rack with no partitions, multicast groups, drains or traffic sessions, delete it: "
            f"etcdctl --endpoints={members} del {key.decode()}"
        )
        verdict = "is damaged" if damaged else "cannot be used"
        return FailedPrecondition(
            f"etcd store {self.client.url} key {key.decode()} {verdict}: {problem}. The "
            f"controller does not start rather than drive the rack with a wrong desired state: "
            f"{remedy}"
        )

    def fence(self, epoch: int) -> None:
        self._epoch = epoch

    async def close(self) -> None:
        await self.client.close()

    # -- the document --------------------------------------------------------------------------

    async def load(self, rack: str) -> dict[str, Any] | None:
        held = await self._call(self.client.get(self.document_key), "read the desired state")
        if held is None:
            return None
        self._saved_revision = held.mod_revision
        return self._document(held.value, rack)

    def _document(self, value: bytes, rack: str) -> dict[str, Any]:
        """The document an envelope holds; FailedPrecondition if it is not one of ours."""
        envelope = self._envelope(value, DOCUMENT_FORMAT, self.document_key)
        text = envelope.get("document")
        if not isinstance(text, str) or _checksum(text.encode()) != envelope.get("checksum"):
            raise self.refusal(
                "its desired-state document does not match its checksum: bytes inside it were "
                "changed"
            )
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise self.refusal(f"its desired-state document is not JSON ({exc})") from exc
        if not isinstance(document, dict):
            raise self.refusal("its desired-state document is not a JSON object")
        if document.get("rack") != rack or envelope.get("rack") != rack:
            raise FailedPrecondition(
                f"etcd store {self.where} holds the desired state of rack "
                f"{document.get('rack')!r}, not {rack!r}; give this controller rack {rack!r}'s "
                "manifest, or the etcd cluster of that rack"
            )
        return document

    def _envelope(self, value: bytes, form: str, key: bytes) -> dict[str, Any]:
        """The JSON object of `value` if it is of format `form` and a version we read."""
        try:
            envelope = json.loads(value)
        except (ValueError, UnicodeDecodeError):
            envelope = None
        if not isinstance(envelope, dict) or envelope.get("format") != form:
            raise self.refusal(
                f"its value is not a {form} that fusionrack writes (its first bytes: "
                f"{value[:40]!r}): another program's key, or one overwritten",
                "give this rack's controllers an etcd prefix nobody else writes (every key of "
                f"rack {self.rack} is under {self.prefix.decode()}), or restore the key from a "
                "backup of etcd",
                damaged=False,
                key=key,
            )
        version = envelope.get("version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise FailedPrecondition(
                f"etcd store {self.client.url} key {key.decode()} has format version "
                f"{version!r}, newer than the {FORMAT_VERSION} this controller knows; run a "
                "newer fusionrack"
            )
        return envelope

    async def save(self, document: dict[str, Any], *, remember: Remembered | None = None) -> None:
        text = document_text(document)
        envelope = {
            "format": DOCUMENT_FORMAT,
            "version": FORMAT_VERSION,
            "rack": document["rack"],
            "document": text,
            "checksum": _checksum(text.encode()),
        }
        value = json.dumps(envelope, sort_keys=True).encode()
        writes = [put(self.document_key, value)]
        if remember is not None:
            writes.append(put(self._record_key(remember.key), _record_value(remember)))
        try:
            answer = await self._fenced(writes, "save the change")
        except NotLeader:
            raise
        except Unavailable:
            # The outcome may be unknown (no answer in time): if our document is there, it was
            # saved (its text has the change's times: no other save writes the same bytes).
            try:
                held = await self.client.get(self.document_key)
            except (grpc.aio.AioRpcError, EtcdUnavailable):
                held = None
            if held is None or held.value != value:
                raise
            self._saved_revision = held.mod_revision
            return
        self._saved_revision = answer.header.revision

    async def documents(self) -> AsyncIterator[dict[str, Any]]:
        """Every document saved after the one last loaded or saved here, as it is saved."""
        revision = self._saved_revision
        while True:
            try:
                async for event in self.client.watch(self.document_key, revision + 1):
                    revision = event.kv.mod_revision
                    if event.type == kv_pb2.Event.PUT:
                        document = self._followed(event.kv.value)
                        if document is not None:
                            yield document
            except (grpc.aio.AioRpcError, EtcdUnavailable) as error:
                log.debug("watch of %s broke: %s", self.document_key.decode(), error)
                self.client.next_member()
                await asyncio.sleep(0.1)
                try:
                    held = await self.client.get(self.document_key)
                except (grpc.aio.AioRpcError, EtcdUnavailable):
                    continue
                if held is not None and held.mod_revision > revision:
                    revision = held.mod_revision
                    document = self._followed(held.value)
                    if document is not None:
                        yield document

    def _followed(self, value: bytes) -> dict[str, Any] | None:
        """The document a standby follows, or None (logged) if it cannot be read: the standby
        keeps what it has; were it to lead, loading it again refuses it."""
        try:
            return self._document(value, self.rack)
        except FailedPrecondition as error:
            log.error("%s", error.message)
            return None

    # -- idempotency records -------------------------------------------------------------------

    def _record_key(self, key: str) -> bytes:
        return self.records + key.encode()

    async def remembered(self, key: str, method: str, request_digest: str) -> bytes | None:
        record_key = self._record_key(key)
        held = await self._call(self.client.get(record_key), "read an idempotency record")
        if held is None:
            return None
        record = self._envelope(held.value, RECORD_FORMAT, record_key)
        try:
            response = base64.b64decode(record["response"], validate=True)
            fields = (record["method"], record["request_digest"], float(record["created"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise self.refusal(
                f"the idempotency record lacks a field ({exc})", key=record_key
            ) from exc
        if record.get("checksum") != _record_checksum(key, *fields, response):
            raise self.refusal(
                "the idempotency record does not match its checksum: bytes inside it were changed",
                key=record_key,
            )
        if fields[2] < time.time() - KEEP_SECONDS:
            return None
        if (fields[0], fields[1]) != (method, request_digest):
            raise InvalidArgument(
                f"idempotency key {key!r} was used for a different request "
                f"({fields[0]} {fields[1][:16]}, not {method} {request_digest[:16]}); "
                "use a new key for every distinct request"
            )
        return response

    async def remember(self, entry: Remembered) -> None:
        await self._fenced([put(self._record_key(entry.key), _record_value(entry))], "record it")

    async def prune(self, now: float) -> int:
        """Delete the records older than KEEP_SECONDS before `now` (the leader's job); how many
        went."""
        listing = rpc_pb2.RangeRequest(key=self.records, range_end=range_of(self.records))
        answer = await self._call(self.client.range(listing), "list the idempotency records")
        old = []
        for held in answer.kvs:
            try:
                created = float(json.loads(held.value)["created"])
            except (ValueError, KeyError, TypeError):
                continue  # damaged: refused when asked for, not deleted unseen
            if created < now - KEEP_SECONDS:
                old.append(held.key)
        for start in range(0, len(old), 100):  # etcd takes up to 128 operations a transaction
            deletes = [
                rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=k))
                for k in old[start : start + 100]
            ]
            await self._fenced(deletes, "delete expired idempotency records")
        return len(old)

    # -- writes ------------------------------------------------------------------------------

    async def _fenced(self, writes: list[rpc_pb2.RequestOp], what: str) -> rpc_pb2.TxnResponse:
        """`writes` in one transaction that holds only while this controller's leadership does."""
        if not self._epoch:
            raise NotLeader(
                f"this controller does not lead rack {self.rack}, so it may not {what} in etcd "
                f"{self.client.url}: nothing was changed; send the request to the leader "
                "(fusionctl and fusionrack's Session find it by themselves)"
            )
        request = rpc_pb2.TxnRequest(
            compare=[compare_create_revision(self.leader_key, self._epoch)],
            success=writes,
            failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=self.leader_key))],
        )
        answer = await self._call(self.client.txn(request), what)
        if not answer.succeeded:
            epoch, self._epoch = self._epoch, 0
            held = answer.responses[0].response_range.kvs
            now = f"epoch {held[0].create_revision}" if held else "nobody, an election is on"
            raise NotLeader(
                f"this controller's leadership of rack {self.rack} (epoch {epoch}) has ended "
                f"(now: {now}), so it could not {what}: nothing was changed; send the request "
                "again (to the leader: fusionctl and fusionrack's Session find it by themselves)"
            )
        return answer

    async def _call(self, call: Any, what: str) -> Any:
        """Await `call`, an etcd request; etcd's failures become Unavailable saying `what`."""
        try:
            return await call
        except EtcdUnavailable as error:
            raise Unavailable(f"could not {what}: {error.message}") from error
        except grpc.aio.AioRpcError as error:
            raise Unavailable(
                f"etcd {self.client.url} refused to {what}: {error.code().name}: {error.details()}"
            ) from error


def _checksum(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _record_checksum(
    key: str, method: str, request_digest: str, created: float, response: bytes
) -> str:
    fields = json.dumps([key, method, request_digest, created]).encode()
    return _checksum(fields + b"\0" + response)


def _record_value(entry: Remembered) -> bytes:
    return json.dumps(
        {
            "format": RECORD_FORMAT,
            "version": FORMAT_VERSION,
            "method": entry.method,
            "request_digest": entry.request_digest,
            "response": base64.b64encode(entry.response).decode(),
            "created": entry.created,
            "checksum": _record_checksum(
                entry.key, entry.method, entry.request_digest, entry.created, entry.response
            ),
        },
        sort_keys=True,
    ).encode()
