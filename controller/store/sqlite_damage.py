"""The checks of a state file's bytes that SQLite does not make, run before SQLite may write.

`fusionrack.controller.store.sqlite.StateStore` calls `check_file` on opening, after it made a
new file if there was none; what SQLite checks itself (`PRAGMA integrity_check`), the rows'
checksums and the schema stay with the store. A damaged file is refused, never read as "no
desired state" (the store's docstring says why), with a message naming the file, what is wrong
and what to do (each check is tested on its own in tests/unit/test_store_damage.py).
`check_file` refuses:

* a path that is not a regular file that can be opened for writing (a directory, say);
* a zero-length file. SQLite would take it for a fresh empty database, but no store is ever
  made empty: it is a state file someone truncated or overwrote, exactly the "empty rack
  silently" case. Whoever wants an empty rack deletes it, on purpose;
* a bad 100-byte header: SQLite's magic, a sane page size, a length of whole pages and (when the
  log holds no frames) as many pages as the header counts, which catches truncation anywhere;
* a damaged write-ahead log, whose damage SQLite does not report but silently ignores from the
  damaged frame on (acknowledged changes would vanish): its magic and header checksum, its page
  size against the database's, and no committed frame after a frame that fails its checksum (a
  torn last transaction, from a power loss, was never acknowledged and is not refused).
"""

from __future__ import annotations

import stat
import struct
from pathlib import Path
from typing import Protocol

from fusionrack.emulator import FailedPrecondition

__all__ = ["Refuse", "check_file"]

# The write-ahead log's format (sqlite.org/fileformat.html, "The WAL File Format").
_WAL_HEADER = 32
_WAL_FRAME_HEADER = 24
_WAL_MAGIC = (0x377F0682, 0x377F0683)  # checksums of little-, big-endian words
_WAL_VERSION = 3007000


class Refuse(Protocol):
    """How a check refuses the file (`StateStore.refusal`): the error to raise."""

    def __call__(
        self, problem: str, remedy: str = "", *, damaged: bool = True
    ) -> FailedPrecondition: ...


