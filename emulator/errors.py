"""Domain errors of the emulated rack.

Every error the core raises is a `FusionError` carrying a `code`. The codes are the canonical
gRPC status codes (same names, same numbers), so the shells map an error to a status in one
place and a packed batch can report a per-op status as a plain number any language understands.
"""

from __future__ import annotations

import enum

__all__ = [
    "Aborted",
    "AlreadyExists",
    "DeadlineExceeded",
    "ErrorCode",
    "FailedPrecondition",
    "FusionError",
    "InvalidArgument",
    "ManifestError",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
]


class ErrorCode(enum.IntEnum):
    """Canonical status codes (values equal gRPC's `StatusCode` numbers)."""

    OK = 0
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16


class FusionError(Exception):
    """Base of every domain error; `code` says which status it maps to."""

    code: ErrorCode = ErrorCode.FAILED_PRECONDITION

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(FusionError):
    """The request itself is malformed: misaligned, too large, wrong type, bad name."""

    code = ErrorCode.INVALID_ARGUMENT


class OutOfRange(FusionError):
    """A value is well formed but outside what the hardware has (offset past the end of HBM)."""

    code = ErrorCode.OUT_OF_RANGE


class NotFound(FusionError):
    """The named entity (accelerator, tray, link, partition, group) does not exist."""

    code = ErrorCode.NOT_FOUND


class AlreadyExists(FusionError):
    """An entity with that id or name exists already."""

    code = ErrorCode.ALREADY_EXISTS


class PermissionDenied(FusionError):
    """The fabric refuses the op (initiator and target are in different partitions)."""

    code = ErrorCode.PERMISSION_DENIED


class ResourceExhausted(FusionError):
    """A limit is reached (partition ids, multicast groups, host address space)."""

    code = ErrorCode.RESOURCE_EXHAUSTED


class FailedPrecondition(FusionError):
    """The system is not in a state that allows the request (member already partitioned...)."""

    code = ErrorCode.FAILED_PRECONDITION


class Unavailable(FusionError):
    """No usable path: every link between initiator and target is down."""

    code = ErrorCode.UNAVAILABLE


class DeadlineExceeded(FusionError):
    """No answer came in time for a request that was sent: it may have been applied (once,
    never twice), or not. Only a read can tell."""

    code = ErrorCode.DEADLINE_EXCEEDED


class Aborted(FusionError):
    """The op was not applied because it arrived out of sequence (after the target's window of
    recent ops moved past it, or from an earlier incarnation of its initiator's tray)."""

    code = ErrorCode.ABORTED


class ManifestError(InvalidArgument):
    """A rack manifest is wrong; `field` is the dotted path of the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class Unauthenticated(FusionError):
    """The caller presented no credentials, or wrong ones, for a call that needs them."""

    code = ErrorCode.UNAUTHENTICATED
