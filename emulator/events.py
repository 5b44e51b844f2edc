"""Event values the core returns; the shells stamp, number and publish them (gRPC, MQTT)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .enums import EventKind

__all__ = ["Event"]


@dataclass(frozen=True, slots=True)
class Event:
    """Something changed. `subject` names the entity (link, chiplet, tray, partition...)."""

    kind: EventKind
    subject: str
    time: float  # the `now` the core was given, seconds
    body: dict[str, Any] = field(default_factory=dict)  # JSON-friendly details
