"""The etcd store against a real etcd: what it saves comes back, only a leader's writes land,
and a value it did not write, or that was changed, is refused with FailedPrecondition naming the
cluster and the key (as the SQLite store refuses a damaged file), as is an etcd nobody answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from fusionrack.controller.domain import Controller
from fusionrack.controller.etcd_client import EtcdClient, compare_create_revision, put
from fusionrack.controller.leadership import NotLeader, leader_key
from fusionrack.controller.store import Remembered
from fusionrack.controller.store.etcd import EtcdStore
from fusionrack.emulator import FailedPrecondition, InvalidArgument, Topology, Unavailable
from fusionrack.etcdv3 import rpc_pb2
from tests.support.etcd_server import Etcd, _free_port

CONTROLLER = str(Path(sys.executable).with_name("fusion-controller"))
KEY = b"/fusionrack/mini/desired-state"


def document(rack: str = "mini", generation: int = 3) -> dict[str, Any]:
    return {"rack": rack, "generation": generation, "partitions": [], "multicast_groups": []}


async def elect(client: EtcdClient, rack: str = "mini", lease: int = 0) -> int:
    """Make the leader key of `rack` (as an election would); its epoch."""
    answer = await client.txn(
        rpc_pb2.TxnRequest(
            compare=[compare_create_revision(leader_key(rack), 0)],
            success=[put(leader_key(rack), b'{"id": "test", "address": ""}', lease)],
        )
    )
    assert answer.succeeded
    return answer.header.revision


async def overwrite(client: EtcdClient, key: bytes, value: bytes) -> None:
    await client.txn(rpc_pb2.TxnRequest(success=[put(key, value)]))


@pytest.fixture(scope="module")
def shared_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Etcd]:
    """One etcd for the module's store tests (each starts on an empty one: `store` wipes it)."""
    server = Etcd(tmp_path_factory.mktemp("etcd"))
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def store(shared_etcd: Etcd) -> AsyncIterator[EtcdStore]:
    opened = await EtcdStore.open([shared_etcd.address], "mini")
    every_key = rpc_pb2.DeleteRangeRequest(key=b"\0", range_end=b"\0")
    await opened.client.txn(rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(
        request_delete_range=every_key)]))  # fmt: skip
    try:
        yield opened
    finally:
        await opened.close()


async def test_a_leaders_document_and_record_come_back_and_the_record_answers_once(
    store: EtcdStore,
) -> None:
    assert await store.load("mini") is None  # a fresh cluster: no desired state yet
    store.fence(await elect(store.client))
    entry = Remembered("k1", "CreatePartition", "ab" * 16, b"answer", time.time())
    await store.save(document(), remember=entry)
    assert await store.load("mini") == document()
    assert await store.remembered("k1", "CreatePartition", "ab" * 16) == b"answer"
    assert await store.remembered("k2", "CreatePartition", "ab" * 16) is None
    with pytest.raises(InvalidArgument, match="used for a different request"):
        await store.remembered("k1", "DeletePartition", "ab" * 16)


async def test_a_deposed_leaders_writes_change_nothing(store: EtcdStore) -> None:
    epoch = await elect(store.client)
    store.fence(epoch)
    await store.save(document(generation=1))
    # Its lease expired and another controller was elected: the key was created anew.
    await store.client.txn(
        rpc_pb2.TxnRequest(
            success=[rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(
                key=leader_key("mini")))]
        )
    )  # fmt: skip
    successor = await elect(store.client)
    assert successor > epoch
    entry = Remembered("k1", "CreatePartition", "ab" * 16, b"answer", time.time())
    with pytest.raises(NotLeader, match=f"epoch {epoch}.*now: epoch {successor}"):
        await store.save(document(generation=2), remember=entry)
    assert (await store.load("mini"))["generation"] == 1
    assert await store.remembered("k1", "CreatePartition", "ab" * 16) is None
    with pytest.raises(NotLeader, match="does not lead rack mini"):
        await store.remember(entry)  # once refused, it writes nothing until elected again
    store.fence(successor)
    await store.save(document(generation=2))
    assert (await store.load("mini"))["generation"] == 2


