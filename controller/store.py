"""The controller's durable desired state: one SQLite file in WAL mode.

The file holds two things:

* `desired_state`: a single row with the desired-state document (JSON) the controller
  reconciles the rack towards;
* `idempotency`: the response of every mutating request made with an idempotency key, so a
  client that retries after a lost reply gets the first answer instead of a second change.

A document change and the idempotency record of the request that caused it are written in one
transaction: after a crash (SIGKILL, power loss) either both are there or neither is, so a
retried request can never apply twice nor be answered without its change. Commits use
`synchronous=FULL`, so a commit that returned is on disk.

Only the stdlib `sqlite3` module is used, synchronously: every call is a short transaction on a
local file, cheap enough to make from the controller's asyncio loop.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from fusionrack.emulator import FailedPrecondition, InvalidArgument

__all__ = ["KEEP_SECONDS", "SCHEMA_VERSION", "Remembered", "StateStore"]

KEEP_SECONDS = 24 * 3600  # how long an idempotency key is honoured
SCHEMA_VERSION = 1  # stored as PRAGMA user_version; bump with a migration

_SCHEMA = """
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
_TABLES = {"desired_state", "idempotency"}
# Unix seconds computed by SQLite, so `save` needs no clock of its own (`unixepoch('subsec')`
# needs SQLite 3.42; this form works everywhere).
_NOW_SQL = "(julianday('now') - 2440587.5) * 86400.0"


@dataclass(frozen=True)
class Remembered:
    """The response given to one request made with an idempotency key."""

    key: str
    method: str  # e.g. "CreatePartition"
    request_digest: str  # hex digest of the request with the key cleared (computed by the caller)
    response: bytes  # serialized protobuf response
    created: float  # unix seconds

    def __post_init__(self) -> None:
        # An empty key means "no idempotency"; storing it would make unrelated requests collide.
        if not self.key:
            raise InvalidArgument("an idempotency key must not be empty")


