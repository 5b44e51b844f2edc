"""Where the controller keeps its desired state: what every store offers, and what they share.

Two stores hold the same things (the desired-state document, and the answer to every request
made with an idempotency key) with the same guarantees (a document and its request's record
saved together or not at all; a damaged or foreign store refused with FailedPrecondition, never
read as "nothing"):

* `sqlite.SqliteStore`: one local file (`sqlite.StateStore`), the default; one controller per
  rack;
* `etcd.EtcdStore`: a key prefix in etcd, shared by the rack's two or three controllers,
  of which only the leader writes (every write is conditioned on its leadership).

The controller calls them through `DesiredStateStore`, asynchronously (etcd is across a
network; SQLite answers at once). Both keep `Remembered` answers for `KEEP_SECONDS` and the
document as `document_text` writes it. The stores import this module, never each other.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from fusionrack.emulator import FailedPrecondition, InvalidArgument

__all__ = ["KEEP_SECONDS", "DesiredStateStore", "Remembered", "document_text"]

KEEP_SECONDS = 24 * 3600  # how long an idempotency key is honoured


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


def document_text(document: dict[str, Any]) -> str:
    """A desired-state document as the stores keep it (canonical JSON); InvalidArgument if it
    lacks its rack or generation or is not JSON."""
    missing = [key for key in ("rack", "generation") if key not in document]
    if missing:
        raise InvalidArgument(f"a desired-state document needs the keys {missing}")
    try:
        return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"the desired-state document is not JSON-able ({exc})") from exc


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
