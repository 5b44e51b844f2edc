"""The controller's durable desired state: one SQLite file in WAL mode.

The file holds two things:

* `desired_state`: a single row with the desired-state document (JSON) the controller
  reconciles the rack towards;
* `idempotency`: the response of every mutating request made with an idempotency key, so a
  client that retries after a lost reply gets the first answer instead of a second change.

A document change and the idempotency record of the request that caused it are written in one
transaction: after a crash (SIGKILL, power loss) either both are there or neither is, so a
retried request can never apply twice nor be answered without its change. Commits use
`synchronous=FULL`, so a commit that returned is on disk. `StateStore` is the file;
`SqliteStore` serves it to the controller as a `DesiredStateStore`.

Only the stdlib `sqlite3` module is used, synchronously: every call is a short transaction on a
local file, cheap enough to make from the controller's asyncio loop.

A damaged file is refused (FailedPrecondition naming the file, what is wrong and what to do),
never read as "no desired state": a controller started on an empty rack would tear down every
partition the file held. Before SQLite may write anything, opening checks:

* the path is a regular file that can be opened for writing (not a directory);
* a path that does not exist is a new store, unless its `-wal` file exists (the database was
  deleted or moved and the log holds its latest changes). A new store is made under a
  temporary name and linked into place once its schema is on disk, so this class never leaves
  a zero-length or half-made file at the path;
* so a zero-length file is refused, and so are a damaged 100-byte header and a damaged
  write-ahead log (`sqlite_damage.check_file`, whose docstring says what it checks and why);
* `PRAGMA integrity_check` over the whole file (bytes overwritten inside pages), and every
  row against the checksum saved with it (bytes overwritten inside the document or a record);
* a schema that is exactly this store's, of a version this code knows.

`load` then refuses a document that is not JSON or not of this rack; the controller checks the
rest (fields, accelerators) against the manifest. A log copied from another database of the
same page size and schema cannot be told apart from this file's own: SQLite's log does not
name its database.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from fusionrack.emulator import FailedPrecondition, InvalidArgument, Unavailable

from . import KEEP_SECONDS, Remembered, document_text
from .sqlite_damage import check_file

__all__ = ["SCHEMA_VERSION", "SqliteStore", "StateStore"]

# Stored as PRAGMA user_version; bump with a migration. 2: rows carry a checksum.
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE desired_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    document TEXT NOT NULL,
    saved REAL NOT NULL,
    checksum TEXT NOT NULL DEFAULT ''
);
CREATE TABLE idempotency (
    key TEXT PRIMARY KEY,
    method TEXT NOT NULL,
    request_digest TEXT NOT NULL,
    response BLOB NOT NULL,
    created REAL NOT NULL,
    checksum TEXT NOT NULL DEFAULT ''
);
"""
# Version 1, as files of that version hold it, and what makes it version 2.
_SCHEMA_V1 = """
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
_TO_V2 = (
    "ALTER TABLE desired_state ADD COLUMN checksum TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE idempotency ADD COLUMN checksum TEXT NOT NULL DEFAULT ''",
)
_TABLES = {"desired_state", "idempotency"}
# Unix seconds computed by SQLite, so `save` needs no clock of its own (`unixepoch('subsec')`
# needs SQLite 3.42; this form works everywhere).
_NOW_SQL = "(julianday('now') - 2440587.5) * 86400.0"


class StateStore:
    """The desired-state document and idempotency records, in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        """Open (or create) the store at `path`; FailedPrecondition if it cannot be used.

        The error names the file, says what is wrong with it and what to do; see the module
        docstring for what is checked.
        """
        self.path = Path(path)
        # sqlite3 only says "unable to open database file"; name the real problem instead.
        if not self.path.parent.is_dir():
            raise FailedPrecondition(
                f"state store {self.path}: directory {self.path.parent} does not exist; "
                "create it or choose another state file"
            )
        self._conn: sqlite3.Connection | None = None
        if not self._exists():
            self._create()
        check_file(self.path, self.wal, self.refusal)
        try:
            # isolation_level=None: no implicit transactions; `_transaction` makes them explicit.
            conn = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise self.refusal(f"SQLite cannot open it ({exc})") from exc
        try:
            self._setup(conn)
            self._check_rows(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise self.refusal(f"it is not a usable SQLite database ({exc})") from exc
        except UnicodeDecodeError as exc:  # a text column overwritten with other bytes
            conn.close()
            raise self.refusal(f"a text inside it is not UTF-8 ({exc.reason})") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    @property
    def wal(self) -> Path:
        """The write-ahead log beside the file (it holds the changes since the last checkpoint)."""
        return self.path.with_name(self.path.name + "-wal")

    def refusal(
        self, problem: str, remedy: str = "", *, damaged: bool = True
    ) -> FailedPrecondition:
        """The error that refuses the file: which file, what is wrong, what to do."""
        remedy = remedy or (
            f"restore {self.path.name} (and its -wal file, if the backup has one) from a "
            "backup; or, to start this rack with no partitions, multicast groups, drains or "
            f"traffic sessions, move {self.path.name} and any {self.path.name}-wal and "
            f"{self.path.name}-shm away"
        )
        verdict = "is damaged" if damaged else "cannot be used"
        return FailedPrecondition(
            f"state store {self.path} {verdict}: {problem}. The controller does not start "
            f"rather than drive the rack with a wrong desired state: {remedy}"
        )

    def _exists(self) -> bool:
        """Whether `path` names something (a dangling symlink counts: it must be looked at)."""
        try:
            self.path.lstat()
        except FileNotFoundError:
            if self.wal.exists():
                raise self.refusal(
                    f"it does not exist but its write-ahead log {self.wal.name} does, so the "
                    "database was deleted or moved and the log alone holds part of it",
                    f"put {self.path.name} back beside {self.wal.name}, or move "
                    f"{self.wal.name} away to start this rack empty",
                ) from None
            return False
        except OSError as exc:
            raise self.refusal(f"it cannot be looked at ({exc.strerror})") from exc
        return True

    def _create(self) -> None:
        """A new store at `path`: made under a temporary name, linked into place when whole."""
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.new")
        for leftover in (temporary, *(Path(f"{temporary}{s}") for s in ("-wal", "-shm"))):
            leftover.unlink(missing_ok=True)
        try:
            conn = sqlite3.connect(temporary, isolation_level=None)
            try:
                self._setup(conn)
            finally:
                conn.close()  # the last connection checkpoints the log into the file
            with open(temporary, "rb") as made:
                os.fsync(made.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(temporary, self.path)  # never replaces a store made meanwhile
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except (OSError, sqlite3.Error) as exc:
            raise FailedPrecondition(
                f"state store {self.path}: cannot create it ({exc}); check that its directory "
                "is writable or choose another state file"
            ) from exc
        finally:
            temporary.unlink(missing_ok=True)

    def _check_pages(self, conn: sqlite3.Connection) -> None:
        """Refuse a file whose pages are damaged (bytes overwritten inside it)."""
        # integrity_check, not quick_check: it also checks that the idempotency key index
        # agrees with its table. On a realistic file (a mini rack's document and 10000
        # idempotency records, 2.4 MB) it takes 6 ms (quick_check 2.5 ms), once at start.
        problems = [row[0] for row in conn.execute("PRAGMA integrity_check(5)")]
        if problems != ["ok"]:
            raise self.refusal(f"SQLite's integrity check finds {'; '.join(problems)}")

    def _check_rows(self, conn: sqlite3.Connection) -> None:
        """Refuse a file whose rows are not what was saved (bytes overwritten inside them)."""
        # SQLite checks its structure, not what the rows say: a changed byte inside the
        # document or a remembered answer shows only against the row's own checksum (10000
        # records: 45 ms).
        for text, checksum in conn.execute("SELECT document, checksum FROM desired_state"):
            self._check_document(text, checksum)
        for row in conn.execute(
            "SELECT key, method, request_digest, response, created, checksum FROM idempotency"
        ):
            self._check_record(*row)

    def _check_document(self, text: Any, checksum: str) -> None:
        if not isinstance(text, str) or _document_checksum(text) != checksum:
            raise self.refusal(
                "its desired-state document does not match its checksum: bytes inside it were "
                "changed"
            )

    def _check_record(
        self, key: Any, method: Any, digest: Any, response: Any, created: Any, checksum: str
    ) -> None:
        try:
            expected = _record_checksum(key, method, digest, bytes(response), float(created))
        except (TypeError, ValueError):
            expected = ""
        if expected != checksum:
            raise self.refusal(
                f"the idempotency record of key {key!r:.80} does not match its checksum: bytes "
                "inside it were changed"
            )

    def _setup(self, conn: sqlite3.Connection) -> None:
        """Set the pragmas, check the schema version and create the schema of a fresh file."""
        # Before WAL mode is set: that would write into another program's database.
        self._check_schema(conn)
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
        self._check_pages(conn)  # before a migration writes into a damaged file
        with _transaction(conn):
            # Checked again under the write lock: another process may have made the schema.
            version = self._check_schema(conn)
            if version == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                # In the same transaction as the tables: a crash leaves version 0 and no tables.
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version == 1:
                _add_checksums(conn)

    def _check_schema(self, conn: sqlite3.Connection) -> int:
        """The schema version; FailedPrecondition for a newer one or another program's."""
        # The first statement reads the header: a file that is not SQLite fails here.
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise FailedPrecondition(
                f"state store {self.path} has schema version {version}, newer than the "
                f"{SCHEMA_VERSION} this controller knows; run a newer fusionrack or "
                "choose another state file"
            )
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        # Version 0 with tables is some other program's database: do not write into it.
        if tables != (_TABLES if version else set()):
            raise self._foreign(tables)
        # The schema's own text is in the file too: a changed byte there changes a column's
        # type or constraint, which integrity_check does not see.
        schema = _schema_of(conn)
        if version and schema not in _known_schemas(version):
            raise self.refusal(
                "its schema is not the one this controller writes (bytes inside its table "
                "definitions were changed)"
            )
        return version

    def _foreign(self, tables: set[str]) -> FailedPrecondition:
        """The refusal of a SQLite database that is not a state store (or whose log is not)."""
        return self.refusal(
            f"it is a SQLite database of something else (tables {sorted(tables)}, not "
            f"{sorted(_TABLES)}), or its -wal file came from one",
            "give the controller its own state file; if this is it, restore it (with its -wal "
            f"file) from a backup, or move a {self.wal.name} copied here by mistake away",
            damaged=False,
        )

    @property
    def _db(self) -> sqlite3.Connection:
        """The open connection; FailedPrecondition once closed."""
        if self._conn is None:
            raise FailedPrecondition(f"state store {self.path} is closed")
        return self._conn

    def load(self, rack: str) -> dict[str, Any] | None:
        """The desired-state document last saved, or None for a fresh file."""
        try:
            row = self._db.execute(
                "SELECT document, checksum FROM desired_state WHERE id = 1"
            ).fetchone()
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            raise self.refusal(f"its desired-state document cannot be read ({exc})") from exc
        if row is None:
            return None
        self._check_document(*row)
        try:
            document = json.loads(row[0])
        except (json.JSONDecodeError, TypeError) as exc:
            raise self.refusal(f"its desired-state document is not JSON ({exc})") from exc
        if not isinstance(document, dict):
            raise self.refusal("its desired-state document is not a JSON object")
        # One file per rack: driving rack A with B's desired state would rewire the wrong rack.
        if document.get("rack") != rack:
            raise FailedPrecondition(
                f"state store {self.path} holds the desired state of rack "
                f"{document.get('rack')!r}, not {rack!r}; choose the state file of rack {rack!r}"
            )
        return document

    def save(self, document: dict[str, Any], *, remember: Remembered | None = None) -> None:
        """Replace the desired-state document and, if given, record `remember`, atomically."""
        # Serialized before the transaction, so a document that is not JSON changes nothing.
        text = document_text(document)
        conn = self._db
        try:
            self._write(conn, text, remember)
        except sqlite3.Error as exc:
            # The disk is full, failing, or the file went away: the change is not made.
            raise Unavailable(
                f"state store {self.path}: cannot save the change ({exc}); it was not made. "
                "Free space or repair the disk under the state file, then send it again"
            ) from exc

    def _write(self, conn: sqlite3.Connection, text: str, remember: Remembered | None) -> None:
        """The transaction of `save`."""
        with _transaction(conn):
            conn.execute(
                "INSERT INTO desired_state (id, document, saved, checksum) "
                f"VALUES (1, ?, {_NOW_SQL}, ?) "
                "ON CONFLICT (id) DO UPDATE SET document = excluded.document, "
                "saved = excluded.saved, checksum = excluded.checksum",
                (text, _document_checksum(text)),
            )
            if remember is not None:
                # A conflicting key raises here and rolls the document back with it.
                self._put(conn, remember)

    def remembered(self, key: str, method: str, request_digest: str) -> bytes | None:
        """The response stored for `key`, or None if the key is unknown or expired."""
        row = self._db.execute(
            "SELECT method, request_digest, response, created, checksum FROM idempotency "
            "WHERE key = ?",
            (key,),
        ).fetchone()
        if row is None or row[3] < time.time() - KEEP_SECONDS:
            return None
        self._check_record(key, *row)
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
            "INSERT OR REPLACE INTO idempotency "
            "(key, method, request_digest, response, created, checksum) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (entry.key, entry.method, entry.request_digest, entry.response, entry.created,
             _record_checksum(entry.key, entry.method, entry.request_digest, entry.response,
                              entry.created)),
        )  # fmt: skip

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


