"""The controller's desired state, and the one object that writes it (`DesiredState`).

Desired state is what the controller drives the rack towards and saves after every change the
fabric accepted: the fabric config (partitions and multicast groups, at a committed
generation), the highest generation used (committed or burned by an aborted change), when each
partition and group was created and last changed, the drained links and trays, and the
modelled traffic sessions. Every write goes through a method of `DesiredState`; a change that
cannot be saved is undone with `restore(checkpoint())`, so no caller keeps a copy of its own.

Partition and group times follow the core's events: a change's `apply` returns the events the
core made (`PartitionTable.create` and the like), and `commit` stamps the times from them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fusionrack.emulator import (
    EventKind,
    FabricConfig,
    InvalidArgument,
    Topology,
    TrafficSession,
    TrafficTable,
    targets,
)
from fusionrack.emulator.events import Event

__all__ = ["Checkpoint", "DesiredState", "Drain", "Times"]

log = logging.getLogger(__name__)

# kind ("partitions", "groups") -> id -> [create time, update time] (groups: [create time]).
Times = dict[str, dict[int, list[float]]]
# A drained link or tray: {"reason": str, "since": unix seconds}.
Drain = dict[str, Any]


@dataclass(frozen=True)
class Checkpoint:
    """Desired state as it was, for `DesiredState.restore`. The config is held by reference:
    changes are made on a copy (`candidate`) that `commit` swaps in, never in place."""

    config: FabricConfig
    times: Times
    drained: dict[str, Drain]
    sessions: dict[str, Any]


class DesiredState:
    """The desired state of one rack (see the module docstring)."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.config = FabricConfig(topology)
        self.generation = 0  # the highest generation used (committed or burned)
        self.times: Times = {"partitions": {}, "groups": {}}
        # Drained links and trays by name.
        self.drained: dict[str, Drain] = {}
        self.sessions = TrafficTable(topology)

    # -- the saved document ----------------------------------------------------------------

    def document(self) -> dict[str, Any]:
        """The document the store saves."""
        return {
            **self.config.to_dict(),
            "times": self.times,
            "drained": self.drained,
            "traffic": self.sessions.to_dict(),
        }

    def load(self, document: dict[str, Any], now: float, *, following: bool = False) -> None:
        """Take `document` as desired state; raises (changing nothing) on any part that is not
        valid. Traffic sessions that ended meanwhile, or cannot run on its config, are dropped.
        `following`: a standby taking the leader's latest, not worth a line in the log."""
        _check_fields("the document", document, _DOCUMENT_FIELDS)
        for kind, fields in (
            ("partitions", _PARTITION_FIELDS),
            ("multicast_groups", _GROUP_FIELDS),
        ):
            for item in document.get(kind, []):
                _check_fields(f"an entry of {kind!r}", item, fields)
        for item in (document.get("traffic") or {}).get("sessions", []):
            _check_fields("a traffic session", item, _SESSION_FIELDS)
        config = FabricConfig.from_dict(self.topology, document)
        times = {
            kind: {int(k): list(v) for k, v in document.get("times", {}).get(kind, {}).items()}
            for kind in ("partitions", "groups")
        }
        drained = self._saved_drains(document.get("drained") or {})
        sessions = self.sessions
        saved = document.get("traffic")
        if saved:  # a document of a version without traffic keeps the sessions there are
            sessions = TrafficTable.from_dict(self.topology, saved)
            for session in sessions.expire(now):
                log.info("traffic session %d ended while the controller was away", session.id)
            for session, why in sessions.prune(config):
                log.warning("traffic session %d dropped: %s", session.id, why)
        self.config, self.generation = config, config.generation
        self.times, self.drained, self.sessions = times, drained, sessions
        log.log(
            logging.DEBUG if following else logging.INFO,
            "loaded %d partition(s), %d multicast group(s), %d drained link(s) or tray(s) and "
            "%d traffic session(s) at generation %d",
            len(self.config.partitions),
            len(self.config.multicast),
            len(self.drained),
            len(self.sessions),
            self.generation,
        )

    def _saved_drains(self, saved: object) -> dict[str, Drain]:
        if not isinstance(saved, dict) or not all(isinstance(d, dict) for d in saved.values()):
            raise InvalidArgument("'drained' is not an object of drains by name")
        drained = {}
        for name, drain in saved.items():
            if targets.kind_in(self.topology, name) not in targets.DRAIN_TARGETS:
                # A manifest edited under an old state file: nothing left to drain there.
                log.warning("the saved state drains %r, not a link or tray of rack %s: ignored",
                            name, self.topology.name)  # fmt: skip
                continue
            drained[name] = {
                "reason": str(drain.get("reason", "")),
                "since": float(drain.get("since", 0.0)),
            }
        return drained

    # -- checkpoints -----------------------------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        """Desired state now, to `restore` if what follows cannot be saved."""
        return Checkpoint(
            self.config,
            _copy_times(self.times),
            _copy_drains(self.drained),
            self.sessions.to_dict(),
        )

    def restore(self, checkpoint: Checkpoint) -> None:
        """Back to `checkpoint` (a change that is not on disk is not desired either). The
        generations used stay used."""
        self.config = checkpoint.config
        # Copies: what is written next must not reach the checkpoint.
        self.times = _copy_times(checkpoint.times)
        self.drained = _copy_drains(checkpoint.drained)
        self.sessions = TrafficTable.from_dict(self.topology, checkpoint.sessions)

    # -- the fabric config -----------------------------------------------------------------

    def candidate(self) -> FabricConfig:
        """A copy of the config to make a change on (the core checks it there)."""
        return FabricConfig.from_dict(self.topology, self.config.to_dict())

    def burn(self, generation: int) -> None:
        """`generation` is used, whether or not its change is committed: never used again."""
        self.generation = max(self.generation, generation)

    def commit(
        self, candidate: FabricConfig, generation: int, events: list[Event], now: float
    ) -> None:
        """`candidate`, programmed at `generation`, is the config; `events` (the core's, of the
        change that made it) date its partitions and groups at `now`. Traffic sessions it
        cannot run end with it."""
        self.burn(generation)
        candidate.generation = generation
        self.config = candidate
        partitions, groups = self.times["partitions"], self.times["groups"]
        for event in events:
            key = event.body["id"]
            if event.kind == EventKind.PARTITION_CREATED:
                partitions[key] = [now, now]
            elif event.kind == EventKind.PARTITION_UPDATED:
                partitions.setdefault(key, [0.0, 0.0])[1] = now
            elif event.kind == EventKind.PARTITION_DELETED:
                partitions.pop(key, None)
            elif event.kind == EventKind.MULTICAST_GROUP_CREATED:
                groups[key] = [now]
            elif event.kind == EventKind.MULTICAST_GROUP_DELETED:
                groups.pop(key, None)
        for session, why in self.sessions.prune(self.config):
            log.info("traffic session %d stopped: %s", session.id, why)

    def recommit(self, generation: int) -> None:
        """The config, unchanged, is now programmed at `generation` (a new leader's, a new
        rack's first, or one above a tray that was ahead)."""
        self.burn(generation)
        self.config.generation = generation

    # -- admin states ----------------------------------------------------------------------
    # A link's drain is held by its compute tray's agent, a tray's by the tray's own agent.

    def drain(self, name: str, reason: str, now: float) -> None:
        self.drained[name] = {"reason": reason, "since": now}

    def undrain(self, name: str) -> None:
        self.drained.pop(name, None)

    def drained_links(self) -> set[int]:
        """Indices of the links drained by name (not as part of a drained tray)."""
        top = self.topology
        trays = {t.name for t in top.trays}
        return {top.link_named(n).index for n in self.drained if n not in trays}

    def link_admin_down(self, index: int) -> bool:
        """Whether link `index` is drained: itself, its compute tray or its switch tray (as
        Link.admin_state counts it)."""
        if not self.drained:  # the usual case, asked for each of a rack's 1296 links
            return False
        top = self.topology
        link = top.links[index]
        compute = top.tray_of_accelerator(link.accelerator).name
        return any(n in self.drained for n in (link.name, compute, link.switch_tray))

    # -- traffic sessions ------------------------------------------------------------------

    def start_session(
        self,
        partition: int,
        pattern: int,
        load: float,
        *,
        group: int | None,
        source: int | None,
        duration: float | None,
        now: float,
    ) -> TrafficSession:
        """A new traffic session (the core checks it against the config)."""
        return self.sessions.start(
            self.config,
            partition,
            pattern,
            load,
            group=group,
            source=source,
            duration=duration,
            now=now,
        )

    def stop_session(self, session_id: int) -> TrafficSession:
        return self.sessions.stop(session_id)

    def stop_sessions(self, partition: int | None) -> list[TrafficSession]:
        """Stop every session (of `partition` when given)."""
        return self.sessions.stop_all(partition)

    def expire_sessions(self, now: float) -> list[TrafficSession]:
        """End the sessions whose duration is over at `now`."""
        return self.sessions.expire(now)