DAMAGED = {
    "not JSON": (b"\x00\x01 binary", "is not a fusionrack.desired-state"),
    "another program's JSON": (b'{"hello": "world"}', "another program's key"),
    "bytes changed inside the document": (None, "does not match its checksum"),
    "a newer format": (None, "newer than the 1 this controller knows"),
    "another rack's": (None, "desired state of rack 'other', not 'mini'"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
async def test_a_damaged_or_foreign_value_is_refused_naming_the_key(
    store: EtcdStore, case: str
) -> None:
    value, words = DAMAGED[case]
    store.fence(await elect(store.client))
    await store.save(document())
    good = json.loads((await store.client.get(KEY)).value)
    if case == "bytes changed inside the document":
        good["document"] = good["document"].replace('"generation":3', '"generation":4')
    elif case == "a newer format":
        good["version"] = 2
    elif case == "another rack's":
        good["document"] = good["document"].replace('"rack":"mini"', '"rack":"other"')
        good["rack"] = "other"
        good["checksum"] = hashlib.blake2b(good["document"].encode(), digest_size=16).hexdigest()
    await overwrite(store.client, KEY, value if value is not None else json.dumps(good).encode())
    with pytest.raises(FailedPrecondition) as raised:
        await store.load("mini")
    message = raised.value.message
    assert words in message, message
    assert store.client.url in message and KEY.decode() in message, message
    if case != "a newer format" and case != "another rack's":
        assert "The controller does not start" in message, message


async def test_a_damaged_idempotency_record_is_refused_not_taken_for_unknown(
    store: EtcdStore,
) -> None:
    store.fence(await elect(store.client))
    await store.remember(Remembered("k1", "CreatePartition", "ab" * 16, b"answer", time.time()))
    key = b"/fusionrack/mini/idempotency/k1"
    record = json.loads((await store.client.get(key)).value)
    record["response"] = "YW5vdGhlcg=="  # "another": a different first answer
    await overwrite(store.client, key, json.dumps(record).encode())
    with pytest.raises(FailedPrecondition, match="does not match its checksum") as raised:
        await store.remembered("k1", "CreatePartition", "ab" * 16)
    assert key.decode() in raised.value.message


async def test_a_document_that_is_not_a_valid_desired_state_is_refused(
    store: EtcdStore, mini: Topology
) -> None:
    store.fence(await elect(store.client))
    await store.save({**document(), "owner": "someone"})
    controller = Controller(mini, store, {t.name: "127.0.0.1:9" for t in mini.trays})
    try:
        with pytest.raises(FailedPrecondition) as raised:
            await controller.load()
    finally:
        await controller.stop()
    message = raised.value.message
    assert "unknown fields ['owner']" in message and KEY.decode() in message, message


async def test_an_etcd_nobody_answers_is_refused_naming_every_address() -> None:
    members = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
    began = time.monotonic()
    with pytest.raises(Unavailable) as raised:
        await EtcdStore.open(members, "mini", timeout=0.5)
    assert time.monotonic() - began < 5
    assert f"cannot reach etcd at {members[0]}, {members[1]}" in raised.value.message


def test_fusion_controller_exits_1_naming_the_unreachable_etcd_or_the_damaged_key(
    etcd: Etcd,
) -> None:
    nobody = f"127.0.0.1:{_free_port()}"
    common = [CONTROLLER, "--manifest", "mini", "--listen", "127.0.0.1:0", "--log-level", "ERROR"]
    result = subprocess.run(
        [*common, "--store", f"etcd://{nobody}", "--store-timeout", "0.5"], capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(f"fusion-controller: cannot reach etcd at {nobody}")
    assert "Traceback" not in result.stderr

    async def damage() -> None:
        client = EtcdClient([etcd.address])
        try:
            await overwrite(client, KEY, b"not ours")
        finally:
            await client.close()

    asyncio.run(damage())
    result = subprocess.run(
        [*common, "--store", etcd.url], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(f"fusion-controller: etcd store {etcd.url} key {KEY.decode()}")
    assert "another program's key" in result.stderr and "Traceback" not in result.stderr
