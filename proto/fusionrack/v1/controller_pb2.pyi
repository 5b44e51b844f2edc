import datetime

from fusionrack.v1 import common_pb2 as _common_pb2
from fusionrack.v1 import events_pb2 as _events_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ControlPlaneState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTROL_PLANE_STATE_UNSPECIFIED: _ClassVar[ControlPlaneState]
    CONTROL_PLANE_STATE_STARTING: _ClassVar[ControlPlaneState]
    CONTROL_PLANE_STATE_READY: _ClassVar[ControlPlaneState]
    CONTROL_PLANE_STATE_DEGRADED: _ClassVar[ControlPlaneState]

class TrafficPattern(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRAFFIC_PATTERN_UNSPECIFIED: _ClassVar[TrafficPattern]
    TRAFFIC_PATTERN_ALL_REDUCE: _ClassVar[TrafficPattern]
    TRAFFIC_PATTERN_ALL_GATHER: _ClassVar[TrafficPattern]
    TRAFFIC_PATTERN_ALL_TO_ALL: _ClassVar[TrafficPattern]
    TRAFFIC_PATTERN_RING: _ClassVar[TrafficPattern]
    TRAFFIC_PATTERN_MULTICAST: _ClassVar[TrafficPattern]
CONTROL_PLANE_STATE_UNSPECIFIED: ControlPlaneState
CONTROL_PLANE_STATE_STARTING: ControlPlaneState
CONTROL_PLANE_STATE_READY: ControlPlaneState
CONTROL_PLANE_STATE_DEGRADED: ControlPlaneState
TRAFFIC_PATTERN_UNSPECIFIED: TrafficPattern
TRAFFIC_PATTERN_ALL_REDUCE: TrafficPattern
TRAFFIC_PATTERN_ALL_GATHER: TrafficPattern
TRAFFIC_PATTERN_ALL_TO_ALL: TrafficPattern
TRAFFIC_PATTERN_RING: TrafficPattern
TRAFFIC_PATTERN_MULTICAST: TrafficPattern

class DomainProperties(_message.Message):
    __slots__ = ("rack", "description", "fabric_generation", "compute_tray_count", "switch_tray_count", "switch_chips_per_tray", "ports_per_switch_chip", "accelerator_count", "links_per_accelerator", "link_bandwidth_bytes_per_second", "accelerator_bandwidth_bytes_per_second", "rack_bandwidth_bytes_per_second", "max_partitions", "min_accelerators_per_partition", "max_partition_id", "default_partition_id", "default_partition_enabled", "max_partition_name_length", "default_resiliency_mode", "max_multicast_groups", "default_multicast_group_limit", "multicast_granularity_bytes", "max_access_bytes")
    RACK_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    FABRIC_GENERATION_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_TRAY_COUNT_FIELD_NUMBER: _ClassVar[int]
    SWITCH_TRAY_COUNT_FIELD_NUMBER: _ClassVar[int]
    SWITCH_CHIPS_PER_TRAY_FIELD_NUMBER: _ClassVar[int]
    PORTS_PER_SWITCH_CHIP_FIELD_NUMBER: _ClassVar[int]
    ACCELERATOR_COUNT_FIELD_NUMBER: _ClassVar[int]
    LINKS_PER_ACCELERATOR_FIELD_NUMBER: _ClassVar[int]
    LINK_BANDWIDTH_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ACCELERATOR_BANDWIDTH_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    RACK_BANDWIDTH_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    MAX_PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    MIN_ACCELERATORS_PER_PARTITION_FIELD_NUMBER: _ClassVar[int]
    MAX_PARTITION_ID_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PARTITION_ID_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PARTITION_ENABLED_FIELD_NUMBER: _ClassVar[int]
    MAX_PARTITION_NAME_LENGTH_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_RESILIENCY_MODE_FIELD_NUMBER: _ClassVar[int]
    MAX_MULTICAST_GROUPS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MULTICAST_GROUP_LIMIT_FIELD_NUMBER: _ClassVar[int]
    MULTICAST_GRANULARITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_ACCESS_BYTES_FIELD_NUMBER: _ClassVar[int]
    rack: str
    description: str
    fabric_generation: str
    compute_tray_count: int
    switch_tray_count: int
    switch_chips_per_tray: int
    ports_per_switch_chip: int
    accelerator_count: int
    links_per_accelerator: int
    link_bandwidth_bytes_per_second: int
    accelerator_bandwidth_bytes_per_second: int
    rack_bandwidth_bytes_per_second: int
    max_partitions: int
    min_accelerators_per_partition: int
    max_partition_id: int
    default_partition_id: int
    default_partition_enabled: bool
    max_partition_name_length: int
    default_resiliency_mode: _common_pb2.ResiliencyMode
    max_multicast_groups: int
    default_multicast_group_limit: int
    multicast_granularity_bytes: int
    max_access_bytes: int
    def __init__(self, rack: _Optional[str] = ..., description: _Optional[str] = ..., fabric_generation: _Optional[str] = ..., compute_tray_count: _Optional[int] = ..., switch_tray_count: _Optional[int] = ..., switch_chips_per_tray: _Optional[int] = ..., ports_per_switch_chip: _Optional[int] = ..., accelerator_count: _Optional[int] = ..., links_per_accelerator: _Optional[int] = ..., link_bandwidth_bytes_per_second: _Optional[int] = ..., accelerator_bandwidth_bytes_per_second: _Optional[int] = ..., rack_bandwidth_bytes_per_second: _Optional[int] = ..., max_partitions: _Optional[int] = ..., min_accelerators_per_partition: _Optional[int] = ..., max_partition_id: _Optional[int] = ..., default_partition_id: _Optional[int] = ..., default_partition_enabled: _Optional[bool] = ..., max_partition_name_length: _Optional[int] = ..., default_resiliency_mode: _Optional[_Union[_common_pb2.ResiliencyMode, str]] = ..., max_multicast_groups: _Optional[int] = ..., default_multicast_group_limit: _Optional[int] = ..., multicast_granularity_bytes: _Optional[int] = ..., max_access_bytes: _Optional[int] = ...) -> None: ...

class TopologyMismatch(_message.Message):
    __slots__ = ("tray", "field", "expected", "observed")
    TRAY_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_FIELD_NUMBER: _ClassVar[int]
    tray: str
    field: str
    expected: str
    observed: str
    def __init__(self, tray: _Optional[str] = ..., field: _Optional[str] = ..., expected: _Optional[str] = ..., observed: _Optional[str] = ...) -> None: ...

class DomainState(_message.Message):
    __slots__ = ("control_plane_state", "state_change_time", "partition_count", "multicast_group_count", "available_multicast_groups", "free_accelerator_count", "tray_count", "reachable_tray_count", "unreachable_trays", "stale_trays", "fabric_generation", "topology_mismatches", "drained_trays", "drained_links", "active_fault_count", "leadership")
    CONTROL_PLANE_STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    PARTITION_COUNT_FIELD_NUMBER: _ClassVar[int]
    MULTICAST_GROUP_COUNT_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_MULTICAST_GROUPS_FIELD_NUMBER: _ClassVar[int]
    FREE_ACCELERATOR_COUNT_FIELD_NUMBER: _ClassVar[int]
    TRAY_COUNT_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_TRAY_COUNT_FIELD_NUMBER: _ClassVar[int]
    UNREACHABLE_TRAYS_FIELD_NUMBER: _ClassVar[int]
    STALE_TRAYS_FIELD_NUMBER: _ClassVar[int]
    FABRIC_GENERATION_FIELD_NUMBER: _ClassVar[int]
    TOPOLOGY_MISMATCHES_FIELD_NUMBER: _ClassVar[int]
    DRAINED_TRAYS_FIELD_NUMBER: _ClassVar[int]
    DRAINED_LINKS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FAULT_COUNT_FIELD_NUMBER: _ClassVar[int]
    LEADERSHIP_FIELD_NUMBER: _ClassVar[int]
    control_plane_state: ControlPlaneState
    state_change_time: _timestamp_pb2.Timestamp
    partition_count: int
    multicast_group_count: int
    available_multicast_groups: int
    free_accelerator_count: int
    tray_count: int
    reachable_tray_count: int
    unreachable_trays: _containers.RepeatedScalarFieldContainer[str]
    stale_trays: _containers.RepeatedScalarFieldContainer[str]
    fabric_generation: int
    topology_mismatches: _containers.RepeatedCompositeFieldContainer[TopologyMismatch]
    drained_trays: _containers.RepeatedScalarFieldContainer[str]
    drained_links: _containers.RepeatedScalarFieldContainer[str]
    active_fault_count: int
    leadership: ControlPlaneLeadership
    def __init__(self, control_plane_state: _Optional[_Union[ControlPlaneState, str]] = ..., state_change_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., partition_count: _Optional[int] = ..., multicast_group_count: _Optional[int] = ..., available_multicast_groups: _Optional[int] = ..., free_accelerator_count: _Optional[int] = ..., tray_count: _Optional[int] = ..., reachable_tray_count: _Optional[int] = ..., unreachable_trays: _Optional[_Iterable[str]] = ..., stale_trays: _Optional[_Iterable[str]] = ..., fabric_generation: _Optional[int] = ..., topology_mismatches: _Optional[_Iterable[_Union[TopologyMismatch, _Mapping]]] = ..., drained_trays: _Optional[_Iterable[str]] = ..., drained_links: _Optional[_Iterable[str]] = ..., active_fault_count: _Optional[int] = ..., leadership: _Optional[_Union[ControlPlaneLeadership, _Mapping]] = ...) -> None: ...

class ControlPlaneLeadership(_message.Message):
    __slots__ = ("leader", "controller_id", "leader_id", "leader_address", "epoch", "store", "shared_store", "since")
    LEADER_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    SHARED_STORE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    leader: bool
    controller_id: str
    leader_id: str
    leader_address: str
    epoch: int
    store: str
    shared_store: bool
    since: _timestamp_pb2.Timestamp
    def __init__(self, leader: _Optional[bool] = ..., controller_id: _Optional[str] = ..., leader_id: _Optional[str] = ..., leader_address: _Optional[str] = ..., epoch: _Optional[int] = ..., store: _Optional[str] = ..., shared_store: _Optional[bool] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetDomainRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetDomainResponse(_message.Message):
    __slots__ = ("properties", "state")
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    properties: DomainProperties
    state: DomainState
    def __init__(self, properties: _Optional[_Union[DomainProperties, _Mapping]] = ..., state: _Optional[_Union[DomainState, _Mapping]] = ...) -> None: ...

class GetTopologyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetTopologyResponse(_message.Message):
    __slots__ = ("rack", "trays", "links")
    RACK_FIELD_NUMBER: _ClassVar[int]
    TRAYS_FIELD_NUMBER: _ClassVar[int]
    LINKS_FIELD_NUMBER: _ClassVar[int]
    rack: str
    trays: _containers.RepeatedCompositeFieldContainer[_common_pb2.TrayInfo]
    links: _containers.RepeatedCompositeFieldContainer[_common_pb2.Link]
    def __init__(self, rack: _Optional[str] = ..., trays: _Optional[_Iterable[_Union[_common_pb2.TrayInfo, _Mapping]]] = ..., links: _Optional[_Iterable[_Union[_common_pb2.Link, _Mapping]]] = ...) -> None: ...

class ListTraysRequest(_message.Message):
    __slots__ = ("kind",)
    KIND_FIELD_NUMBER: _ClassVar[int]
    kind: _common_pb2.TrayKind
    def __init__(self, kind: _Optional[_Union[_common_pb2.TrayKind, str]] = ...) -> None: ...

class ListTraysResponse(_message.Message):
    __slots__ = ("trays",)
    TRAYS_FIELD_NUMBER: _ClassVar[int]
    trays: _containers.RepeatedCompositeFieldContainer[_common_pb2.TrayInfo]
    def __init__(self, trays: _Optional[_Iterable[_Union[_common_pb2.TrayInfo, _Mapping]]] = ...) -> None: ...

class ListAcceleratorsRequest(_message.Message):
    __slots__ = ("tray", "kind", "partition_id")
    TRAY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PARTITION_ID_FIELD_NUMBER: _ClassVar[int]
    tray: str
    kind: _common_pb2.AcceleratorKind
    partition_id: int
    def __init__(self, tray: _Optional[str] = ..., kind: _Optional[_Union[_common_pb2.AcceleratorKind, str]] = ..., partition_id: _Optional[int] = ...) -> None: ...

class ListAcceleratorsResponse(_message.Message):
    __slots__ = ("accelerators",)
    ACCELERATORS_FIELD_NUMBER: _ClassVar[int]
    accelerators: _containers.RepeatedCompositeFieldContainer[_common_pb2.Accelerator]
    def __init__(self, accelerators: _Optional[_Iterable[_Union[_common_pb2.Accelerator, _Mapping]]] = ...) -> None: ...

class CreatePartitionRequest(_message.Message):
    __slots__ = ("name", "id", "locations", "uids", "count", "member_type", "resiliency_mode", "multicast_group_limit", "idempotency_key")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    LOCATIONS_FIELD_NUMBER: _ClassVar[int]
    UIDS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMBER_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESILIENCY_MODE_FIELD_NUMBER: _ClassVar[int]
    MULTICAST_GROUP_LIMIT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: int
    locations: _common_pb2.LocationList
    uids: _common_pb2.UidList
    count: int
    member_type: _common_pb2.PartitionMemberType
    resiliency_mode: _common_pb2.ResiliencyMode
    multicast_group_limit: int
    idempotency_key: str
    def __init__(self, name: _Optional[str] = ..., id: _Optional[int] = ..., locations: _Optional[_Union[_common_pb2.LocationList, _Mapping]] = ..., uids: _Optional[_Union[_common_pb2.UidList, _Mapping]] = ..., count: _Optional[int] = ..., member_type: _Optional[_Union[_common_pb2.PartitionMemberType, str]] = ..., resiliency_mode: _Optional[_Union[_common_pb2.ResiliencyMode, str]] = ..., multicast_group_limit: _Optional[int] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class CreatePartitionResponse(_message.Message):
    __slots__ = ("partition",)
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    partition: _common_pb2.Partition
    def __init__(self, partition: _Optional[_Union[_common_pb2.Partition, _Mapping]] = ...) -> None: ...

class GetPartitionRequest(_message.Message):
    __slots__ = ("partition",)
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    partition: _common_pb2.PartitionRef
    def __init__(self, partition: _Optional[_Union[_common_pb2.PartitionRef, _Mapping]] = ...) -> None: ...

class GetPartitionResponse(_message.Message):
    __slots__ = ("partition",)
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    partition: _common_pb2.Partition
    def __init__(self, partition: _Optional[_Union[_common_pb2.Partition, _Mapping]] = ...) -> None: ...

class ListPartitionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPartitionsResponse(_message.Message):
    __slots__ = ("partitions",)
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    partitions: _containers.RepeatedCompositeFieldContainer[_common_pb2.Partition]
    def __init__(self, partitions: _Optional[_Iterable[_Union[_common_pb2.Partition, _Mapping]]] = ...) -> None: ...

class DeletePartitionRequest(_message.Message):
    __slots__ = ("partition", "delete_multicast_groups", "idempotency_key")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    DELETE_MULTICAST_GROUPS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    partition: _common_pb2.PartitionRef
    delete_multicast_groups: bool
    idempotency_key: str
    def __init__(self, partition: _Optional[_Union[_common_pb2.PartitionRef, _Mapping]] = ..., delete_multicast_groups: _Optional[bool] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class DeletePartitionResponse(_message.Message):
    __slots__ = ("partition", "deleted_multicast_groups")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    DELETED_MULTICAST_GROUPS_FIELD_NUMBER: _ClassVar[int]
    partition: _common_pb2.Partition
    deleted_multicast_groups: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, partition: _Optional[_Union[_common_pb2.Partition, _Mapping]] = ..., deleted_multicast_groups: _Optional[_Iterable[int]] = ...) -> None: ...

class AddAcceleratorsRequest(_message.Message):
    __slots__ = ("partition", "locations", "uids", "idempotency_key")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    LOCATIONS_FIELD_NUMBER: _ClassVar[int]
    UIDS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    partition: _common_pb2.PartitionRef
    locations: _common_pb2.LocationList
    uids: _common_pb2.UidList
    idempotency_key: str
    def __init__(self, partition: _Optional[_Union[_common_pb2.PartitionRef, _Mapping]] = ..., locations: _Optional[_Union[_common_pb2.LocationList, _Mapping]] = ..., uids: _Optional[_Union[_common_pb2.UidList, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class AddAcceleratorsResponse(_message.Message):
    __slots__ = ("partition",)
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    partition: _common_pb2.Partition
    def __init__(self, partition: _Optional[_Union[_common_pb2.Partition, _Mapping]] = ...) -> None: ...

class RemoveAcceleratorsRequest(_message.Message):
    __slots__ = ("partition", "locations", "uids", "idempotency_key")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    LOCATIONS_FIELD_NUMBER: _ClassVar[int]
    UIDS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    partition: _common_pb2.PartitionRef
    locations: _common_pb2.LocationList
    uids: _common_pb2.UidList
    idempotency_key: str
    def __init__(self, partition: _Optional[_Union[_common_pb2.PartitionRef, _Mapping]] = ..., locations: _Optional[_Union[_common_pb2.LocationList, _Mapping]] = ..., uids: _Optional[_Union[_common_pb2.UidList, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class RemoveAcceleratorsResponse(_message.Message):
    __slots__ = ("partition",)
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    partition: _common_pb2.Partition
    def __init__(self, partition: _Optional[_Union[_common_pb2.Partition, _Mapping]] = ...) -> None: ...

class MulticastMemberSpec(_message.Message):
    __slots__ = ("accelerator", "offset")
    ACCELERATOR_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    accelerator: _common_pb2.AcceleratorRef
    offset: int
    def __init__(self, accelerator: _Optional[_Union[_common_pb2.AcceleratorRef, _Mapping]] = ..., offset: _Optional[int] = ...) -> None: ...

class CreateMulticastGroupRequest(_message.Message):
    __slots__ = ("partition", "size_bytes", "members", "id", "idempotency_key")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    partition: _common_pb2.PartitionRef
    size_bytes: int
    members: _containers.RepeatedCompositeFieldContainer[MulticastMemberSpec]
    id: int
    idempotency_key: str
    def __init__(self, partition: _Optional[_Union[_common_pb2.PartitionRef, _Mapping]] = ..., size_bytes: _Optional[int] = ..., members: _Optional[_Iterable[_Union[MulticastMemberSpec, _Mapping]]] = ..., id: _Optional[int] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class CreateMulticastGroupResponse(_message.Message):
    __slots__ = ("group",)
    GROUP_FIELD_NUMBER: _ClassVar[int]
    group: _common_pb2.MulticastGroup
    def __init__(self, group: _Optional[_Union[_common_pb2.MulticastGroup, _Mapping]] = ...) -> None: ...

class GetMulticastGroupRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class GetMulticastGroupResponse(_message.Message):
    __slots__ = ("group",)
    GROUP_FIELD_NUMBER: _ClassVar[int]
    group: _common_pb2.MulticastGroup
    def __init__(self, group: _Optional[_Union[_common_pb2.MulticastGroup, _Mapping]] = ...) -> None: ...

class ListMulticastGroupsRequest(_message.Message):
    __slots__ = ("partition",)
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    partition: _common_pb2.PartitionRef
    def __init__(self, partition: _Optional[_Union[_common_pb2.PartitionRef, _Mapping]] = ...) -> None: ...

class ListMulticastGroupsResponse(_message.Message):
    __slots__ = ("groups",)
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[_common_pb2.MulticastGroup]
    def __init__(self, groups: _Optional[_Iterable[_Union[_common_pb2.MulticastGroup, _Mapping]]] = ...) -> None: ...

class DeleteMulticastGroupRequest(_message.Message):
    __slots__ = ("id", "idempotency_key")
    ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    id: int
    idempotency_key: str
    def __init__(self, id: _Optional[int] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class DeleteMulticastGroupResponse(_message.Message):
    __slots__ = ("group",)
    GROUP_FIELD_NUMBER: _ClassVar[int]
    group: _common_pb2.MulticastGroup
    def __init__(self, group: _Optional[_Union[_common_pb2.MulticastGroup, _Mapping]] = ...) -> None: ...

class ListFaultsRequest(_message.Message):
    __slots__ = ("tray",)
    TRAY_FIELD_NUMBER: _ClassVar[int]
    tray: str
    def __init__(self, tray: _Optional[str] = ...) -> None: ...

class ListFaultsResponse(_message.Message):
    __slots__ = ("faults",)
    FAULTS_FIELD_NUMBER: _ClassVar[int]
    faults: _containers.RepeatedCompositeFieldContainer[_common_pb2.Fault]
    def __init__(self, faults: _Optional[_Iterable[_Union[_common_pb2.Fault, _Mapping]]] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("kinds", "partition_ids", "trays", "include_snapshot")
    KINDS_FIELD_NUMBER: _ClassVar[int]
    PARTITION_IDS_FIELD_NUMBER: _ClassVar[int]
    TRAYS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    kinds: _containers.RepeatedScalarFieldContainer[_common_pb2.EventKind]
    partition_ids: _containers.RepeatedScalarFieldContainer[int]
    trays: _containers.RepeatedScalarFieldContainer[str]
    include_snapshot: bool
    def __init__(self, kinds: _Optional[_Iterable[_Union[_common_pb2.EventKind, str]]] = ..., partition_ids: _Optional[_Iterable[int]] = ..., trays: _Optional[_Iterable[str]] = ..., include_snapshot: _Optional[bool] = ...) -> None: ...

class SnapshotEnd(_message.Message):
    __slots__ = ("event_count",)
    EVENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    event_count: int
    def __init__(self, event_count: _Optional[int] = ...) -> None: ...

class SubscribeResponse(_message.Message):
    __slots__ = ("event", "snapshot_end")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_END_FIELD_NUMBER: _ClassVar[int]
    event: _events_pb2.Event
    snapshot_end: SnapshotEnd
    def __init__(self, event: _Optional[_Union[_events_pb2.Event, _Mapping]] = ..., snapshot_end: _Optional[_Union[SnapshotEnd, _Mapping]] = ...) -> None: ...

class TrafficSession(_message.Message):
    __slots__ = ("id", "partition_id", "partition_name", "pattern", "load", "multicast_group_id", "source", "members", "in_network_reduction", "algorithm", "start_time", "expire_time", "bus_factor", "member_bytes_per_second", "algorithm_bytes_per_second", "link_count")
    ID_FIELD_NUMBER: _ClassVar[int]
    PARTITION_ID_FIELD_NUMBER: _ClassVar[int]
    PARTITION_NAME_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    MULTICAST_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    IN_NETWORK_REDUCTION_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    BUS_FACTOR_FIELD_NUMBER: _ClassVar[int]
    MEMBER_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    LINK_COUNT_FIELD_NUMBER: _ClassVar[int]
    id: int
    partition_id: int
    partition_name: str
    pattern: TrafficPattern
    load: float
    multicast_group_id: int
    source: int
    members: _containers.RepeatedScalarFieldContainer[int]
    in_network_reduction: bool
    algorithm: str
    start_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    bus_factor: float
    member_bytes_per_second: float
    algorithm_bytes_per_second: float
    link_count: int
    def __init__(self, id: _Optional[int] = ..., partition_id: _Optional[int] = ..., partition_name: _Optional[str] = ..., pattern: _Optional[_Union[TrafficPattern, str]] = ..., load: _Optional[float] = ..., multicast_group_id: _Optional[int] = ..., source: _Optional[int] = ..., members: _Optional[_Iterable[int]] = ..., in_network_reduction: _Optional[bool] = ..., algorithm: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., bus_factor: _Optional[float] = ..., member_bytes_per_second: _Optional[float] = ..., algorithm_bytes_per_second: _Optional[float] = ..., link_count: _Optional[int] = ...) -> None: ...

class StartTrafficRequest(_message.Message):
    __slots__ = ("partition", "pattern", "load", "duration", "multicast_group_id", "source", "idempotency_key")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    MULTICAST_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    partition: _common_pb2.PartitionRef
    pattern: TrafficPattern
    load: float
    duration: _duration_pb2.Duration
    multicast_group_id: int
    source: _common_pb2.AcceleratorRef
    idempotency_key: str
    def __init__(self, partition: _Optional[_Union[_common_pb2.PartitionRef, _Mapping]] = ..., pattern: _Optional[_Union[TrafficPattern, str]] = ..., load: _Optional[float] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., multicast_group_id: _Optional[int] = ..., source: _Optional[_Union[_common_pb2.AcceleratorRef, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class StartTrafficResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: TrafficSession
    def __init__(self, session: _Optional[_Union[TrafficSession, _Mapping]] = ...) -> None: ...

class ListTrafficRequest(_message.Message):
    __slots__ = ("partition",)
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    partition: _common_pb2.PartitionRef
    def __init__(self, partition: _Optional[_Union[_common_pb2.PartitionRef, _Mapping]] = ...) -> None: ...

class ListTrafficResponse(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[TrafficSession]
    def __init__(self, sessions: _Optional[_Iterable[_Union[TrafficSession, _Mapping]]] = ...) -> None: ...

class StopTrafficRequest(_message.Message):
    __slots__ = ("id", "all", "partition", "idempotency_key")
    ID_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    id: int
    all: bool
    partition: _common_pb2.PartitionRef
    idempotency_key: str
    def __init__(self, id: _Optional[int] = ..., all: _Optional[bool] = ..., partition: _Optional[_Union[_common_pb2.PartitionRef, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class StopTrafficResponse(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[TrafficSession]
    def __init__(self, sessions: _Optional[_Iterable[_Union[TrafficSession, _Mapping]]] = ...) -> None: ...