class StateStore:
    """The desired-state document and idempotency records, in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        """Open (or create) the store at `path`; FailedPrecondition if it cannot be used."""
        self.path = Path(path)
        # sqlite3 only says "unable to open database file"; name the real problem instead.
        if not self.path.parent.is_dir():
            raise FailedPrecondition(
                f"state store {self.path}: directory {self.path.parent} does not exist; "
                "create it or choose another state file"
            )
        self._conn: sqlite3.Connection | None = None
        try:
            # isolation_level=None: no implicit transactions; `_transaction` makes them explicit.
            conn = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise FailedPrecondition(f"state store {self.path}: cannot open it ({exc})") from exc
        try:
            self._setup(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise FailedPrecondition(
                f"state store {self.path} is not a usable SQLite database ({exc}); "
                "move it away or choose another state file"
            ) from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        """Set the pragmas, check the schema version and create the schema of a fresh file."""
        # The first statement reads the header: a file that is not SQLite fails here.
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise FailedPrecondition(
                f"state store {self.path}: SQLite refused WAL mode (got {mode!r}); "
                "put the state file on a local file system"
            )
        # FULL: the WAL is synced at every commit, so a commit survives power loss, not just
        # a killed process. One controller writes; the timeout only covers an inspecting reader.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        with _transaction(conn):
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise FailedPrecondition(
                    f"state store {self.path} has schema version {version}, newer than the "
                    f"{SCHEMA_VERSION} this controller knows; run a newer fusionrack or "
                    "choose another state file"
                )
            if version == 0:
                tables = {
                    row[0]
                    for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                }
                # Version 0 with tables is some other program's database: do not write into it.
                if tables:
                    raise FailedPrecondition(
                        f"state store {self.path} is a SQLite database of something else "
                        f"(tables {sorted(tables)}); choose another state file"
                    )
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                # In the same transaction as the tables: a crash leaves version 0 and no tables.
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @property
    def _db(self) -> sqlite3.Connection:
        """The open connection; FailedPrecondition once closed."""
        if self._conn is None:
            raise FailedPrecondition(f"state store {self.path} is closed")
        return self._conn

    def load(self, rack: str) -> dict[str, Any] | None:
        """The desired-state document last saved, or None for a fresh file."""
        row = self._db.execute("SELECT document FROM desired_state WHERE id = 1").fetchone()
        if row is None:
            return None
        try:
            document = json.loads(row[0])
        except json.JSONDecodeError as exc:
            raise FailedPrecondition(
                f"state store {self.path}: the desired-state document is not JSON ({exc})"
            ) from exc
        if not isinstance(document, dict):
            raise FailedPrecondition(
                f"state store {self.path}: the desired-state document is not a JSON object"
            )
        # One file per rack: driving rack A with B's desired state would rewire the wrong rack.
        if document.get("rack") != rack:
            raise FailedPrecondition(
                f"state store {self.path} holds the desired state of rack "
                f"{document.get('rack')!r}, not {rack!r}; choose the state file of rack {rack!r}"
            )
        return document

    def save(self, document: dict[str, Any], *, remember: Remembered | None = None) -> None:
        """Replace the desired-state document and, if given, record `remember`, atomically."""
        missing = [key for key in ("rack", "generation") if key not in document]
        if missing:
            raise InvalidArgument(f"a desired-state document needs the keys {missing}")
        # Serialize before the transaction, so a document that is not JSON changes nothing.
        try:
            text = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"the desired-state document is not JSON-able ({exc})") from exc
        conn = self._db
        with _transaction(conn):
            conn.execute(
                f"INSERT INTO desired_state (id, document, saved) VALUES (1, ?, {_NOW_SQL}) "
                "ON CONFLICT (id) DO UPDATE SET document = excluded.document, "
                "saved = excluded.saved",
                (text,),
            )
            if remember is not None:
                # A conflicting key raises here and rolls the document back with it.
                self._put(conn, remember)

    def remembered(self, key: str, method: str, request_digest: str) -> bytes | None:
        """The response stored for `key`, or None if the key is unknown or expired."""
        row = self._db.execute(
            "SELECT method, request_digest, response, created FROM idempotency WHERE key = ?",
            (key,),
        ).fetchone()
        if row is None or row[3] < time.time() - KEEP_SECONDS:
            return None
        _check_same_request(key, row[0], row[1], method, request_digest)
        return bytes(row[2])

    def remember(self, entry: Remembered) -> None:
        """Record an idempotency result for a request that changed no document."""
        conn = self._db
        with _transaction(conn):
            self._put(conn, entry)

    def prune(self, now: float) -> int:
        """Delete idempotency entries older than KEEP_SECONDS before `now`; how many went."""
        conn = self._db
        with _transaction(conn):
            cursor = conn.execute(
                "DELETE FROM idempotency WHERE created < ?", (now - KEEP_SECONDS,)
            )
        return cursor.rowcount

    @staticmethod
    def _put(conn: sqlite3.Connection, entry: Remembered) -> None:
        """Insert or replace `entry`, refusing a live key recorded for another request."""
        row = conn.execute(
            "SELECT method, request_digest, created FROM idempotency WHERE key = ?",
            (entry.key,),
        ).fetchone()
        # Expiry is judged against the entry's own time: no clock read inside a transaction.
        if row is not None and row[2] >= entry.created - KEEP_SECONDS:
            _check_same_request(entry.key, row[0], row[1], entry.method, entry.request_digest)
        conn.execute(
            "INSERT OR REPLACE INTO idempotency (key, method, request_digest, response, created) "
            "VALUES (?, ?, ?, ?, ?)",
            (entry.key, entry.method, entry.request_digest, entry.response, entry.created),
        )

    def close(self) -> None:
        """Close the file; further calls raise FailedPrecondition. Closing twice is fine."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Self:
        """The store itself; closed on leaving the block."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the store."""
        self.close()


def _check_same_request(
    key: str, stored_method: str, stored_digest: str, method: str, request_digest: str
) -> None:
    """InvalidArgument if `key` was recorded for another method or request."""
    if (stored_method, stored_digest) != (method, request_digest):
        raise InvalidArgument(
            f"idempotency key {key!r} was used for a different request "
            f"({stored_method} {stored_digest[:16]}, not {method} {request_digest[:16]}); "
            "use a new key for every distinct request"
        )


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction: committed on success, rolled back on any exception."""
    # IMMEDIATE takes the write lock up front, so a read-then-write cannot hit SQLITE_BUSY midway.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        # Also when COMMIT itself fails: never leave a transaction open for the next call.
        if conn.in_transaction:
            conn.rollback()
        raise