# What a saved desired-state document holds (`DesiredState.document`); anything else is a file
# written by something other than this controller, or damaged.
_DOCUMENT_FIELDS = frozenset(
    {"rack", "generation", "partitions", "multicast_groups", "times", "drained", "traffic"}
)
_PARTITION_FIELDS = frozenset(
    {"id", "name", "members", "member_type", "resiliency", "multicast_group_limit"}
)
_GROUP_FIELDS = frozenset({"id", "partition", "size", "bindings"})
_SESSION_FIELDS = frozenset(
    {"id", "partition", "pattern", "load", "group", "source", "start", "expires"}
)


def _check_fields(what: str, item: object, fields: frozenset[str]) -> None:
    """InvalidArgument unless `item` is an object whose keys are among `fields`."""
    if not isinstance(item, dict):
        raise InvalidArgument(f"{what} is not an object: {item!r:.80}")
    unknown = sorted(set(item) - fields)
    if unknown:
        raise InvalidArgument(f"{what} has unknown fields {unknown}")


def _copy_times(times: Times) -> Times:
    return {kind: {k: list(v) for k, v in by_id.items()} for kind, by_id in times.items()}


def _copy_drains(drained: dict[str, Drain]) -> dict[str, Drain]:
    return {name: dict(drain) for name, drain in drained.items()}