class SqliteStore:
    """`StateStore` (one SQLite file) as a `DesiredStateStore`."""

    def __init__(self, path: str | Path) -> None:
        self.file = StateStore(path)

    @property
    def where(self) -> str:
        return str(self.file.path)

    @property
    def location(self) -> str:
        return str(self.file.path)

    @property
    def shared(self) -> bool:
        return False

    def refusal(
        self, problem: str, remedy: str = "", *, damaged: bool = True
    ) -> FailedPrecondition:
        return self.file.refusal(problem, remedy, damaged=damaged)

    async def load(self, rack: str) -> dict[str, Any] | None:
        return self.file.load(rack)

    async def save(self, document: dict[str, Any], *, remember: Remembered | None = None) -> None:
        self.file.save(document, remember=remember)

    async def remembered(self, key: str, method: str, request_digest: str) -> bytes | None:
        return self.file.remembered(key, method, request_digest)

    async def remember(self, entry: Remembered) -> None:
        self.file.remember(entry)

    async def prune(self, now: float) -> int:
        return self.file.prune(now)

    def fence(self, epoch: int) -> None:
        """One controller, one file: nobody to fence out."""

    async def documents(self) -> AsyncIterator[dict[str, Any]]:
        return
        yield  # an async generator that ends at once

    async def close(self) -> None:
        self.file.close()


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


