"""The controller's state store: round trips, atomicity, SIGKILL durability, refusals."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from fusionrack.controller.store import KEEP_SECONDS, Remembered
from fusionrack.controller.store.sqlite import SCHEMA_VERSION, StateStore
from fusionrack.emulator import FailedPrecondition, InvalidArgument

DOC = {"rack": "mini", "generation": 3, "partitions": [{"id": 1, "name": "p", "members": [0, 1]}]}


def entry(key: str = "k1", digest: str = "ab" * 16, created: float | None = None) -> Remembered:
    """An idempotency record for a CreatePartition call."""
    return Remembered(
        key=key,
        method="CreatePartition",
        request_digest=digest,
        response=b"\x08\x01\x12\x01p",
        created=time.time() if created is None else created,
    )


def test_a_fresh_file_has_no_document(tmp_path: Path) -> None:
    with StateStore(tmp_path / "state.db") as store:
        assert store.load("mini") is None
        assert store.remembered("k1", "CreatePartition", "ab" * 16) is None


def test_a_document_round_trips_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with StateStore(path) as store:
        store.save(DOC)
        assert store.load("mini") == DOC
    with StateStore(path) as store:
        assert store.load("mini") == DOC


def test_save_replaces_the_document(tmp_path: Path) -> None:
    with StateStore(tmp_path / "state.db") as store:
        store.save(DOC)
        newer = {"rack": "mini", "generation": 4, "partitions": []}
        store.save(newer)
        assert store.load("mini") == newer


def test_document_and_idempotency_record_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    code = f"""
import os, signal
from fusionrack.controller.store import Remembered
from fusionrack.controller.store.sqlite import StateStore
store = StateStore({str(path)!r})
done = Remembered("k1", "CreatePartition", "ab" * 16, b"resp", {time.time()!r})
store.save({DOC!r}, remember=done)
os.kill(os.getpid(), signal.SIGKILL)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    with StateStore(path) as store:
        assert store.load("mini") == DOC
        assert store.remembered("k1", "CreatePartition", "ab" * 16) == b"resp"


def test_the_file_is_in_wal_mode_with_schema_version_2(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    StateStore(path).close()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2


def test_a_remembered_response_is_returned_for_the_same_request(tmp_path: Path) -> None:
    with StateStore(tmp_path / "state.db") as store:
        store.remember(entry())
        assert store.remembered("k1", "CreatePartition", "ab" * 16) == b"\x08\x01\x12\x01p"


def test_reusing_a_key_for_another_request_is_invalid(tmp_path: Path) -> None:
    with StateStore(tmp_path / "state.db") as store:
        store.remember(entry(key="retry-7"))
        with pytest.raises(InvalidArgument, match="retry-7"):
            store.remembered("retry-7", "CreatePartition", "cd" * 16)
        with pytest.raises(InvalidArgument, match="retry-7"):
            store.remembered("retry-7", "DeletePartition", "ab" * 16)


def test_a_conflicting_key_rolls_the_document_back(tmp_path: Path) -> None:
    with StateStore(tmp_path / "state.db") as store:
        store.save(DOC, remember=entry())
        with pytest.raises(InvalidArgument, match="k1"):
            store.save({"rack": "mini", "generation": 4}, remember=entry(digest="cd" * 16))
        assert store.load("mini") == DOC


def test_an_expired_entry_is_ignored_and_pruned(tmp_path: Path) -> None:
    now = time.time()
    with StateStore(tmp_path / "state.db") as store:
        store.remember(entry(key="old", created=now - KEEP_SECONDS - 10))
        store.remember(entry(key="new", created=now))
        assert store.remembered("old", "CreatePartition", "ab" * 16) is None
        assert store.prune(now) == 1
        assert store.prune(now) == 0
        assert store.remembered("new", "CreatePartition", "ab" * 16) is not None


def test_another_racks_file_is_refused(tmp_path: Path) -> None:
    with StateStore(tmp_path / "state.db") as store:
        store.save(DOC)
        with pytest.raises(FailedPrecondition, match=r"'mini'.*'big'") as raised:
            store.load("big")
    assert str(tmp_path / "state.db") in raised.value.message


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database, just some bytes\n" * 100)
    with pytest.raises(FailedPrecondition) as raised:
        StateStore(path)
    assert str(path) in raised.value.message


def test_a_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    StateStore(path).close()
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version = 3")
    with pytest.raises(FailedPrecondition, match="schema version 3") as raised:
        StateStore(path)
    assert str(path) in raised.value.message


def test_a_missing_directory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "state.db"
    with pytest.raises(FailedPrecondition) as raised:
        StateStore(path)
    assert str(path) in raised.value.message
    assert not path.parent.exists()
