"""The traffic model: the bytes a collective would put on every link, without moving them.

Python cannot push 100 GB/s per link, so a *traffic session* says what a job does (pattern,
partition, load) and the model says how many bytes per second that puts on each link end and
switch port, per accelerator and per plane. The agents add ``rate x elapsed time`` to the same
link counters as real memory ops (`TrafficMeter`), so utilisation, DCGM rates and BER errors
follow the modelled traffic exactly as they follow real traffic.

Load. ``load`` is the fraction of line rate a session drives in each direction it uses, on
every link of a healthy member: a member sends ``S = load x (links x capacity / 2)`` bytes/s
(a link's capacity counts both directions). Symmetric patterns (all-reduce, all-gather,
all-to-all, ring) load both directions of every link of every member, so a link's
``(tx + rx) / capacity`` is the load; a multicast loads one direction only (the source's links
up, the receivers' links down), so its links show half the load.

Flows. A pattern is a set of flows:

==========================  ===========================================================
all-reduce (ring), ring,    every member sends S to the next member (members in domain
all-gather (ring)           order, the last to the first)
all-to-all                  every member sends S / (n - 1) to every other member
all-reduce over a group     NVLink SHARP: each member sends its contribution once up to
(in-network reduction)      the switch and gets the result once back: S up and S down on
                            every plane usable by *every* member (the switch reduces per
                            plane)
multicast                   the source sends S up; the switches replicate it down to every
                            other member, on the planes usable by the source and every
                            receiver
==========================  ===========================================================

A point-to-point flow spreads evenly over the planes usable at both of its ends, as the data
plane's address hashing does; a down or drained link carries nothing and its share moves to
the other planes. A link direction asked to carry more than its line rate saturates: every
flow through it is scaled down so that it carries exactly its line rate (one pass over all
sessions together, so both ends of a link and its switch port always agree). An accelerator
with no usable plane carries nothing.

Algorithm bandwidth (what a benchmark like nccl-tests reports as algbw) is the payload rate
of the collective per member: the slowest member's per-direction rate divided by the
pattern's *bus factor*, the bytes each member moves per byte of payload: ``2(n-1)/n`` for a
ring all-reduce, ``1`` for an in-network all-reduce (the saving SHARP brings), ``(n-1)/n`` for
all-gather and all-to-all, ``1`` for ring and multicast.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import FabricConfig
from .enums import TrafficPattern
from .errors import FailedPrecondition, FusionError, InvalidArgument, NotFound, ResourceExhausted
from .topology import Topology

__all__ = [
    "GROUP_PATTERNS",
    "MIN_MEMBERS",
    "SessionRates",
    "TrafficMeter",
    "TrafficRates",
    "TrafficSession",
    "TrafficTable",
    "bus_factor",
    "pattern_name",
    "pattern_text",
    "traffic_rates",
]

MIN_MEMBERS = 2  # every pattern moves data between members
GROUP_PATTERNS = (TrafficPattern.ALL_REDUCE, TrafficPattern.MULTICAST)
_TOLERANCE = 1e-9  # loads are decimal fractions: 0.6 + 0.4 must fit in 1.0


def pattern_name(pattern: TrafficPattern) -> str:
    """``all_reduce``: how metrics label a pattern (a Prometheus label value)."""
    return TrafficPattern(pattern).name.lower()


def pattern_text(pattern: TrafficPattern) -> str:
    """``all-reduce``: how messages name a pattern, as README and fusionctl write it."""
    return pattern_name(pattern).replace("_", "-")


def bus_factor(pattern: TrafficPattern, members: int, in_network: bool = False) -> float:
    """Bytes each member sends (and receives) per byte of the collective's payload."""
    n = members
    if pattern == TrafficPattern.ALL_REDUCE and not in_network:
        return 2 * (n - 1) / n
    if pattern in (TrafficPattern.ALL_GATHER, TrafficPattern.ALL_TO_ALL):
        return (n - 1) / n
    return 1.0


