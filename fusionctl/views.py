"""What `fusionctl` shows people: the v1 messages as tables and lines.

Rows are tuples of cells for `output.table`; state words are `Word`s so the table can colour
them. Nothing here talks to a server.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fusionrack.v1 import common_pb2, controller_pb2, events_pb2

from .arguments import DEFAULT_PARTITION_ID, enum_word
from .output import Palette, Word, human_bytes, rate, table

__all__ = [
    "ACCELERATOR_HEADER",
    "FAULT_HEADER",
    "GROUP_HEADER",
    "LINK_HEADER",
    "PARTITION_HEADER",
    "SWITCH_CHIP_HEADER",
    "TRAFFIC_HEADER",
    "TRAY_HEADER",
    "EventFolder",
    "accelerator_rows",
    "domain_lines",
    "event_line",
    "fault_rows",
    "group_lines",
    "group_rows",
    "hexdump",
    "link_rows",
    "location_text",
    "partition_lines",
    "partition_name",
    "partition_rows",
    "switch_chip_rows",
    "time_text",
    "traffic_lines",
    "traffic_rows",
    "tray_rows",
]


def time_text(stamp: Any) -> str:
    if not stamp.seconds and not stamp.nanos:
        return "-"
    return stamp.ToDatetime().strftime("%Y-%m-%d %H:%M:%S") + "Z"


def location_text(where: common_pb2.Location) -> str:
    return f"{where.tray}/{where.index}"


def partition_name(partition_id: int) -> str:
    if partition_id == DEFAULT_PARTITION_ID:
        return "default"
    return str(partition_id) if partition_id else "-"


def domain_lines(paint: Palette, r: controller_pb2.GetDomainResponse) -> list[str]:
    p, st = r.properties, r.state
    trays = f"{st.reachable_tray_count} of {st.tray_count} reachable"
    if st.unreachable_trays:
        trays += f"; {paint('unreachable')}: {', '.join(st.unreachable_trays)}"
    if st.stale_trays:
        trays += f"; {paint('stale')} (being re-programmed): {', '.join(st.stale_trays)}"
    default = "on" if p.default_partition_enabled else "off"
    plane = paint(enum_word(controller_pb2.ControlPlaneState, st.control_plane_state))
    lines = [
        f"rack {p.rack}: {p.description}".rstrip(": "),
        f"  control plane  {plane} since {time_text(st.state_change_time)}",
        f"  trays          {trays}",
        f"  fabric         {p.fabric_generation}, {p.compute_tray_count} compute trays, "
        f"{p.switch_tray_count} switch trays x {p.switch_chips_per_tray} chips "
        f"({p.ports_per_switch_chip} ports each); tables at generation {st.fabric_generation}",
        f"  accelerators   {p.accelerator_count}, {p.links_per_accelerator} links each at "
        f"{rate(p.link_bandwidth_bytes_per_second)}: "
        f"{rate(p.accelerator_bandwidth_bytes_per_second)} per accelerator, "
        f"{rate(p.rack_bandwidth_bytes_per_second)} per rack",
        f"  partitions     {st.partition_count} of up to {p.max_partitions} "
        f"(ids 1..{p.max_partition_id}, default partition {p.default_partition_id} {default}); "
        f"{st.free_accelerator_count} accelerators in none",
        f"  multicast      {st.multicast_group_count} groups, {st.available_multicast_groups} "
        f"more available (up to {p.max_multicast_groups}; {p.default_multicast_group_limit} per "
        f"partition by default; granularity {human_bytes(p.multicast_granularity_bytes)})",
        f"  limits         names up to {p.max_partition_name_length} characters, partitions of "
        f"at least {p.min_accelerators_per_partition}, default resiliency "
        f"{enum_word(common_pb2.ResiliencyMode, p.default_resiliency_mode)}, accesses up to "
        f"{human_bytes(p.max_access_bytes)}",
    ]
    lead = st.leadership
    if lead.shared_store:  # several controllers: say who answered and who leads
        role = "leader" if lead.leader else "standby"
        leader = (
            f"{lead.leader_id} at {lead.leader_address} (epoch {lead.epoch})"
            if lead.leader_id
            else "nobody (an election is under way)"
        )
        lines.append(
            f"  controller     {lead.controller_id} ({role}); leader {leader}; store {lead.store}"
        )
    drained = [*st.drained_trays, *st.drained_links]
    if drained or st.active_fault_count:
        lines.append(
            f"  operations     {len(drained)} drained"
            + (f" ({', '.join(drained)})" if drained else "")
            + f", {st.active_fault_count} active fault(s) (fusionctl fault list)"
        )
    if st.topology_mismatches:
        rows = [(m.tray, m.field, m.expected, m.observed) for m in st.topology_mismatches]
        lines += [
            "",
            "the agents disagree with the manifest:",
            table(rows, ("TRAY", "FIELD", "MANIFEST", "AGENT"), paint),
        ]
    return lines


def tray_rows(trays: Iterable[common_pb2.TrayInfo]) -> list[tuple[Any, ...]]:
    rows = []
    for t in trays:
        if t.accelerators:
            a = t.accelerators[0]
            contents = (
                f"{len(t.accelerators)} x {enum_word(common_pb2.AcceleratorKind, a.kind)} {a.model}"
            )
        else:
            contents = f"{len(t.switch_chips)} switch chips"
        rows.append(
            (
                t.slot,
                t.name,
                enum_word(common_pb2.TrayKind, t.kind),
                enum_word(common_pb2.ComponentState, t.state),
                Word("drained") if t.admin_state == common_pb2.ADMIN_STATE_DOWN else Word("up"),
                Word("reachable" if t.reachable else "unreachable"),
                t.address or "-",
                t.metrics_address or "-",
                t.config_generation if t.switch_chips else "-",
                contents,
            )
        )
    return rows


TRAY_HEADER = (
    "SLOT",
    "TRAY",
    "KIND",
    "STATE",
    "ADMIN",
    "AGENT",
    "ADDRESS",
    "METRICS",
    "GENERATION",
    "CONTENTS",
)


def accelerator_rows(accelerators: Iterable[common_pb2.Accelerator]) -> list[tuple[Any, ...]]:
    return [
        (
            a.index,
            a.name,
            f"{a.uid:#018x}",
            location_text(a.location),
            enum_word(common_pb2.AcceleratorKind, a.kind),
            a.model,
            human_bytes(a.hbm_bytes),
            f"{a.active_link_count}/{a.link_count}",
            enum_word(common_pb2.ComponentState, a.state),
            partition_name(a.partition_id),
        )
        for a in accelerators
    ]


ACCELERATOR_HEADER = (
    "INDEX",
    "ACCELERATOR",
    "UID",
    "LOCATION",
    "KIND",
    "MODEL",
    "HBM",
    "LINKS",
    "STATE",
    "PARTITION",
)


def link_rows(links: Iterable[common_pb2.Link]) -> list[tuple[Any, ...]]:
    rows = []
    for link in links:
        c = link.counters
        errors = c.crc_flit_errors + c.crc_data_errors + c.replay_errors + c.recovery_errors
        rows.append(
            (
                link.index,
                link.name,
                link.switch_tray,
                link.switch_chip,
                link.switch_port,
                enum_word(common_pb2.LinkState, link.state),
                enum_word(common_pb2.AdminState, link.admin_state),
                f"{link.bit_error_rate:g}",
                human_bytes(c.tx_bytes),
                human_bytes(c.rx_bytes),
                errors,
                c.link_down_count,
            )
        )
    return rows


LINK_HEADER = (
    "INDEX",
    "LINK",
    "SWITCH TRAY",
    "PLANE",
    "PORT",
    "STATE",
    "ADMIN",
    "BER",
    "TX",
    "RX",
    "ERRORS",
    "DOWNS",
)


def partition_rows(partitions: Iterable[common_pb2.Partition]) -> list[tuple[Any, ...]]:
    return [
        (
            p.id,
            p.name,
            len(p.members),
            enum_word(common_pb2.PartitionMemberType, p.member_type),
            enum_word(common_pb2.ResiliencyMode, p.resiliency_mode),
            enum_word(common_pb2.PartitionHealth, p.health),
            f"{p.multicast_group_count}/{p.multicast_group_limit}",
            p.health_reason or "-",
        )
        for p in partitions
    ]


PARTITION_HEADER = ("ID", "NAME", "MEMBERS", "NAMED BY", "RESILIENCY", "HEALTH", "MCAST", "REASON")


def switch_chip_rows(chips: Iterable[common_pb2.SwitchChip]) -> list[tuple[Any, ...]]:
    return [
        (c.index, c.name, c.tray, enum_word(common_pb2.ComponentState, c.state),
         f"{len(c.ports)}/{c.port_count}")
        for c in chips
    ]  # fmt: skip


SWITCH_CHIP_HEADER = ("PLANE", "SWITCH CHIP", "TRAY", "STATE", "PORTS USED")


def group_rows(groups: Iterable[common_pb2.MulticastGroup]) -> list[tuple[Any, ...]]:
    return [
        (g.id, partition_name(g.partition_id), human_bytes(g.size_bytes), f"{g.address:#018x}",
         ",".join(str(m.accelerator) for m in g.members))
        for g in groups
    ]  # fmt: skip


GROUP_HEADER = ("ID", "PARTITION", "SIZE", "ADDRESS", "MEMBERS")


def partition_lines(paint: Palette, p: common_pb2.Partition) -> list[str]:
    health = paint(enum_word(common_pb2.PartitionHealth, p.health))
    parked, unreachable = set(p.parked), set(p.unreachable)
    rows = [
        (
            m.accelerator,
            m.name,
            f"{m.uid:#018x}",
            location_text(m.location),
            Word(
                "unreachable"
                if m.accelerator in unreachable
                else "parked"
                if m.accelerator in parked
                else "ok"
            ),
        )
        for m in p.members
    ]
    return [
        f'partition {p.id} "{p.name}": {health}'
        + (f" ({p.health_reason})" if p.health_reason else ""),
        f"  members     {len(p.members)}, named by "
        f"{enum_word(common_pb2.PartitionMemberType, p.member_type)}",
        f"  resiliency  {enum_word(common_pb2.ResiliencyMode, p.resiliency_mode)}",
        f"  multicast   {p.multicast_group_count} of {p.multicast_group_limit} groups",
        f"  created     {time_text(p.create_time)}, updated {time_text(p.update_time)}",
        "",
        table(rows, ("INDEX", "ACCELERATOR", "UID", "LOCATION", "STATUS"), paint),
    ]


def group_lines(paint: Palette, g: common_pb2.MulticastGroup) -> list[str]:
    rows = [(m.accelerator, f"{m.offset:#x}") for m in g.members]
    return [
        f"multicast group {g.id}: partition {partition_name(g.partition_id)}, "
        f"{human_bytes(g.size_bytes)} at address {g.address:#018x}, "
        f"created {time_text(g.create_time)}",
        "",
        table(rows, ("ACCELERATOR", "BOUND AT OFFSET"), paint),
    ]


def _pattern(session: controller_pb2.TrafficSession) -> str:
    return f"{enum_word(controller_pb2.TrafficPattern, session.pattern)} ({session.algorithm})"


def _until(session: controller_pb2.TrafficSession) -> str:
    if session.HasField("expire_time"):
        return time_text(session.expire_time)
    return "when stopped"


def traffic_rows(sessions: Iterable[controller_pb2.TrafficSession]) -> list[tuple[Any, ...]]:
    return [
        (
            t.id,
            f"{t.partition_id} {t.partition_name}".strip(),
            _pattern(t),
            f"{t.load:g}",
            ",".join(map(str, t.members)) or "-",
            t.multicast_group_id or "-",
            rate(t.member_bytes_per_second),
            rate(t.algorithm_bytes_per_second),
            t.link_count,
            time_text(t.start_time),
            _until(t),
        )
        for t in sessions
    ]


TRAFFIC_HEADER = (
    "ID",
    "PARTITION",
    "PATTERN",
    "LOAD",
    "MEMBERS",
    "GROUP",
    "PER MEMBER",
    "ALGBW",
    "LINKS",
    "STARTED",
    "ENDS",
)


def traffic_lines(t: controller_pb2.TrafficSession) -> list[str]:
    """One session in full: what runs where, and what it achieves."""
    group = f", multicast group {t.multicast_group_id}" if t.multicast_group_id else ""
    source = f", source {t.source}" if t.HasField("source") else ""
    return [
        f"traffic session {t.id}: {_pattern(t)} on partition {t.partition_id} "
        f'"{t.partition_name}" at load {t.load:g}{group}{source}',
        f"  members     {len(t.members)} ({','.join(map(str, t.members)) or '-'})",
        f"  per member  {rate(t.member_bytes_per_second)} each way, bus factor {t.bus_factor:.4g}",
        f"  algbw       {rate(t.algorithm_bytes_per_second)} per member",
        f"  links       {t.link_count} carrying it",
        f"  started     {time_text(t.start_time)}, ends {_until(t)}",
    ]


def fault_rows(faults: Iterable[common_pb2.Fault]) -> list[tuple[Any, ...]]:
    rows = []
    for f in faults:
        spec, detail = f.spec, "-"
        if spec.kind == common_pb2.FAULT_KIND_DEGRADED_BER:
            detail = f"ber {spec.bit_error_rate:g}"
        elif spec.kind == common_pb2.FAULT_KIND_LINK_FLAP:
            period = spec.flap_period.ToNanoseconds() / 1e9
            count = spec.flap_count or "until cleared"
            detail = f"period {period:g} s, {count} flaps"
        rows.append(
            (
                f.id,
                enum_word(common_pb2.FaultKind, spec.kind),
                f.target_name,
                f.tray,
                time_text(f.inject_time),
                detail,
            )
        )
    return rows


FAULT_HEADER = ("ID", "KIND", "TARGET", "TRAY", "SINCE", "DETAIL")


def _event_detail(paint: Palette, e: events_pb2.Event) -> str:
    body = e.WhichOneof("body")
    word = enum_word
    if body == "link_state_changed":
        b = e.link_state_changed
        was = f" (was {word(common_pb2.LinkState, b.previous)})" if b.previous else ""
        return f"{paint(word(common_pb2.LinkState, b.state))}{was}"
    if body == "link_flapping":
        b = e.link_flapping
        return (
            f"{paint(word(common_pb2.LinkState, b.state))}, {b.transitions} transitions, "
            f"{b.link_down_total} downs in all"
        )
    if body == "link_errors":
        c = e.link_errors.counters
        return (
            f"ber {e.link_errors.bit_error_rate:g}, crc {c.crc_flit_errors}+"
            f"{c.crc_data_errors}, replay {c.replay_errors}, recovery {c.recovery_errors}"
        )
    if body == "fault":
        f = e.fault
        return f"{word(common_pb2.FaultKind, f.spec.kind)} on {f.target_name} (fault {f.id})"
    if body == "component_state_changed":
        b = e.component_state_changed
        was = f" (was {word(common_pb2.ComponentState, b.previous)})" if b.previous else ""
        reason = f": {b.reason}" if b.reason else ""
        return f"{paint(word(common_pb2.ComponentState, b.state))}{was}{reason}"
    if body == "partition":
        p = e.partition
        return (
            f"partition {p.id}, {len(p.members)} members, "
            f"{paint(word(common_pb2.PartitionHealth, p.health))}"
        )
    if body == "partition_health_changed":
        b = e.partition_health_changed
        was = f" (was {word(common_pb2.PartitionHealth, b.previous)})" if b.previous else ""
        reason = f": {b.reason}" if b.reason else ""
        return f"{paint(word(common_pb2.PartitionHealth, b.health))}{was}{reason}"
    if body == "multicast_group":
        g = e.multicast_group
        return (
            f"partition {partition_name(g.partition_id)}, {len(g.members)} members, "
            f"{human_bytes(g.size_bytes)}"
        )
    if body == "admin_state_changed":
        b = e.admin_state_changed
        state = "drained" if b.admin_state == common_pb2.ADMIN_STATE_DOWN else "up"
        return paint(state) + (f": {b.reason}" if b.reason else "")
    return ""


def event_line(
    paint: Palette, e: events_pb2.Event, *, clock: bool = False, subject: str | None = None
) -> str:
    """One event on one line: time, kind, subject, what changed. `clock`: the time of day only
    (`fusionctl top`, where the date is in the header and the width is precious); `subject`:
    instead of the event's own (a burst folded into one line, `EventFolder`)."""
    source = "" if e.source == "controller" else f" [{e.source}]"
    snapshot = "  (snapshot)" if e.snapshot else ""
    kind = enum_word(common_pb2.EventKind, e.kind)
    when = e.time.ToDatetime().strftime("%H:%M:%S" if clock else "%Y-%m-%dT%H:%M:%S.%f")
    when = when if clock else when[:-3] + "Z"
    detail = _event_detail(paint, e)
    return f"{when}  {kind:<24}  {subject or e.subject}{source}  {detail}{snapshot}".rstrip()


