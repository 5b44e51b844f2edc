"""Where the controller keeps its desired state: the interface, and SQLite behind it.

Two stores hold the same things (the desired-state document, and the answer to every request
made with an idempotency key) with the same guarantees (a document and its request's record
saved together or not at all; a damaged or foreign store refused with FailedPrecondition, never
read as "nothing"):

* `SqliteStore`: one local file (`store.StateStore`), the default; one controller per rack;
* `etcdstore.EtcdStore`: a key prefix in etcd, shared by the rack's two or three controllers,
  of which only the leader writes (every write is conditioned on its leadership).

The controller calls them through `DesiredStateStore`, asynchronously (etcd is across a
network; SQLite answers at once).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from fusionrack.emulator import FailedPrecondition

from .store import Remembered, StateStore

__all__ = ["DesiredStateStore", "SqliteStore"]


class DesiredStateStore(Protocol):
    """What the controller needs of a store."""

    @property
    def where(self) -> str:
        """The store as its refusals name it (a path, or an etcd URL and key)."""
        ...

    @property
    def location(self) -> str:
        """Where the store is, as `fusion-controller` is told (a path, or etcd://...)."""
        ...

    @property
    def shared(self) -> bool:
        """Whether other controllers of the rack share it (and elect who writes)."""
        ...

    def refusal(
        self, problem: str, remedy: str = "", *, damaged: bool = True
    ) -> FailedPrecondition:
        """The error that refuses the store's content: where, what is wrong, what to do."""
        ...

    async def load(self, rack: str) -> dict[str, Any] | None:
        """The desired-state document last saved (None: none yet)."""
        ...

    async def save(self, document: dict[str, Any], *, remember: Remembered | None = None) -> None:
        """Replace the document and, if given, record `remember`, atomically."""
        ...

    async def remembered(self, key: str, method: str, request_digest: str) -> bytes | None:
        """The response recorded for `key` (None: unknown or expired); InvalidArgument if the
        key was used for another request."""
        ...

    async def remember(self, entry: Remembered) -> None:
        """Record the answer to a request that changed no document."""
        ...

    async def prune(self, now: float) -> int:
        """Delete the idempotency records that expired before `now` (the leader's job); how
        many went."""
        ...

    def fence(self, epoch: int) -> None:
        """Write only while leadership `epoch` holds (0: refuse every write). A store nobody
        else shares ignores it."""
        ...

    def documents(self) -> AsyncIterator[dict[str, Any]]:
        """Every document another controller saves from now on (a standby follows them); a
        store nobody shares yields none."""
        ...

    async def close(self) -> None:
        """Let go of the store; a second call does nothing."""
        ...


class SqliteStore:
    """`store.StateStore` (one SQLite file) as a `DesiredStateStore`."""

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
