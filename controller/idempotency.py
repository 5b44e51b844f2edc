"""Requests made with an idempotency key: a retry is answered with the first response.

A keyed request is described by an `IdempotentRequest` (its key, its method, a digest of the
request without the key, the type of its response). The store remembers the response of the
first request with a key in the same transaction as the change it made; a retry (same key,
method and digest) is answered from there and changes nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from .store import DesiredStateStore, Remembered

__all__ = ["IdempotentRequest", "request_digest"]


def request_digest(request: Message) -> str:
    """The request without its idempotency key, hashed: a retry must be the same request."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("idempotency_key")  # type: ignore[arg-type]
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


@dataclass(frozen=True)
class IdempotentRequest:
    """One keyed request: what is needed to remember its response and to answer its retry."""

    key: str
    method: str  # e.g. "CreatePartition"
    digest: str  # `request_digest` of the request
    response_type: type[Message]

    @classmethod
    def of(
        cls, method: str, request: Any, response_type: type[Message]
    ) -> IdempotentRequest | None:
        """The keyed request `request` of `method` (None: it has no key)."""
        key = request.idempotency_key
        return cls(key, method, request_digest(request), response_type) if key else None

    async def answered(self, store: DesiredStateStore) -> Message | None:
        """The response the store remembers for this request (None: it was not made yet)."""
        cached = await store.remembered(self.key, self.method, self.digest)
        return None if cached is None else self.response_type.FromString(cached)

    def record(self, response: Message, now: float) -> Remembered:
        """The store's record of `response`, given to this request at `now`."""
        return Remembered(self.key, self.method, self.digest, response.SerializeToString(), now)
