"""A damaged state file is refused, loudly: never read as an empty rack.

Every case damages a real SQLite file the way disks, people and crashes do, then checks that
opening it is FailedPrecondition naming the file, what is wrong and what to do.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from fusionrack.controller.domain import Controller
from fusionrack.controller.store import Remembered
from fusionrack.controller.store.sqlite import SqliteStore, StateStore, _document_checksum
from fusionrack.emulator import FabricConfig, FailedPrecondition, Topology

CONTROLLER = str(Path(sys.executable).with_name("fusion-controller"))


def document(mini: Topology, generation: int = 7) -> dict[str, Any]:
    """A desired state of the mini rack as the controller saves it: two partitions, a group."""
    config = FabricConfig(mini, generation)
    names = [mini.accelerator(i).name for i in range(4)]
    first, _ = config.partitions.create("train", names[:2])
    config.partitions.create("serve", names[2:])
    config.multicast.create(first.id, 1 << 20)
    return {
        **config.to_dict(),
        "times": {"partitions": {str(first.id): [1.0, 2.0]}, "groups": {}},
        "drained": {"compute-01": {"reason": "maintenance", "since": 3.0}},
        "traffic": {"next_id": 1, "sessions": []},
    }


def record(key: str) -> Remembered:
    return Remembered(key, "CreatePartition", "ab" * 16, b"\x08\x01" * 40, time.time())


def write_store(path: Path, mini: Topology, records: int = 400) -> dict[str, Any]:
    """A closed store (log checkpointed into the file) of several pages; its document."""
    saved = document(mini)
    with StateStore(path) as store:
        for i in range(records):
            store.save(saved, remember=record(f"key-{i:05d}-{'x' * 40}"))
    return saved


def killed_store(path: Path, mini: Topology) -> dict[str, Any]:
    """A store whose writer was SIGKILLed: its latest changes are only in the -wal file."""
    saved = document(mini)
    code = f"""
import os, signal, time
from fusionrack.controller.store import Remembered
from fusionrack.controller.store.sqlite import StateStore, _document_checksum
store = StateStore({str(path)!r})
for i in range(60):
    done = Remembered(f"key-{{i}}", "CreatePartition", "ab" * 16, b"answer" * 20, time.time())
    store.save({saved!r}, remember=done)
os.kill(os.getpid(), signal.SIGKILL)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert path.with_name(path.name + "-wal").stat().st_size > 60 * 4096
    return saved


def refused(path: Path, *words: str) -> str:
    """The refusal of opening `path`, which must name it and say what to do."""
    with pytest.raises(FailedPrecondition) as raised:
        StateStore(path).close()
    message = raised.value.message
    assert str(path) in message
    assert "restore" in message or "move" in message or "give the path" in message, message
    for word in words:
        assert word in message, message
    return message