def _document_checksum(text: str) -> str:
    """The checksum kept beside a saved document."""
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _record_checksum(
    key: str, method: str, request_digest: str, response: bytes, created: float
) -> str:
    """The checksum kept beside an idempotency record (floats survive SQLite's REAL exactly)."""
    fields = json.dumps([key, method, request_digest, created]).encode()
    return hashlib.blake2b(fields + b"\0" + response, digest_size=16).hexdigest()


def _add_checksums(conn: sqlite3.Connection) -> None:
    """Migrate a version-1 file to 2 (in the caller's transaction): checksum every row."""
    for statement in _TO_V2:
        conn.execute(statement)
    for (text,) in conn.execute("SELECT document FROM desired_state").fetchall():
        conn.execute("UPDATE desired_state SET checksum = ?", (_document_checksum(text),))
    rows = conn.execute(
        "SELECT key, method, request_digest, response, created FROM idempotency"
    ).fetchall()
    for key, method, digest, response, created in rows:
        conn.execute(
            "UPDATE idempotency SET checksum = ? WHERE key = ?",
            (_record_checksum(key, method, digest, bytes(response), created), key),
        )
    conn.execute("PRAGMA user_version = 2")


def _schema_of(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    """(type, name, SQL) of every table and index, as SQLite keeps them."""
    return conn.execute(
        "SELECT type, name, coalesce(sql, '') FROM sqlite_master ORDER BY type, name"
    ).fetchall()


def _known_schemas(version: int) -> list[list[tuple[str, str, str]]]:
    """The schemas a file of `version` can hold: made at that version, or migrated to it."""
    paths = {1: [(_SCHEMA_V1,)], 2: [(_SCHEMA,), (_SCHEMA_V1, *_TO_V2)]}.get(version, [])
    schemas = []
    for statements in paths:
        with contextlib.closing(sqlite3.connect(":memory:")) as conn:
            for script in statements:
                conn.executescript(script)
            schemas.append(_schema_of(conn))
    return schemas