@dataclass(frozen=True, slots=True)
class TrafficSession:
    """One modelled job: `pattern` among the members of `partition` (or of multicast group
    `group`) at `load`, from `start` until `expires` (unix seconds; None: until stopped)."""

    id: int
    partition: int
    pattern: TrafficPattern
    load: float
    group: int | None = None  # all-reduce: reduce in the network; multicast: its members
    source: int | None = None  # multicast: the sender (None: the first member)
    start: float = 0.0
    expires: float | None = None

    @property
    def in_network(self) -> bool:
        """An all-reduce reduced by the switches (NVLink SHARP) rather than around a ring."""
        return self.pattern == TrafficPattern.ALL_REDUCE and self.group is not None

    @property
    def algorithm(self) -> str:
        """How the pattern moves data: ``ring``, ``in_network``, ``direct`` or ``multicast``."""
        if self.in_network:
            return "in_network"
        if self.pattern == TrafficPattern.ALL_TO_ALL:
            return "direct"
        if self.pattern == TrafficPattern.MULTICAST:
            return "multicast"
        return "ring"


class TrafficTable:
    """The traffic sessions of one rack (desired state, kept by the controller)."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self._sessions: dict[int, TrafficSession] = {}
        self.next_id = 1  # ids are never reused (within one state file)
        self.version = 0  # grows with every change: shells recompute rates when it moves

    # -- reading ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session_id: int) -> TrafficSession:
        try:
            return self._sessions[session_id]
        except KeyError:
            ids = ", ".join(map(str, sorted(self._sessions))) or "none"
            raise NotFound(f"no traffic session {session_id} (sessions: {ids})") from None

    def list(self, partition: int | None = None) -> list[TrafficSession]:
        """Sessions by id; only `partition`'s when given."""
        return [
            s
            for _, s in sorted(self._sessions.items())
            if partition is None or s.partition == partition
        ]

    def members(self, session: TrafficSession, config: FabricConfig) -> tuple[int, ...]:
        """The accelerators taking part now: the group's members, else the partition's."""
        if session.group is not None:
            return config.multicast.get(session.group).members
        return config.partitions.get(session.partition).members

    def source(self, session: TrafficSession, config: FabricConfig) -> int | None:
        """A multicast's sender: the one asked for, else the first member."""
        if session.pattern != TrafficPattern.MULTICAST:
            return None
        if session.source is not None:
            return session.source
        return self.members(session, config)[0]

    # -- changes ---------------------------------------------------------------------------

    def start(
        self,
        config: FabricConfig,
        partition: int | str,
        pattern: int,
        load: float,
        *,
        group: int | None = None,
        source: int | None = None,
        duration: float | None = None,
        now: float = 0.0,
    ) -> TrafficSession:
        """Check and add a session; raises the core's errors naming the offending value."""
        try:
            pattern = TrafficPattern(pattern)
        except ValueError:
            names = ", ".join(pattern_text(p) for p in TrafficPattern)
            raise InvalidArgument(f"traffic pattern {pattern!r} is not one of {names}") from None
        if isinstance(load, bool) or not isinstance(load, int | float) or not 0.0 < load <= 1.0:
            raise InvalidArgument(
                f"load {load!r} is not in (0, 1]: give the fraction of line rate, e.g. 0.6"
            )
        if duration is not None and not (math.isfinite(duration) and duration > 0):
            raise InvalidArgument(
                f"duration {duration!r} s must be a positive number of seconds "
                "(leave it unset to run until stopped)"
            )
        found = config.partitions.get(partition)
        if group is not None and pattern not in GROUP_PATTERNS:
            raise InvalidArgument(
                f"multicast group {group}: only all-reduce (in-network reduction) and "
                f"multicast traffic use a group, not {pattern_text(pattern)}"
            )
        if source is not None:
            if pattern != TrafficPattern.MULTICAST:
                raise InvalidArgument(
                    f"source {source}: only multicast traffic has a source, not "
                    f"{pattern_text(pattern)}"
                )
            self.topology.accelerator(source)  # NotFound names it
        session = TrafficSession(
            id=self.next_id,
            partition=found.id,
            pattern=pattern,
            load=float(load),
            group=group,
            source=source,
            start=now,
            expires=None if duration is None else now + duration,
        )
        self.check(session, config)
        self._check_capacity(session, config)
        self._sessions[session.id] = session
        self.next_id += 1
        self.version += 1
        return session

    def check(self, session: TrafficSession, config: FabricConfig) -> None:
        """Raise unless `session` can run on `config`: its partition and group exist, the
        group is the partition's, it has enough members, its source is one of them."""
        partition = config.partitions.get(session.partition)
        where = f"partition {partition.id} ({partition.name!r})"
        if session.group is not None:
            group = config.multicast.get(session.group)
            if group.partition != partition.id:
                raise FailedPrecondition(
                    f"multicast group {group.id} belongs to partition {group.partition}, not to "
                    f"{where}"
                )
            where = f"multicast group {group.id}"
        members = self.members(session, config)
        if len(members) < MIN_MEMBERS:
            raise FailedPrecondition(
                f"{where} has {len(members)} member(s); {pattern_text(session.pattern)} "
                f"traffic needs at least {MIN_MEMBERS}"
            )
        if session.source is not None and session.source not in members:
            name = self.topology.accelerators[session.source].name
            raise FailedPrecondition(f"source {name} is not a member of {where}")

    def _check_capacity(self, session: TrafficSession, config: FabricConfig) -> None:
        """Refuse a session that would ask some accelerator for more than its line rate."""
        busy: dict[int, float] = {}
        sessions: dict[int, list[int]] = {}
        for other in self._sessions.values():
            for member in self.members(other, config):
                busy[member] = busy.get(member, 0.0) + other.load
                sessions.setdefault(member, []).append(other.id)
        over = [m for m in self.members(session, config)
                if busy.get(m, 0.0) + session.load > 1.0 + _TOLERANCE]  # fmt: skip
        if over:
            names = ", ".join(self.topology.accelerators[m].name for m in over)
            ids = sorted({i for m in over for i in sessions[m]})
            load = max(busy[m] for m in over)
            raise ResourceExhausted(
                f"{names} already carr{'ies' if len(over) == 1 else 'y'} load {load:g} of "
                f"traffic session(s) {', '.join(map(str, ids))}; {session.load:g} more would "
                "exceed line rate (1)"
            )

    def stop(self, session_id: int) -> TrafficSession:
        session = self.get(session_id)
        del self._sessions[session_id]
        self.version += 1
        return session

    def stop_all(self, partition: int | None = None) -> list[TrafficSession]:
        """Stop every session (of `partition` when given); the stopped ones, by id."""
        stopped = self.list(partition)
        for session in stopped:
            del self._sessions[session.id]
        if stopped:
            self.version += 1
        return stopped

    def expire(self, now: float) -> list[TrafficSession]:
        """Stop the sessions whose duration is over at `now`."""
        done = [s for s in self.list() if s.expires is not None and s.expires <= now]
        for session in done:
            del self._sessions[session.id]
        if done:
            self.version += 1
        return done

    def next_expiry(self) -> float | None:
        """When the next session ends by itself (None: none will)."""
        ends = [s.expires for s in self._sessions.values() if s.expires is not None]
        return min(ends) if ends else None

    def prune(self, config: FabricConfig) -> list[tuple[TrafficSession, str]]:
        """Stop the sessions `config` can no longer run (partition or group deleted, too few
        members left, source gone): ``(session, why)`` each."""
        stopped = []
        for session in self.list():
            try:
                self.check(session, config)
            except FusionError as error:
                del self._sessions[session.id]
                stopped.append((session, error.message))
        if stopped:
            self.version += 1
        return stopped

    # -- persistence -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy (the pattern by name)."""
        return {
            "next_id": self.next_id,
            "sessions": [
                {
                    "id": s.id,
                    "partition": s.partition,
                    "pattern": s.pattern.name,
                    "load": s.load,
                    "group": s.group,
                    "source": s.source,
                    "start": s.start,
                    "expires": s.expires,
                }
                for s in self.list()
            ],
        }

    @classmethod
    def from_dict(cls, topology: Topology, data: dict[str, Any]) -> TrafficTable:
        """Rebuild a table saved by `to_dict` (InvalidArgument if malformed). Sessions are not
        checked against a config here: `prune` and `expire` say which can still run."""
        table = cls(topology)
        try:
            for item in data.get("sessions", []):
                session = TrafficSession(
                    id=int(item["id"]),
                    partition=int(item["partition"]),
                    pattern=TrafficPattern[item["pattern"]],
                    load=float(item["load"]),
                    group=None if item.get("group") is None else int(item["group"]),
                    source=None if item.get("source") is None else int(item["source"]),
                    start=float(item.get("start", 0.0)),
                    expires=None if item.get("expires") is None else float(item["expires"]),
                )
                if not 0.0 < session.load <= 1.0:
                    raise ValueError(f"load {session.load} of session {session.id}")
                if session.source is not None:
                    topology.accelerator(session.source)
                table._sessions[session.id] = session
            table.next_id = max(int(data.get("next_id", 1)), max(table._sessions, default=0) + 1)
        except (KeyError, TypeError, ValueError, NotFound) as exc:
            raise InvalidArgument(f"malformed traffic sessions: {exc!r}") from None
        return table


