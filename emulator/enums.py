"""Enumerations shared by the core, the shells and the v1 contract.

Values match the numbers of the enums of the same name in ``proto/fusionrack/v1``, so shells
convert with ``Enum(proto_value)``; 0 is the proto's ``*_UNSPECIFIED`` and is never a member.
"""

from __future__ import annotations

import enum

__all__ = [
    "AcceleratorKind",
    "AdminState",
    "AtomicOp",
    "ComponentState",
    "DataType",
    "EventKind",
    "FaultKind",
    "LinkState",
    "Opcode",
    "PartitionHealth",
    "PartitionMemberType",
    "ResiliencyMode",
    "TrafficPattern",
    "TrayKind",
]


class TrayKind(enum.IntEnum):
    COMPUTE = 1
    SWITCH = 2


class AcceleratorKind(enum.IntEnum):
    GPU = 1  # NVLink native
    ASIC = 2  # custom accelerator behind an NVLink Fusion chiplet


class LinkState(enum.IntEnum):
    """Effective state of a link; ADMIN_DOWN wins over whatever the hardware would do."""

    DOWN = 1
    INIT = 2  # training: not yet carrying traffic
    ACTIVE = 3
    ADMIN_DOWN = 4


class AdminState(enum.IntEnum):
    UP = 1
    DOWN = 2  # drained by an operator


class ComponentState(enum.IntEnum):
    """Health of a chiplet, switch chip or tray."""

    OK = 1
    FAILED = 2


class DataType(enum.IntEnum):
    U32 = 1
    U64 = 2
    I32 = 3
    I64 = 4
    F32 = 5
    F64 = 6


class AtomicOp(enum.IntEnum):
    """Atomic and reduction operations. Each returns the old value when used as an atomic."""

    ADD = 1
    AND = 2
    OR = 3
    XOR = 4
    MIN = 5
    MAX = 6
    EXCHANGE = 7
    COMPARE_SWAP = 8
    INCREMENT = 9  # CUDA atomicInc: old >= operand ? 0 : old + 1
    DECREMENT = 10  # CUDA atomicDec: (old == 0 or old > operand) ? operand : old - 1


class Opcode(enum.IntEnum):
    """Op kinds of a packed batch record."""

    LOAD = 1
    STORE = 2
    ATOMIC = 3


class PartitionMemberType(enum.IntEnum):
    """How a partition's members are named; fixed when the partition is created."""

    LOCATION = 1
    UID = 2


class ResiliencyMode(enum.IntEnum):
    FULL_BANDWIDTH = 1
    ADAPTIVE_BANDWIDTH = 2
    USER_ACTION_REQUIRED = 3


class PartitionHealth(enum.IntEnum):
    HEALTHY = 1
    DEGRADED_BANDWIDTH = 2
    DEGRADED = 3
    UNHEALTHY = 4


class FaultKind(enum.IntEnum):
    LINK_DOWN = 1
    LINK_FLAP = 2
    DEGRADED_BER = 3
    CHIPLET_FAILURE = 4
    SWITCH_CHIP_FAILURE = 5
    TRAY_LOSS = 6


class EventKind(enum.IntEnum):
    LINK_STATE_CHANGED = 1
    LINK_FLAPPING = 2
    LINK_ERRORS = 3
    FAULT_INJECTED = 4
    FAULT_CLEARED = 5
    COMPONENT_STATE_CHANGED = 6
    PARTITION_CREATED = 7
    PARTITION_UPDATED = 8
    PARTITION_DELETED = 9
    PARTITION_HEALTH_CHANGED = 10
    MULTICAST_GROUP_CREATED = 11
    MULTICAST_GROUP_DELETED = 12
    ADMIN_STATE_CHANGED = 13
    TOPOLOGY_MISMATCH = 14


class TrafficPattern(enum.IntEnum):
    """Collective communication patterns of the traffic model (`emulator.traffic`)."""

    ALL_REDUCE = 1  # ring all-reduce; over a multicast group, in-network reduction (SHARP)
    ALL_GATHER = 2  # ring all-gather
    ALL_TO_ALL = 3  # every member sends to every other member
    RING = 4  # every member sends to the next one (a pipeline or ring exchange)
    MULTICAST = 5  # one source; the switches replicate to every other member
