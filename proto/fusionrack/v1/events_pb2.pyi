import datetime

from fusionrack.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Event(_message.Message):
    __slots__ = ("id", "kind", "time", "source", "subject", "partition_ids", "trays", "accelerators", "snapshot", "link_state_changed", "link_flapping", "link_errors", "fault", "component_state_changed", "partition", "partition_health_changed", "multicast_group", "admin_state_changed", "topology_mismatch")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    PARTITION_IDS_FIELD_NUMBER: _ClassVar[int]
    TRAYS_FIELD_NUMBER: _ClassVar[int]
    ACCELERATORS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    LINK_STATE_CHANGED_FIELD_NUMBER: _ClassVar[int]
    LINK_FLAPPING_FIELD_NUMBER: _ClassVar[int]
    LINK_ERRORS_FIELD_NUMBER: _ClassVar[int]
    FAULT_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_STATE_CHANGED_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    PARTITION_HEALTH_CHANGED_FIELD_NUMBER: _ClassVar[int]
    MULTICAST_GROUP_FIELD_NUMBER: _ClassVar[int]
    ADMIN_STATE_CHANGED_FIELD_NUMBER: _ClassVar[int]
    TOPOLOGY_MISMATCH_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: _common_pb2.EventKind
    time: _timestamp_pb2.Timestamp
    source: str
    subject: str
    partition_ids: _containers.RepeatedScalarFieldContainer[int]
    trays: _containers.RepeatedScalarFieldContainer[str]
    accelerators: _containers.RepeatedScalarFieldContainer[int]
    snapshot: bool
    link_state_changed: LinkStateChanged
    link_flapping: LinkFlapping
    link_errors: LinkErrors
    fault: _common_pb2.Fault
    component_state_changed: ComponentStateChanged
    partition: _common_pb2.Partition
    partition_health_changed: PartitionHealthChanged
    multicast_group: _common_pb2.MulticastGroup
    admin_state_changed: AdminStateChanged
    topology_mismatch: TopologyMismatchFound
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[_Union[_common_pb2.EventKind, str]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[str] = ..., subject: _Optional[str] = ..., partition_ids: _Optional[_Iterable[int]] = ..., trays: _Optional[_Iterable[str]] = ..., accelerators: _Optional[_Iterable[int]] = ..., snapshot: _Optional[bool] = ..., link_state_changed: _Optional[_Union[LinkStateChanged, _Mapping]] = ..., link_flapping: _Optional[_Union[LinkFlapping, _Mapping]] = ..., link_errors: _Optional[_Union[LinkErrors, _Mapping]] = ..., fault: _Optional[_Union[_common_pb2.Fault, _Mapping]] = ..., component_state_changed: _Optional[_Union[ComponentStateChanged, _Mapping]] = ..., partition: _Optional[_Union[_common_pb2.Partition, _Mapping]] = ..., partition_health_changed: _Optional[_Union[PartitionHealthChanged, _Mapping]] = ..., multicast_group: _Optional[_Union[_common_pb2.MulticastGroup, _Mapping]] = ..., admin_state_changed: _Optional[_Union[AdminStateChanged, _Mapping]] = ..., topology_mismatch: _Optional[_Union[TopologyMismatchFound, _Mapping]] = ...) -> None: ...

class TopologyMismatchFound(_message.Message):
    __slots__ = ("tray", "differences")
    class Difference(_message.Message):
        __slots__ = ("field", "expected", "observed")
        FIELD_FIELD_NUMBER: _ClassVar[int]
        EXPECTED_FIELD_NUMBER: _ClassVar[int]
        OBSERVED_FIELD_NUMBER: _ClassVar[int]
        field: str
        expected: str
        observed: str
        def __init__(self, field: _Optional[str] = ..., expected: _Optional[str] = ..., observed: _Optional[str] = ...) -> None: ...
    TRAY_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCES_FIELD_NUMBER: _ClassVar[int]
    tray: str
    differences: _containers.RepeatedCompositeFieldContainer[TopologyMismatchFound.Difference]
    def __init__(self, tray: _Optional[str] = ..., differences: _Optional[_Iterable[_Union[TopologyMismatchFound.Difference, _Mapping]]] = ...) -> None: ...

class LinkStateChanged(_message.Message):
    __slots__ = ("link", "state", "previous")
    LINK_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    link: _common_pb2.LinkRef
    state: _common_pb2.LinkState
    previous: _common_pb2.LinkState
    def __init__(self, link: _Optional[_Union[_common_pb2.LinkRef, _Mapping]] = ..., state: _Optional[_Union[_common_pb2.LinkState, str]] = ..., previous: _Optional[_Union[_common_pb2.LinkState, str]] = ...) -> None: ...

class LinkFlapping(_message.Message):
    __slots__ = ("link", "state", "transitions", "link_down_total")
    LINK_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TRANSITIONS_FIELD_NUMBER: _ClassVar[int]
    LINK_DOWN_TOTAL_FIELD_NUMBER: _ClassVar[int]
    link: _common_pb2.LinkRef
    state: _common_pb2.LinkState
    transitions: int
    link_down_total: int
    def __init__(self, link: _Optional[_Union[_common_pb2.LinkRef, _Mapping]] = ..., state: _Optional[_Union[_common_pb2.LinkState, str]] = ..., transitions: _Optional[int] = ..., link_down_total: _Optional[int] = ...) -> None: ...

class LinkErrors(_message.Message):
    __slots__ = ("link", "counters", "bit_error_rate")
    LINK_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    BIT_ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    link: _common_pb2.LinkRef
    counters: _common_pb2.LinkCounters
    bit_error_rate: float
    def __init__(self, link: _Optional[_Union[_common_pb2.LinkRef, _Mapping]] = ..., counters: _Optional[_Union[_common_pb2.LinkCounters, _Mapping]] = ..., bit_error_rate: _Optional[float] = ...) -> None: ...

class ComponentStateChanged(_message.Message):
    __slots__ = ("component", "state", "previous", "reason")
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    component: _common_pb2.ComponentRef
    state: _common_pb2.ComponentState
    previous: _common_pb2.ComponentState
    reason: str
    def __init__(self, component: _Optional[_Union[_common_pb2.ComponentRef, _Mapping]] = ..., state: _Optional[_Union[_common_pb2.ComponentState, str]] = ..., previous: _Optional[_Union[_common_pb2.ComponentState, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class PartitionHealthChanged(_message.Message):
    __slots__ = ("partition_id", "name", "health", "previous", "reason")
    PARTITION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    partition_id: int
    name: str
    health: _common_pb2.PartitionHealth
    previous: _common_pb2.PartitionHealth
    reason: str
    def __init__(self, partition_id: _Optional[int] = ..., name: _Optional[str] = ..., health: _Optional[_Union[_common_pb2.PartitionHealth, str]] = ..., previous: _Optional[_Union[_common_pb2.PartitionHealth, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class AdminStateChanged(_message.Message):
    __slots__ = ("target", "admin_state", "reason")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    ADMIN_STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    target: _common_pb2.ComponentRef
    admin_state: _common_pb2.AdminState
    reason: str
    def __init__(self, target: _Optional[_Union[_common_pb2.ComponentRef, _Mapping]] = ..., admin_state: _Optional[_Union[_common_pb2.AdminState, str]] = ..., reason: _Optional[str] = ...) -> None: ...