def wal_of(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


# -- sound files -----------------------------------------------------------------------------


def test_a_new_path_becomes_an_empty_store_and_nothing_is_left_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    with StateStore(path) as store:
        assert store.load("mini") is None
    assert path.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.sqlite"]


def test_a_store_left_by_sigkill_opens_with_every_change(tmp_path: Path, mini: Topology) -> None:
    path = tmp_path / "state.sqlite"
    saved = killed_store(path, mini)
    with StateStore(path) as store:
        assert store.load("mini") == saved
        assert store.remembered("key-59", "CreatePartition", "ab" * 16) == b"answer" * 20


def test_a_log_reused_after_a_checkpoint_opens_with_its_latest_state(
    tmp_path: Path, mini: Topology
) -> None:
    # After a checkpoint SQLite writes the log again from its start, under new salts: the
    # frames of the earlier pass stay behind the new ones, stale, and that is no damage.
    path = tmp_path / "state.sqlite"
    code = f"""
import os, signal
from fusionrack.controller.store.sqlite import StateStore
store = StateStore({str(path)!r})
for i in range(80):
    store.save({{"rack": "mini", "generation": i, "partitions": ["x" * 3000] * (i % 3)}})
assert store._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[0] == 0
for i in range(80, 83):
    store.save({{"rack": "mini", "generation": i, "partitions": []}})
os.kill(os.getpid(), signal.SIGKILL)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    log = wal_of(path).read_bytes()
    salts = {log[32 + i * 4120 + 8 : 32 + i * 4120 + 16] for i in range((len(log) - 32) // 4120)}
    assert len(salts) == 2  # this pass's frames and the earlier pass's, behind them
    with StateStore(path) as store:
        assert store.load("mini") == {"rack": "mini", "generation": 82, "partitions": []}


def test_a_log_frame_whose_salts_were_overwritten_is_refused(
    tmp_path: Path, mini: Topology
) -> None:
    # SQLite takes a frame with other salts for the end of the log: the commits after it
    # would silently vanish.
    path = tmp_path / "state.sqlite"
    killed_store(path, mini)
    with open(wal_of(path), "r+b") as log:
        log.seek(32 + 10 * (24 + 4096) + 8)
        log.write(b"\0" * 8)
    refused(path, "silently drop the committed changes")


# -- the main file ---------------------------------------------------------------------------


def test_an_empty_file_is_refused_not_taken_for_a_fresh_rack(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    path.touch()
    refused(path, "empty (0 bytes)", "delete it to start")
    assert path.stat().st_size == 0  # left as it was found


def test_a_file_truncated_to_zero_beside_its_log_is_refused(tmp_path: Path, mini: Topology) -> None:
    path = tmp_path / "state.sqlite"
    killed_store(path, mini)
    os.truncate(path, 0)
    refused(path, "empty (0 bytes)")
    assert wal_of(path).stat().st_size > 0  # the log, which holds the changes, is untouched


@pytest.mark.parametrize("length", [1, 15, 16, 50, 99, 100, 101, 512, 4095])
def test_a_file_truncated_inside_its_first_page_is_refused(
    tmp_path: Path, mini: Topology, length: int
) -> None:
    path = tmp_path / "state.sqlite"
    write_store(path, mini)
    os.truncate(path, length)
    refused(path, "truncated")


def test_a_file_truncated_at_every_page_boundary_is_refused(tmp_path: Path, mini: Topology) -> None:
    original = tmp_path / "original.sqlite"
    write_store(original, mini)
    size, page = original.stat().st_size, 4096
    assert size >= 6 * page
    for length in range(page, size, page):
        path = tmp_path / f"cut-{length}.sqlite"
        shutil.copy(original, path)
        os.truncate(path, length)
        refused(path, "truncated")


def test_a_file_truncated_mid_page_is_refused(tmp_path: Path, mini: Topology) -> None:
    path = tmp_path / "state.sqlite"
    write_store(path, mini)
    os.truncate(path, path.stat().st_size - 1000)
    refused(path, "whole number")


def test_random_bytes_over_the_middle_of_the_file_are_refused(
    tmp_path: Path, mini: Topology
) -> None:
    original = tmp_path / "original.sqlite"
    write_store(original, mini)
    size = original.stat().st_size
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    # Over the b-tree structure of each page after the first (headers, cell pointers and the
    # start of the cells): what a disk's bad sector or a stray write leaves.
    for page in range(1, size // 4096):
        path = tmp_path / f"scribbled-{page}.sqlite"
        data = bytearray(original.read_bytes())
        start = page * 4096
        data[start : start + 256] = rng.randbytes(256)
        path.write_bytes(bytes(data))
        message = refused(path)
        assert "damaged" in message, (seed, page, message)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    path.mkdir()
    refused(path, "is a directory")


def test_a_path_under_a_file_is_refused(tmp_path: Path) -> None:
    # Permissions do not stop root (the tests' user); a file where a directory should be does.
    (tmp_path / "file").write_text("x")
    path = tmp_path / "file" / "state.sqlite"
    with pytest.raises(FailedPrecondition) as raised:
        StateStore(path)
    assert str(path) in raised.value.message


def test_a_changed_byte_in_the_schema_is_refused(tmp_path: Path, mini: Topology) -> None:
    # CHECK (id = 1) -> CHECK (id = 7): SQLite's integrity check is content with either.
    path = tmp_path / "state.sqlite"
    write_store(path, mini, records=1)
    data = bytearray(path.read_bytes())
    at = data.find(b"CHECK (id = 1)")
    data[at + len(b"CHECK (id = ")] = ord("7")
    path.write_bytes(bytes(data))
    refused(path, "its schema is not the one this controller writes")


def test_a_database_of_another_program_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE songs (title TEXT)")
        conn.execute("PRAGMA user_version = 1")  # even one that happens to say version 1
        conn.commit()
    refused(path, "something else", "songs")
    with closing(sqlite3.connect(path)) as conn:  # and not written into
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("songs",)]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


# -- the write-ahead log ---------------------------------------------------------------------


def test_a_log_whose_header_is_damaged_is_refused(tmp_path: Path, mini: Topology) -> None:
    path = tmp_path / "state.sqlite"
    killed_store(path, mini)
    with open(wal_of(path), "r+b") as log:
        log.seek(12)  # the checkpoint sequence: SQLite would drop the whole log
        log.write(b"\xff\xff\xff\xff")
    message = refused(path, "fails its checksum", "wal_checkpoint")
    assert "state.sqlite-wal" in message


def test_a_log_damaged_before_its_last_commit_is_refused(tmp_path: Path, mini: Topology) -> None:
    path = tmp_path / "state.sqlite"
    killed_store(path, mini)
    frames = (wal_of(path).stat().st_size - 32) // (24 + 4096)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    for frame in (0, frames // 2, frames - 3):
        damaged = tmp_path / f"frame-{frame}.sqlite"
        shutil.copy(path, damaged)
        data = bytearray(wal_of(path).read_bytes())
        start = 32 + frame * (24 + 4096) + 24 + rng.randrange(4000)
        data[start : start + 64] = rng.randbytes(64)
        wal_of(damaged).write_bytes(bytes(data))
        refused(damaged, "silently drop the committed changes")


def test_random_bytes_over_the_log_are_refused_or_change_nothing(
    tmp_path: Path, mini: Topology
) -> None:
    """Anywhere before its last transaction (which a power loss may tear: see the store)."""
    original = tmp_path / "original.sqlite"
    saved = killed_store(original, mini)
    base, log = original.read_bytes(), wal_of(original).read_bytes()
    frame = 24 + 4096
    commits = [i for i in range((len(log) - 32) // frame)
               if int.from_bytes(log[32 + i * frame + 4 : 32 + i * frame + 8], "big")]  # fmt: skip
    last = 32 + (commits[-2] + 1) * frame
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    refusals = 0
    for trial in range(40):
        path = tmp_path / f"scribbled-{trial}.sqlite"
        path.write_bytes(base)
        data = bytearray(log)
        start = rng.randrange(0, last - 16)
        data[start : start + 16] = rng.randbytes(16)
        wal_of(path).write_bytes(bytes(data))
        try:
            with StateStore(path) as store:
                found = store.load("mini")
                answer = store.remembered("key-59", "CreatePartition", "ab" * 16)
        except FailedPrecondition as error:
            why = error.message
        else:
            why = ""
        if why:
            refusals += 1
            continue
        assert (found, answer) == (saved, b"answer" * 20), f"seed {seed}, byte {start}"
    assert refusals > 30, (seed, refusals)


def test_a_log_that_is_not_a_log_is_refused(tmp_path: Path, mini: Topology) -> None:
    path = tmp_path / "state.sqlite"
    killed_store(path, mini)
    wal_of(path).write_bytes(b"not a log" * 1000)
    refused(path, "not a SQLite write-ahead log")
    wal_of(path).write_bytes(b"short")
    refused(path, "shorter than a log header")


def test_a_log_of_another_database_is_refused(tmp_path: Path, mini: Topology) -> None:
    path = tmp_path / "state.sqlite"
    killed_store(path, mini)
    other = tmp_path / "other.sqlite"
    with closing(sqlite3.connect(other, isolation_level=None)) as conn:
        conn.execute("PRAGMA page_size = 1024")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("CREATE TABLE songs (title TEXT)")
        shutil.copy(wal_of(other), wal_of(path))
    refused(path, "belongs to another database")
    # One with our page size: its pages make the file another program's database.
    same_pages = tmp_path / "same.sqlite"
    with closing(sqlite3.connect(same_pages, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("CREATE TABLE songs (title TEXT)")
        shutil.copy(wal_of(same_pages), wal_of(path))
    refused(path, "something else")


def test_a_log_without_its_database_is_refused(tmp_path: Path, mini: Topology) -> None:
    path = tmp_path / "state.sqlite"
    killed_store(path, mini)
    path.unlink()
    refused(path, "does not exist but its write-ahead log")
    assert not path.exists()  # no fresh store made over the orphaned log


# -- the document ----------------------------------------------------------------------------


def test_a_document_that_is_not_json_is_refused(tmp_path: Path, mini: Topology) -> None:
    # As a buggy writer would leave it: with a checksum that matches.
    path = tmp_path / "state.sqlite"
    write_store(path, mini, records=1)
    text = '{"rack": "mini", "genera'
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(
            "UPDATE desired_state SET document = ?, checksum = ?", (text, _document_checksum(text))
        )
        conn.commit()
    with StateStore(path) as store, pytest.raises(FailedPrecondition, match="not JSON") as raised:
        store.load("mini")
    assert str(path) in raised.value.message


def test_a_changed_byte_inside_the_document_is_refused(tmp_path: Path, mini: Topology) -> None:
    # Valid JSON, valid desired state, wrong: a member 0 became 1. SQLite sees nothing amiss.
    path = tmp_path / "state.sqlite"
    saved = write_store(path, mini, records=1)
    data = bytearray(path.read_bytes())
    text = json.dumps(saved, sort_keys=True, separators=(",", ":")).encode()
    at = data.find(text)
    assert at > 0
    members = data.find(b'"members":[0', at)
    data[members + len(b'"members":[')] = ord("2")
    path.write_bytes(bytes(data))
    refused(path, "document does not match its checksum")


def test_a_changed_byte_inside_a_remembered_answer_is_refused(
    tmp_path: Path, mini: Topology
) -> None:
    path = tmp_path / "state.sqlite"
    with StateStore(path) as store:
        store.save(document(mini), remember=Remembered("k-1", "CreatePartition", "ab" * 16,
                                                       b"first-answer", time.time()))  # fmt: skip
    data = bytearray(path.read_bytes())
    at = data.find(b"first-answer")
    data[at] = ord("F")
    path.write_bytes(bytes(data))
    refused(path, "idempotency record of key 'k-1'")


def test_random_bytes_anywhere_are_refused_or_change_nothing(
    tmp_path: Path, mini: Topology
) -> None:
    """Over free space a scribble is harmless; anywhere else it is refused, never read."""
    original = tmp_path / "original.sqlite"
    saved = write_store(original, mini)
    with StateStore(original) as store:
        answers = [store.remembered(f"key-{i:05d}-{'x' * 40}", "CreatePartition", "ab" * 16)
                   for i in range(400)]  # fmt: skip
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    size, refusals, harmless = original.stat().st_size, 0, 0
    for trial in range(60):
        path = tmp_path / f"scribbled-{trial}.sqlite"
        data = bytearray(original.read_bytes())
        start = rng.randrange(100, size - 16)  # past the header, tested on its own
        data[start : start + 16] = rng.randbytes(16)
        path.write_bytes(bytes(data))
        try:
            with StateStore(path) as store:
                found = store.load("mini")
                again = [store.remembered(f"key-{i:05d}-{'x' * 40}", "CreatePartition",
                                          "ab" * 16) for i in range(400)]  # fmt: skip
        except FailedPrecondition as error:
            why = error.message
        else:
            why = ""
        if why:
            assert str(path) in why
            refusals += 1
            continue
        assert (found, again) == (saved, answers), f"seed {seed}, byte {start}: read changed"
        harmless += 1
    print(f"seed {seed}: {refusals} refused, {harmless} harmless")
    assert refusals > 10, (seed, refusals, harmless)


V1_SCHEMA = """
CREATE TABLE desired_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    document TEXT NOT NULL,
    saved REAL NOT NULL
);
CREATE TABLE idempotency (
    key TEXT PRIMARY KEY,
    method TEXT NOT NULL,
    request_digest TEXT NOT NULL,
    response BLOB NOT NULL,
    created REAL NOT NULL
);
"""


def test_a_version_1_file_gains_checksums_and_keeps_its_state(
    tmp_path: Path, mini: Topology
) -> None:
    path = tmp_path / "state.sqlite"
    saved = document(mini)
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        # What version 1 of the store made, statement for statement.
        for statement in V1_SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT INTO desired_state VALUES (1, ?, 1.0)", (json.dumps(saved),))
        created = time.time()
        conn.execute("INSERT INTO idempotency VALUES ('k', 'CreatePartition', ?, ?, ?)",
                     ("ab" * 16, b"answer", created))  # fmt: skip
        conn.execute("PRAGMA user_version = 1")
    with StateStore(path) as store:
        assert store.load("mini") == saved
        assert store.remembered("k", "CreatePartition", "ab" * 16) == b"answer"
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    with StateStore(path) as store:  # and it opens again, checksums and all
        assert store.load("mini") == saved


def edited(mini: Topology, change: Any) -> dict[str, Any]:
    saved = document(mini)
    change(saved)
    return saved


INVALID_DOCUMENTS = {
    "unknown field": (lambda d: d.update(owner="someone"), "unknown fields ['owner']"),
    "unknown partition field": (lambda d: d["partitions"][0].update(colour=1), "colour"),
    "accelerator the manifest lacks": (
        lambda d: d["partitions"][1]["members"].append(17),
        "17",
    ),
    "partition not a list": (lambda d: d.update(partitions=5), "not a valid desired state"),
    "group of no partition": (lambda d: d["multicast_groups"][0].update(partition=999), "999"),
    "drains not an object": (lambda d: d.update(drained=[1]), "drained"),
    "traffic session malformed": (
        lambda d: d["traffic"]["sessions"].append({"id": 1, "pattern": "NOPE"}),
        "traffic",
    ),
    "times malformed": (lambda d: d.update(times={"partitions": {"x": 1}}), "times"),
}


@pytest.mark.parametrize("case", sorted(INVALID_DOCUMENTS))
async def test_a_document_that_is_not_a_valid_desired_state_is_refused(
    tmp_path: Path, mini: Topology, case: str
) -> None:
    change, words = INVALID_DOCUMENTS[case]
    path = tmp_path / "state.sqlite"
    with StateStore(path) as store:
        store.save(edited(mini, change))
    store = SqliteStore(path)
    controller = Controller(mini, store, {t.name: "127.0.0.1:9" for t in mini.trays})
    try:
        with pytest.raises(FailedPrecondition) as raised:
            await controller.load()
    finally:
        await controller.stop()
        await store.close()
    message = raised.value.message
    assert str(path) in message and "restore it from a backup" in message, message
    if case != "times malformed":
        assert words in message, message


async def test_a_valid_document_loads_whole(tmp_path: Path, mini: Topology) -> None:
    path = tmp_path / "state.sqlite"
    with StateStore(path) as store:
        store.save(document(mini))
    store = SqliteStore(path)
    controller = Controller(mini, store, {t.name: "127.0.0.1:9" for t in mini.trays})
    try:
        await controller.load()
    finally:
        await controller.stop()
        await store.close()
    assert [p.name for p in controller.config.partitions.list() if not p.is_default] == [
        "train",
        "serve",
    ]
    assert len(controller.config.multicast.list()) == 1
    assert set(controller.drained) == {"compute-01"}


async def test_saved_drains_of_what_the_rack_lacks_or_cannot_drain_are_dropped(
    tmp_path: Path, mini: Topology
) -> None:
    """A manifest edited under an old state file: drains of trays and links it still has are
    kept; those of names it lacks, and of components no drain takes, are left out."""
    kept = {"compute-01", "switch-2", "compute-02/gpu1/nvlink3"}
    gone = {"compute-09", "compute-01/gpu0/nvlink7", "switch-1/chip0", "compute-01/gpu0"}
    drains = {name: {"reason": "r", "since": 1.0} for name in kept | gone}
    path = tmp_path / "state.sqlite"
    with StateStore(path) as store:
        store.save(edited(mini, lambda d: d.update(drained=drains)))
    store = SqliteStore(path)
    controller = Controller(mini, store, {t.name: "127.0.0.1:9" for t in mini.trays})
    try:
        await controller.load()
    finally:
        await controller.stop()
        await store.close()
    assert set(controller.drained) == kept


# -- the real binary -------------------------------------------------------------------------


def test_fusion_controller_exits_1_naming_a_damaged_file(tmp_path: Path, mini: Topology) -> None:
    path = tmp_path / "state.sqlite"
    killed_store(path, mini)
    os.truncate(path, 0)
    result = subprocess.run(
        [CONTROLLER, "--manifest", "mini", "--state", str(path), "--listen", "127.0.0.1:0",
         "--log-level", "WARNING"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(f"fusion-controller: state store {path} is damaged")
    assert "empty (0 bytes)" in result.stderr and "restore it from a backup" in result.stderr
    assert "Traceback" not in result.stderr
    assert path.stat().st_size == 0 and wal_of(path).stat().st_size > 0  # nothing rewritten