def check_file(path: Path, wal: Path, refuse: Refuse) -> None:
    """Refuse what is not a whole SQLite file with an intact log (before SQLite writes): `path`
    and its write-ahead log `wal`, each problem refused by `refuse` (`StateStore.refusal`)."""
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise refuse(
                "it is a directory, not a file",
                "give the path of a file (a new one is created empty)",
                damaged=False,
            )
        if not stat.S_ISREG(info.st_mode):
            raise refuse("it is not a regular file", "give the path of a file", damaged=False)
        with open(path, "r+b") as file:
            header = file.read(100)
    except OSError as exc:
        raise refuse(
            f"it cannot be opened for reading and writing ({exc.strerror})",
            "check its owner and mode, or restore it from a backup",
            damaged=False,
        ) from exc
    size = info.st_size
    if size == 0:
        raise refuse(
            "it is empty (0 bytes). A new state file is never empty, so this one was "
            "truncated or overwritten and the desired state it held is gone",
            "restore it from a backup; or delete it to start this rack with no "
            "partitions, multicast groups, drains or traffic sessions",
        )
    if len(header) < 100:
        raise refuse(
            f"it is {size} bytes long, shorter than the 100-byte header of a SQLite "
            "database (truncated)"
        )
    if header[:16] != b"SQLite format 3\x00":
        raise refuse("it is not a SQLite database (its first bytes are not SQLite's)")
    page_size = struct.unpack(">H", header[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise refuse(f"its header gives an impossible page size ({page_size})")
    if size % page_size:
        raise refuse(
            f"it is {size} bytes long, not a whole number of {page_size}-byte pages "
            "(truncated or overwritten)"
        )
    frames = _check_wal(path, wal, page_size, refuse)
    change_counter, valid_for = header[24:28], header[92:96]
    pages = struct.unpack(">I", header[28:32])[0]
    # The header's page count is trustworthy when it was written with the change counter;
    # pages the log adds are not in the file yet, so only a file whose log is empty is
    # judged by it.
    if not frames and change_counter == valid_for and pages * page_size > size:
        raise refuse(
            f"it is {size} bytes long but its header says {pages} pages of {page_size} "
            f"bytes ({pages * page_size} bytes): it was truncated"
        )


def _check_wal(path: Path, wal: Path, page_size: int, refuse: Refuse) -> int:
    """Refuse a write-ahead log SQLite would silently ignore in part; its valid frames."""
    try:
        log = wal.read_bytes()
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise refuse(f"its write-ahead log {wal.name} cannot be read ({exc.strerror})") from exc
    if not log:
        return 0
    remedy = (
        f"restore {path.name} with its -wal file from a backup; or, to keep the changes "
        "before the damage and lose those after it, apply the valid part of the log with "
        f"python3 -c \"import sqlite3; sqlite3.connect('{path}')"
        ".execute('PRAGMA wal_checkpoint(TRUNCATE)')\""
    )
    if len(log) < _WAL_HEADER:
        raise refuse(
            f"its write-ahead log {wal.name} is {len(log)} bytes, shorter than a log "
            "header (truncated)",
            remedy,
        )
    magic, version, log_page_size, _, salt1, salt2, sum1, sum2 = struct.unpack(
        ">8I", log[:_WAL_HEADER]
    )
    if magic not in _WAL_MAGIC or version != _WAL_VERSION:
        raise refuse(f"its write-ahead log {wal.name} is not a SQLite write-ahead log", remedy)
    order = ">" if magic & 1 else "<"
    if _wal_checksum(log[:24], 0, 0, order) != (sum1, sum2):
        raise refuse(
            f"the header of its write-ahead log {wal.name} fails its checksum, so "
            "SQLite would ignore every change the log holds",
            remedy,
        )
    if log_page_size != page_size:
        raise refuse(
            f"its write-ahead log {wal.name} has {log_page_size}-byte pages, the "
            f"database {page_size}-byte ones: the log belongs to another database",
            f"restore {path.name} with its own -wal file from a backup, or move "
            f"{wal.name} away if it was copied here by mistake",
        )
    # Checksumming in Python costs ~0.17 ms a page: 170 ms at start for a log at SQLite's
    # automatic checkpoint size (1000 pages), a few ms for a usual one.
    frame_size = _WAL_FRAME_HEADER + page_size
    sums, valid, broken = (sum1, sum2), 0, -1
    for offset in range(_WAL_HEADER, len(log) - frame_size + 1, frame_size):
        frame = log[offset : offset + frame_size]
        _, commit, frame_salt1, frame_salt2, frame_sum1, frame_sum2 = struct.unpack(
            ">6I", frame[:_WAL_FRAME_HEADER]
        )
        current = (frame_salt1, frame_salt2) == (salt1, salt2)
        if broken < 0:
            if not current:
                # The end of this pass through the log: later frames are of an earlier
                # pass (other salts), unless this frame's own salts were overwritten.
                broken = offset
                continue
            sums = _wal_checksum(frame[:8], *sums, order)
            sums = _wal_checksum(frame[_WAL_FRAME_HEADER:], *sums, order)
            if sums != (frame_sum1, frame_sum2):
                broken = offset
                continue
            valid += 1
        elif current and commit:
            # A commit SQLite would never reach: it was synced before it was acknowledged,
            # so the damage before it is not a write torn by a crash.
            raise refuse(
                f"its write-ahead log {wal.name} is damaged at byte {broken} and "
                "SQLite would silently drop the committed changes after it",
                remedy,
            )
    return valid


def _wal_checksum(data: bytes, sum1: int, sum2: int, order: str) -> tuple[int, int]:
    """SQLite's cumulative log checksum of `data` (a multiple of 8 bytes) from (sum1, sum2)."""
    words = struct.unpack(f"{order}{len(data) // 4}I", data)
    for first, second in zip(words[::2], words[1::2], strict=True):
        sum1 = (sum1 + first + sum2) & 0xFFFFFFFF
        sum2 = (sum2 + second + sum1) & 0xFFFFFFFF
    return sum1, sum2