# -- rates -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionRates:
    """What one session puts on the fabric now."""

    members: tuple[int, ...]  # accelerators taking part
    up: np.ndarray  # bytes/s per link (flat index), accelerator -> switch
    down: np.ndarray  # bytes/s per link, switch -> accelerator
    member_rate: float  # payload bytes/s per direction of its slowest member
    bus_factor: float

    @property
    def algorithm_rate(self) -> float:
        """Algorithm bandwidth per member, bytes/s (the collective's pace)."""
        return self.member_rate / self.bus_factor

    @property
    def link_count(self) -> int:
        """Links carrying some of it."""
        return int(((self.up > 0) | (self.down > 0)).sum())


@dataclass(frozen=True, slots=True)
class TrafficRates:
    """Every session's rates, and their sum per link (what the agents integrate)."""

    up: np.ndarray  # bytes/s per link, accelerator -> switch (the accelerator end's tx)
    down: np.ndarray  # bytes/s per link, switch -> accelerator (the accelerator end's rx)
    sessions: dict[int, SessionRates] = field(default_factory=dict)

    def of_links(self, indices: Iterable[int]) -> list[tuple[int, float, float]]:
        """``(link index, up, down)`` of the links among `indices` that carry something."""
        return [
            (i, float(self.up[i]), float(self.down[i]))
            for i in indices
            if self.up[i] > 0 or self.down[i] > 0
        ]