_NOUNS = {
    "link": "links", "component": "components", "partition": "partitions", "fault": "faults",
    "admin": "links and trays", "multicast": "groups",
}  # fmt: skip


class EventFolder:
    """Folds a burst of events into one line with a count: events that follow one another with
    the same kind, source and change (one tray lost takes its 72 links down at once), within
    `WINDOW` s of the burst's first, about different subjects. `add` returns the lines to
    print now, `flush` the burst held back (call it when no event came for a moment)."""

    WINDOW = 1.0  # s, by the events' own times

    def __init__(self, paint: Palette) -> None:
        self.paint, self.plain = paint, Palette(False)
        self.burst: list[events_pb2.Event] = []
        self._key: tuple[Any, ...] = ()

    def _key_of(self, e: events_pb2.Event) -> tuple[Any, ...]:
        return (e.kind, e.source, e.snapshot, _event_detail(self.plain, e))

    def add(self, e: events_pb2.Event) -> list[str]:
        key = self._key_of(e)
        first = self.burst[0] if self.burst else None
        if (
            first is not None
            and key == self._key
            and e.time.ToNanoseconds() - first.time.ToNanoseconds() <= self.WINDOW * 1e9
            and all(e.subject != seen.subject for seen in self.burst)
        ):
            self.burst.append(e)
            return []
        lines = self.flush()
        self.burst, self._key = [e], key
        return lines

    def flush(self) -> list[str]:
        """The line of the burst held back (none when there is none), which is forgotten."""
        burst, self.burst = self.burst, []
        if not burst:
            return []
        if len(burst) == 1:
            return [event_line(self.paint, burst[0])]
        kind = enum_word(common_pb2.EventKind, burst[0].kind)
        noun = _NOUNS.get(kind.split("_", 1)[0], "subjects")
        common = set(burst[0].trays).intersection(*(e.trays for e in burst[1:]))
        if common and noun == "links":
            trays = sorted(common)  # one tray: its links; two: the links between them
            where = f"of {trays[0]}" if len(trays) == 1 else f"between {' and '.join(trays)}"
            subject = f"{len(burst)} {noun} {where}"
        else:
            names = [e.subject for e in burst]
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            subject = f"{len(burst)} {noun} ({shown})"
        return [event_line(self.paint, burst[0], subject=subject)]


def hexdump(address: int, data: bytes) -> list[str]:
    lines = []
    for start in range(0, len(data), 16):
        chunk = data[start : start + 16]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{address + start:#018x}  {chunk.hex(' '):<47}  |{text}|")
    return lines or ["(no data)"]