@dataclass
class _Flows:
    """Flows of all sessions before capping. Point-to-point flows as arrays; replicated ones
    (in-network reduction, multicast) one per plane, with the accelerators at each end."""

    src: list[np.ndarray] = field(default_factory=list)
    dst: list[np.ndarray] = field(default_factory=list)
    demand: list[np.ndarray] = field(default_factory=list)
    owner: list[np.ndarray] = field(default_factory=list)
    # (session position, plane, bytes/s, senders, receivers)
    replicated: list[tuple[int, int, float, np.ndarray, np.ndarray]] = field(default_factory=list)

    def pairs(self, k: int, src: np.ndarray, dst: np.ndarray, demand: np.ndarray) -> None:
        self.src.append(src)
        self.dst.append(dst)
        self.demand.append(demand.astype(np.float64))
        self.owner.append(np.full(len(src), k))


def traffic_rates(
    topology: Topology,
    config: FabricConfig,
    table: TrafficTable,
    usable: np.ndarray,
    sessions: Sequence[TrafficSession] | None = None,
) -> TrafficRates:
    """The bytes/s every session of `table` (or `sessions`) puts on every link, given the
    flat mask of usable links (`LinkHealth.usable`, or the controller's view of the rack)."""
    sessions = table.list() if sessions is None else list(sessions)
    per = topology.links_per_accelerator
    n_links = len(topology.links)
    count = len(topology.accelerators)
    line = np.array([link.capacity for link in topology.links], np.float64) / 2  # per direction
    nominal = line.reshape(count, per).sum(axis=1)  # an accelerator's rate per direction
    usable = np.asarray(usable, bool).reshape(count, per)
    flows = _Flows()
    members_of: list[np.ndarray] = []
    sources: list[int | None] = []
    for k, session in enumerate(sessions):
        try:
            members = np.asarray(table.members(session, config), np.int64)
            source = table.source(session, config)
        except FusionError:  # its partition or group is gone (and `prune` not yet run)
            members, source = np.zeros(0, np.int64), None
        members_of.append(members)
        sources.append(source)
        if len(members) < MIN_MEMBERS:
            continue
        send = session.load * nominal[members]  # S of each member
        if session.pattern == TrafficPattern.MULTICAST:
            receivers = members[members != source]
            planes = usable[source] & usable[receivers].all(axis=0)
            _replicate(flows, k, planes, session.load * nominal[source], [source], receivers)
        elif session.in_network:
            planes = usable[members].all(axis=0)
            _replicate(flows, k, planes, float(send.min()), members, members)
        elif session.pattern == TrafficPattern.ALL_TO_ALL:
            n = len(members)
            src = np.repeat(members, n)
            dst = np.tile(members, n)
            keep = src != dst
            flows.pairs(k, src[keep], dst[keep], np.repeat(send / (n - 1), n)[keep])
        else:  # every ring-shaped pattern: each member to the next
            flows.pairs(k, members, np.roll(members, -1), send)
    return _capped(flows, sessions, members_of, sources, usable, line, per, n_links, count)


def _replicate(
    flows: _Flows,
    k: int,
    planes: np.ndarray,
    rate: float,
    senders: Sequence[int] | np.ndarray,
    receivers: np.ndarray,
) -> None:
    """A replicated flow of `rate` bytes/s spread over `planes` (a bool mask)."""
    chosen = np.flatnonzero(planes)
    for plane in chosen.tolist():
        flows.replicated.append(
            (k, plane, rate / len(chosen), np.asarray(senders, np.int64), receivers)
        )


def _capped(
    flows: _Flows,
    sessions: Sequence[TrafficSession],
    members_of: list[np.ndarray],
    sources: list[int | None],
    usable: np.ndarray,
    line: np.ndarray,
    per: int,
    n_links: int,
    count: int,
) -> TrafficRates:
    """Spread point-to-point flows over their common planes, cap every link direction at its
    line rate, and sum up per session and per link."""
    planes = np.arange(per)
    if flows.src:
        src, dst = np.concatenate(flows.src), np.concatenate(flows.dst)
        demand, owner = np.concatenate(flows.demand), np.concatenate(flows.owner)
    else:
        src = dst = owner = np.zeros(0, np.int64)
        demand = np.zeros(0)
    common = usable[src] & usable[dst]  # flows x planes
    shares = common.sum(axis=1)
    each = np.divide(demand, shares, out=np.zeros_like(demand), where=shares > 0)
    rate = common * each[:, None]
    up_at = src[:, None] * per + planes  # the link each share leaves on
    down_at = dst[:, None] * per + planes  # and arrives on
    up_load = _sum_at(up_at.ravel(), rate.ravel(), n_links)
    down_load = _sum_at(down_at.ravel(), rate.ravel(), n_links)
    for _, plane, r, senders, receivers in flows.replicated:
        up_load[senders * per + plane] += r
        down_load[receivers * per + plane] += r

    def factor(load: np.ndarray) -> np.ndarray:
        scale = np.ones(n_links)
        over = load > line * (1 + 1e-12)
        scale[over] = line[over] / load[over]
        return scale

    up_scale, down_scale = factor(up_load), factor(down_load)
    rate = rate * np.minimum(up_scale[up_at], down_scale[down_at])
    replicated = [
        (k, plane, r * min(up_scale[s * per + plane].min(), down_scale[d * per + plane].min()),
         s, d)
        for k, plane, r, s, d in flows.replicated
    ]  # fmt: skip

    total_up, total_down = np.zeros(n_links), np.zeros(n_links)
    result: dict[int, SessionRates] = {}
    sent_by = rate.sum(axis=1)
    for k, session in enumerate(sessions):
        mine = owner == k
        up = _sum_at(up_at[mine].ravel(), rate[mine].ravel(), n_links)
        down = _sum_at(down_at[mine].ravel(), rate[mine].ravel(), n_links)
        sent = _sum_at(src[mine], sent_by[mine], count)
        received = _sum_at(dst[mine], sent_by[mine], count)
        for owner_k, plane, r, senders, receivers in replicated:
            if owner_k == k:
                up[senders * per + plane] += r
                down[receivers * per + plane] += r
                sent[senders] += r
                received[receivers] += r
        members = members_of[k]
        n = len(members)
        if n < MIN_MEMBERS:
            member_rate, factor_k = 0.0, 1.0
        else:
            if session.pattern == TrafficPattern.MULTICAST:  # paced by its slowest receiver
                member_rate = float(received[members[members != sources[k]]].min())
            else:
                member_rate = float(np.minimum(sent[members], received[members]).min())
            factor_k = bus_factor(session.pattern, n, session.in_network)
        result[session.id] = SessionRates(tuple(members.tolist()), up, down, member_rate, factor_k)
        total_up += up
        total_down += down
    return TrafficRates(total_up, total_down, result)


def _sum_at(indices: np.ndarray, weights: np.ndarray, minlength: int) -> np.ndarray:
    """`np.bincount` with weights, always float (it answers int64 when given nothing)."""
    return np.bincount(indices, weights, minlength=minlength).astype(np.float64, copy=False)


# -- integrating rates into counters ---------------------------------------------------------


class TrafficMeter:
    """A tray agent's rate table, turned into whole bytes on its link counters as time passes.

    `set` installs a table (after `advance` has counted the old one up to that moment);
    `advance(now, usable)` returns the bytes each link carried since the last call, only on
    links usable now, keeping the fractions of a byte for the next call so that no byte is
    lost however often it is called.
    """

    def __init__(self) -> None:
        self.indices = np.zeros(0, np.intp)
        self.up = np.zeros(0)
        self.down = np.zeros(0)
        self._carry_up = np.zeros(0)
        self._carry_down = np.zeros(0)
        self._since: float | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def set(self, indices: Sequence[int], up: Sequence[float], down: Sequence[float],
            now: float) -> None:  # fmt: skip
        """Carry `up` / `down` bytes/s on links `indices` from `now` on (and nothing else)."""
        self.indices = np.asarray(indices, np.intp)
        self.up = np.asarray(up, np.float64)
        self.down = np.asarray(down, np.float64)
        self._carry_up = np.zeros(len(self.indices))
        self._carry_down = np.zeros(len(self.indices))
        self._since = now

    def advance(self, now: float, usable: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(link indices, up bytes, down bytes)`` carried since the previous call."""
        since, self._since = self._since, now
        if since is None or not len(self.indices) or now <= since:
            empty = np.zeros(0, np.int64)
            return empty.astype(np.intp), empty, empty
        elapsed = now - since
        live = usable[self.indices]
        up = self.up * elapsed + self._carry_up
        down = self.down * elapsed + self._carry_down
        whole_up, whole_down = np.floor(up), np.floor(down)
        # A link down meanwhile carried nothing, not even its fraction of a byte.
        self._carry_up = np.where(live, up - whole_up, 0.0)
        self._carry_down = np.where(live, down - whole_down, 0.0)
        moved = live & ((whole_up > 0) | (whole_down > 0))
        return (
            self.indices[moved],
            whole_up[moved].astype(np.int64),
            whole_down[moved].astype(np.int64),
        )
