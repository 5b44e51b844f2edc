import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrayKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRAY_KIND_UNSPECIFIED: _ClassVar[TrayKind]
    TRAY_KIND_COMPUTE: _ClassVar[TrayKind]
    TRAY_KIND_SWITCH: _ClassVar[TrayKind]

class AcceleratorKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACCELERATOR_KIND_UNSPECIFIED: _ClassVar[AcceleratorKind]
    ACCELERATOR_KIND_GPU: _ClassVar[AcceleratorKind]
    ACCELERATOR_KIND_ASIC: _ClassVar[AcceleratorKind]

class LinkState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LINK_STATE_UNSPECIFIED: _ClassVar[LinkState]
    LINK_STATE_DOWN: _ClassVar[LinkState]
    LINK_STATE_INIT: _ClassVar[LinkState]
    LINK_STATE_ACTIVE: _ClassVar[LinkState]
    LINK_STATE_ADMIN_DOWN: _ClassVar[LinkState]

class AdminState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ADMIN_STATE_UNSPECIFIED: _ClassVar[AdminState]
    ADMIN_STATE_UP: _ClassVar[AdminState]
    ADMIN_STATE_DOWN: _ClassVar[AdminState]

class ComponentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPONENT_STATE_UNSPECIFIED: _ClassVar[ComponentState]
    COMPONENT_STATE_OK: _ClassVar[ComponentState]
    COMPONENT_STATE_FAILED: _ClassVar[ComponentState]

class DataType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATA_TYPE_UNSPECIFIED: _ClassVar[DataType]
    DATA_TYPE_U32: _ClassVar[DataType]
    DATA_TYPE_U64: _ClassVar[DataType]
    DATA_TYPE_I32: _ClassVar[DataType]
    DATA_TYPE_I64: _ClassVar[DataType]
    DATA_TYPE_F32: _ClassVar[DataType]
    DATA_TYPE_F64: _ClassVar[DataType]

class AtomicOp(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ATOMIC_OP_UNSPECIFIED: _ClassVar[AtomicOp]
    ATOMIC_OP_ADD: _ClassVar[AtomicOp]
    ATOMIC_OP_AND: _ClassVar[AtomicOp]
    ATOMIC_OP_OR: _ClassVar[AtomicOp]
    ATOMIC_OP_XOR: _ClassVar[AtomicOp]
    ATOMIC_OP_MIN: _ClassVar[AtomicOp]
    ATOMIC_OP_MAX: _ClassVar[AtomicOp]
    ATOMIC_OP_EXCHANGE: _ClassVar[AtomicOp]
    ATOMIC_OP_COMPARE_SWAP: _ClassVar[AtomicOp]
    ATOMIC_OP_INCREMENT: _ClassVar[AtomicOp]
    ATOMIC_OP_DECREMENT: _ClassVar[AtomicOp]

class Opcode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPCODE_UNSPECIFIED: _ClassVar[Opcode]
    OPCODE_LOAD: _ClassVar[Opcode]
    OPCODE_STORE: _ClassVar[Opcode]
    OPCODE_ATOMIC: _ClassVar[Opcode]

class ResiliencyMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESILIENCY_MODE_UNSPECIFIED: _ClassVar[ResiliencyMode]
    RESILIENCY_MODE_FULL_BANDWIDTH: _ClassVar[ResiliencyMode]
    RESILIENCY_MODE_ADAPTIVE_BANDWIDTH: _ClassVar[ResiliencyMode]
    RESILIENCY_MODE_USER_ACTION_REQUIRED: _ClassVar[ResiliencyMode]

class PartitionHealth(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PARTITION_HEALTH_UNSPECIFIED: _ClassVar[PartitionHealth]
    PARTITION_HEALTH_HEALTHY: _ClassVar[PartitionHealth]
    PARTITION_HEALTH_DEGRADED_BANDWIDTH: _ClassVar[PartitionHealth]
    PARTITION_HEALTH_DEGRADED: _ClassVar[PartitionHealth]
    PARTITION_HEALTH_UNHEALTHY: _ClassVar[PartitionHealth]

class FaultKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAULT_KIND_UNSPECIFIED: _ClassVar[FaultKind]
    FAULT_KIND_LINK_DOWN: _ClassVar[FaultKind]
    FAULT_KIND_LINK_FLAP: _ClassVar[FaultKind]
    FAULT_KIND_DEGRADED_BER: _ClassVar[FaultKind]
    FAULT_KIND_CHIPLET_FAILURE: _ClassVar[FaultKind]
    FAULT_KIND_SWITCH_CHIP_FAILURE: _ClassVar[FaultKind]
    FAULT_KIND_TRAY_LOSS: _ClassVar[FaultKind]

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_KIND_UNSPECIFIED: _ClassVar[EventKind]
    EVENT_KIND_LINK_STATE_CHANGED: _ClassVar[EventKind]
    EVENT_KIND_LINK_FLAPPING: _ClassVar[EventKind]
    EVENT_KIND_LINK_ERRORS: _ClassVar[EventKind]
    EVENT_KIND_FAULT_INJECTED: _ClassVar[EventKind]
    EVENT_KIND_FAULT_CLEARED: _ClassVar[EventKind]
    EVENT_KIND_COMPONENT_STATE_CHANGED: _ClassVar[EventKind]
    EVENT_KIND_PARTITION_CREATED: _ClassVar[EventKind]
    EVENT_KIND_PARTITION_UPDATED: _ClassVar[EventKind]
    EVENT_KIND_PARTITION_DELETED: _ClassVar[EventKind]
    EVENT_KIND_PARTITION_HEALTH_CHANGED: _ClassVar[EventKind]
    EVENT_KIND_MULTICAST_GROUP_CREATED: _ClassVar[EventKind]
    EVENT_KIND_MULTICAST_GROUP_DELETED: _ClassVar[EventKind]
    EVENT_KIND_ADMIN_STATE_CHANGED: _ClassVar[EventKind]
    EVENT_KIND_TOPOLOGY_MISMATCH: _ClassVar[EventKind]

class PartitionMemberType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PARTITION_MEMBER_TYPE_UNSPECIFIED: _ClassVar[PartitionMemberType]
    PARTITION_MEMBER_TYPE_LOCATION: _ClassVar[PartitionMemberType]
    PARTITION_MEMBER_TYPE_UID: _ClassVar[PartitionMemberType]
TRAY_KIND_UNSPECIFIED: TrayKind
TRAY_KIND_COMPUTE: TrayKind
TRAY_KIND_SWITCH: TrayKind
ACCELERATOR_KIND_UNSPECIFIED: AcceleratorKind
ACCELERATOR_KIND_GPU: AcceleratorKind
ACCELERATOR_KIND_ASIC: AcceleratorKind
LINK_STATE_UNSPECIFIED: LinkState
LINK_STATE_DOWN: LinkState
LINK_STATE_INIT: LinkState
LINK_STATE_ACTIVE: LinkState
LINK_STATE_ADMIN_DOWN: LinkState
ADMIN_STATE_UNSPECIFIED: AdminState
ADMIN_STATE_UP: AdminState
ADMIN_STATE_DOWN: AdminState
COMPONENT_STATE_UNSPECIFIED: ComponentState
COMPONENT_STATE_OK: ComponentState
COMPONENT_STATE_FAILED: ComponentState
DATA_TYPE_UNSPECIFIED: DataType
DATA_TYPE_U32: DataType
DATA_TYPE_U64: DataType
DATA_TYPE_I32: DataType
DATA_TYPE_I64: DataType
DATA_TYPE_F32: DataType
DATA_TYPE_F64: DataType
ATOMIC_OP_UNSPECIFIED: AtomicOp
ATOMIC_OP_ADD: AtomicOp
ATOMIC_OP_AND: AtomicOp
ATOMIC_OP_OR: AtomicOp
ATOMIC_OP_XOR: AtomicOp
ATOMIC_OP_MIN: AtomicOp
ATOMIC_OP_MAX: AtomicOp
ATOMIC_OP_EXCHANGE: AtomicOp
ATOMIC_OP_COMPARE_SWAP: AtomicOp
ATOMIC_OP_INCREMENT: AtomicOp
ATOMIC_OP_DECREMENT: AtomicOp
OPCODE_UNSPECIFIED: Opcode
OPCODE_LOAD: Opcode
OPCODE_STORE: Opcode
OPCODE_ATOMIC: Opcode
RESILIENCY_MODE_UNSPECIFIED: ResiliencyMode
RESILIENCY_MODE_FULL_BANDWIDTH: ResiliencyMode
RESILIENCY_MODE_ADAPTIVE_BANDWIDTH: ResiliencyMode
RESILIENCY_MODE_USER_ACTION_REQUIRED: ResiliencyMode
PARTITION_HEALTH_UNSPECIFIED: PartitionHealth
PARTITION_HEALTH_HEALTHY: PartitionHealth
PARTITION_HEALTH_DEGRADED_BANDWIDTH: PartitionHealth
PARTITION_HEALTH_DEGRADED: PartitionHealth
PARTITION_HEALTH_UNHEALTHY: PartitionHealth
FAULT_KIND_UNSPECIFIED: FaultKind
FAULT_KIND_LINK_DOWN: FaultKind
FAULT_KIND_LINK_FLAP: FaultKind
FAULT_KIND_DEGRADED_BER: FaultKind
FAULT_KIND_CHIPLET_FAILURE: FaultKind
FAULT_KIND_SWITCH_CHIP_FAILURE: FaultKind
FAULT_KIND_TRAY_LOSS: FaultKind
EVENT_KIND_UNSPECIFIED: EventKind
EVENT_KIND_LINK_STATE_CHANGED: EventKind
EVENT_KIND_LINK_FLAPPING: EventKind
EVENT_KIND_LINK_ERRORS: EventKind
EVENT_KIND_FAULT_INJECTED: EventKind
EVENT_KIND_FAULT_CLEARED: EventKind
EVENT_KIND_COMPONENT_STATE_CHANGED: EventKind
EVENT_KIND_PARTITION_CREATED: EventKind
EVENT_KIND_PARTITION_UPDATED: EventKind
EVENT_KIND_PARTITION_DELETED: EventKind
EVENT_KIND_PARTITION_HEALTH_CHANGED: EventKind
EVENT_KIND_MULTICAST_GROUP_CREATED: EventKind
EVENT_KIND_MULTICAST_GROUP_DELETED: EventKind
EVENT_KIND_ADMIN_STATE_CHANGED: EventKind
EVENT_KIND_TOPOLOGY_MISMATCH: EventKind
PARTITION_MEMBER_TYPE_UNSPECIFIED: PartitionMemberType
PARTITION_MEMBER_TYPE_LOCATION: PartitionMemberType
PARTITION_MEMBER_TYPE_UID: PartitionMemberType

class Location(_message.Message):
    __slots__ = ("rack", "tray", "tray_slot", "index")
    RACK_FIELD_NUMBER: _ClassVar[int]
    TRAY_FIELD_NUMBER: _ClassVar[int]
    TRAY_SLOT_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    rack: str
    tray: str
    tray_slot: int
    index: int
    def __init__(self, rack: _Optional[str] = ..., tray: _Optional[str] = ..., tray_slot: _Optional[int] = ..., index: _Optional[int] = ...) -> None: ...

class AcceleratorRef(_message.Message):
    __slots__ = ("index", "uid", "location", "name")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    index: int
    uid: int
    location: Location
    name: str
    def __init__(self, index: _Optional[int] = ..., uid: _Optional[int] = ..., location: _Optional[_Union[Location, _Mapping]] = ..., name: _Optional[str] = ...) -> None: ...

class LinkRef(_message.Message):
    __slots__ = ("accelerator", "link")
    ACCELERATOR_FIELD_NUMBER: _ClassVar[int]
    LINK_FIELD_NUMBER: _ClassVar[int]
    accelerator: int
    link: int
    def __init__(self, accelerator: _Optional[int] = ..., link: _Optional[int] = ...) -> None: ...

class ComponentRef(_message.Message):
    __slots__ = ("name", "link", "chiplet", "switch_chip", "tray")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LINK_FIELD_NUMBER: _ClassVar[int]
    CHIPLET_FIELD_NUMBER: _ClassVar[int]
    SWITCH_CHIP_FIELD_NUMBER: _ClassVar[int]
    TRAY_FIELD_NUMBER: _ClassVar[int]
    name: str
    link: LinkRef
    chiplet: int
    switch_chip: int
    tray: str
    def __init__(self, name: _Optional[str] = ..., link: _Optional[_Union[LinkRef, _Mapping]] = ..., chiplet: _Optional[int] = ..., switch_chip: _Optional[int] = ..., tray: _Optional[str] = ...) -> None: ...

class PartitionRef(_message.Message):
    __slots__ = ("id", "name")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ...) -> None: ...

class Chiplet(_message.Message):
    __slots__ = ("name", "accelerator", "model", "ucie_bandwidth_bytes_per_second", "nvlink_ports", "state", "ucie_link_state")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ACCELERATOR_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    UCIE_BANDWIDTH_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    NVLINK_PORTS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    UCIE_LINK_STATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    accelerator: int
    model: str
    ucie_bandwidth_bytes_per_second: int
    nvlink_ports: int
    state: ComponentState
    ucie_link_state: LinkState
    def __init__(self, name: _Optional[str] = ..., accelerator: _Optional[int] = ..., model: _Optional[str] = ..., ucie_bandwidth_bytes_per_second: _Optional[int] = ..., nvlink_ports: _Optional[int] = ..., state: _Optional[_Union[ComponentState, str]] = ..., ucie_link_state: _Optional[_Union[LinkState, str]] = ...) -> None: ...

class Accelerator(_message.Message):
    __slots__ = ("index", "uid", "name", "location", "kind", "model", "hbm_bytes", "link_count", "active_link_count", "bandwidth_bytes_per_second", "chiplet", "state", "partition_id")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    HBM_BYTES_FIELD_NUMBER: _ClassVar[int]
    LINK_COUNT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_LINK_COUNT_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    CHIPLET_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PARTITION_ID_FIELD_NUMBER: _ClassVar[int]
    index: int
    uid: int
    name: str
    location: Location
    kind: AcceleratorKind
    model: str
    hbm_bytes: int
    link_count: int
    active_link_count: int
    bandwidth_bytes_per_second: int
    chiplet: Chiplet
    state: ComponentState
    partition_id: int
    def __init__(self, index: _Optional[int] = ..., uid: _Optional[int] = ..., name: _Optional[str] = ..., location: _Optional[_Union[Location, _Mapping]] = ..., kind: _Optional[_Union[AcceleratorKind, str]] = ..., model: _Optional[str] = ..., hbm_bytes: _Optional[int] = ..., link_count: _Optional[int] = ..., active_link_count: _Optional[int] = ..., bandwidth_bytes_per_second: _Optional[int] = ..., chiplet: _Optional[_Union[Chiplet, _Mapping]] = ..., state: _Optional[_Union[ComponentState, str]] = ..., partition_id: _Optional[int] = ...) -> None: ...

class SwitchPort(_message.Message):
    __slots__ = ("index", "link")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LINK_FIELD_NUMBER: _ClassVar[int]
    index: int
    link: LinkRef
    def __init__(self, index: _Optional[int] = ..., link: _Optional[_Union[LinkRef, _Mapping]] = ...) -> None: ...

class SwitchChip(_message.Message):
    __slots__ = ("index", "name", "tray", "index_in_tray", "port_count", "state", "ports")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TRAY_FIELD_NUMBER: _ClassVar[int]
    INDEX_IN_TRAY_FIELD_NUMBER: _ClassVar[int]
    PORT_COUNT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    tray: str
    index_in_tray: int
    port_count: int
    state: ComponentState
    ports: _containers.RepeatedCompositeFieldContainer[SwitchPort]
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., tray: _Optional[str] = ..., index_in_tray: _Optional[int] = ..., port_count: _Optional[int] = ..., state: _Optional[_Union[ComponentState, str]] = ..., ports: _Optional[_Iterable[_Union[SwitchPort, _Mapping]]] = ...) -> None: ...

class TrayInfo(_message.Message):
    __slots__ = ("name", "kind", "slot", "rack", "state", "admin_state", "accelerators", "switch_chips", "address", "metrics_address", "config_generation", "reachable")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    RACK_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ADMIN_STATE_FIELD_NUMBER: _ClassVar[int]
    ACCELERATORS_FIELD_NUMBER: _ClassVar[int]
    SWITCH_CHIPS_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    METRICS_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_GENERATION_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: TrayKind
    slot: int
    rack: str
    state: ComponentState
    admin_state: AdminState
    accelerators: _containers.RepeatedCompositeFieldContainer[Accelerator]
    switch_chips: _containers.RepeatedCompositeFieldContainer[SwitchChip]
    address: str
    metrics_address: str
    config_generation: int
    reachable: bool
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[TrayKind, str]] = ..., slot: _Optional[int] = ..., rack: _Optional[str] = ..., state: _Optional[_Union[ComponentState, str]] = ..., admin_state: _Optional[_Union[AdminState, str]] = ..., accelerators: _Optional[_Iterable[_Union[Accelerator, _Mapping]]] = ..., switch_chips: _Optional[_Iterable[_Union[SwitchChip, _Mapping]]] = ..., address: _Optional[str] = ..., metrics_address: _Optional[str] = ..., config_generation: _Optional[int] = ..., reachable: _Optional[bool] = ...) -> None: ...

class LinkCounters(_message.Message):
    __slots__ = ("tx_bytes", "rx_bytes", "crc_flit_errors", "crc_data_errors", "replay_errors", "recovery_errors", "ecc_errors", "link_down_count")
    TX_BYTES_FIELD_NUMBER: _ClassVar[int]
    RX_BYTES_FIELD_NUMBER: _ClassVar[int]
    CRC_FLIT_ERRORS_FIELD_NUMBER: _ClassVar[int]
    CRC_DATA_ERRORS_FIELD_NUMBER: _ClassVar[int]
    REPLAY_ERRORS_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_ERRORS_FIELD_NUMBER: _ClassVar[int]
    ECC_ERRORS_FIELD_NUMBER: _ClassVar[int]
    LINK_DOWN_COUNT_FIELD_NUMBER: _ClassVar[int]
    tx_bytes: int
    rx_bytes: int
    crc_flit_errors: int
    crc_data_errors: int
    replay_errors: int
    recovery_errors: int
    ecc_errors: int
    link_down_count: int
    def __init__(self, tx_bytes: _Optional[int] = ..., rx_bytes: _Optional[int] = ..., crc_flit_errors: _Optional[int] = ..., crc_data_errors: _Optional[int] = ..., replay_errors: _Optional[int] = ..., recovery_errors: _Optional[int] = ..., ecc_errors: _Optional[int] = ..., link_down_count: _Optional[int] = ...) -> None: ...

class Link(_message.Message):
    __slots__ = ("ref", "name", "index", "compute_tray", "switch_tray", "switch_chip", "switch_port", "capacity_bytes_per_second", "state", "admin_state", "bit_error_rate", "counters", "state_change_time")
    REF_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_TRAY_FIELD_NUMBER: _ClassVar[int]
    SWITCH_TRAY_FIELD_NUMBER: _ClassVar[int]
    SWITCH_CHIP_FIELD_NUMBER: _ClassVar[int]
    SWITCH_PORT_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ADMIN_STATE_FIELD_NUMBER: _ClassVar[int]
    BIT_ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    ref: LinkRef
    name: str
    index: int
    compute_tray: str
    switch_tray: str
    switch_chip: int
    switch_port: int
    capacity_bytes_per_second: int
    state: LinkState
    admin_state: AdminState
    bit_error_rate: float
    counters: LinkCounters
    state_change_time: _timestamp_pb2.Timestamp
    def __init__(self, ref: _Optional[_Union[LinkRef, _Mapping]] = ..., name: _Optional[str] = ..., index: _Optional[int] = ..., compute_tray: _Optional[str] = ..., switch_tray: _Optional[str] = ..., switch_chip: _Optional[int] = ..., switch_port: _Optional[int] = ..., capacity_bytes_per_second: _Optional[int] = ..., state: _Optional[_Union[LinkState, str]] = ..., admin_state: _Optional[_Union[AdminState, str]] = ..., bit_error_rate: _Optional[float] = ..., counters: _Optional[_Union[LinkCounters, _Mapping]] = ..., state_change_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class LinkStatus(_message.Message):
    __slots__ = ("link", "state", "admin_state", "bit_error_rate", "link_down_total")
    LINK_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ADMIN_STATE_FIELD_NUMBER: _ClassVar[int]
    BIT_ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    LINK_DOWN_TOTAL_FIELD_NUMBER: _ClassVar[int]
    link: LinkRef
    state: LinkState
    admin_state: AdminState
    bit_error_rate: float
    link_down_total: int
    def __init__(self, link: _Optional[_Union[LinkRef, _Mapping]] = ..., state: _Optional[_Union[LinkState, str]] = ..., admin_state: _Optional[_Union[AdminState, str]] = ..., bit_error_rate: _Optional[float] = ..., link_down_total: _Optional[int] = ...) -> None: ...

class ComponentStatus(_message.Message):
    __slots__ = ("component", "name", "state")
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    component: ComponentRef
    name: str
    state: ComponentState
    def __init__(self, component: _Optional[_Union[ComponentRef, _Mapping]] = ..., name: _Optional[str] = ..., state: _Optional[_Union[ComponentState, str]] = ...) -> None: ...

class FaultSpec(_message.Message):
    __slots__ = ("kind", "target", "bit_error_rate", "flap_period", "flap_count")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    BIT_ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    FLAP_PERIOD_FIELD_NUMBER: _ClassVar[int]
    FLAP_COUNT_FIELD_NUMBER: _ClassVar[int]
    kind: FaultKind
    target: ComponentRef
    bit_error_rate: float
    flap_period: _duration_pb2.Duration
    flap_count: int
    def __init__(self, kind: _Optional[_Union[FaultKind, str]] = ..., target: _Optional[_Union[ComponentRef, _Mapping]] = ..., bit_error_rate: _Optional[float] = ..., flap_period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., flap_count: _Optional[int] = ...) -> None: ...

class Fault(_message.Message):
    __slots__ = ("id", "spec", "target_name", "tray", "inject_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    TARGET_NAME_FIELD_NUMBER: _ClassVar[int]
    TRAY_FIELD_NUMBER: _ClassVar[int]
    INJECT_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    spec: FaultSpec
    target_name: str
    tray: str
    inject_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., spec: _Optional[_Union[FaultSpec, _Mapping]] = ..., target_name: _Optional[str] = ..., tray: _Optional[str] = ..., inject_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class LocationList(_message.Message):
    __slots__ = ("locations",)
    LOCATIONS_FIELD_NUMBER: _ClassVar[int]
    locations: _containers.RepeatedCompositeFieldContainer[Location]
    def __init__(self, locations: _Optional[_Iterable[_Union[Location, _Mapping]]] = ...) -> None: ...

class UidList(_message.Message):
    __slots__ = ("uids",)
    UIDS_FIELD_NUMBER: _ClassVar[int]
    uids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, uids: _Optional[_Iterable[int]] = ...) -> None: ...

class PartitionMember(_message.Message):
    __slots__ = ("accelerator", "uid", "location", "name")
    ACCELERATOR_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    accelerator: int
    uid: int
    location: Location
    name: str
    def __init__(self, accelerator: _Optional[int] = ..., uid: _Optional[int] = ..., location: _Optional[_Union[Location, _Mapping]] = ..., name: _Optional[str] = ...) -> None: ...

class Partition(_message.Message):
    __slots__ = ("id", "name", "member_type", "members", "resiliency_mode", "health", "health_reason", "parked", "unreachable", "multicast_group_limit", "multicast_group_count", "create_time", "update_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMBER_TYPE_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    RESILIENCY_MODE_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    HEALTH_REASON_FIELD_NUMBER: _ClassVar[int]
    PARKED_FIELD_NUMBER: _ClassVar[int]
    UNREACHABLE_FIELD_NUMBER: _ClassVar[int]
    MULTICAST_GROUP_LIMIT_FIELD_NUMBER: _ClassVar[int]
    MULTICAST_GROUP_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    member_type: PartitionMemberType
    members: _containers.RepeatedCompositeFieldContainer[PartitionMember]
    resiliency_mode: ResiliencyMode
    health: PartitionHealth
    health_reason: str
    parked: _containers.RepeatedScalarFieldContainer[int]
    unreachable: _containers.RepeatedScalarFieldContainer[int]
    multicast_group_limit: int
    multicast_group_count: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., member_type: _Optional[_Union[PartitionMemberType, str]] = ..., members: _Optional[_Iterable[_Union[PartitionMember, _Mapping]]] = ..., resiliency_mode: _Optional[_Union[ResiliencyMode, str]] = ..., health: _Optional[_Union[PartitionHealth, str]] = ..., health_reason: _Optional[str] = ..., parked: _Optional[_Iterable[int]] = ..., unreachable: _Optional[_Iterable[int]] = ..., multicast_group_limit: _Optional[int] = ..., multicast_group_count: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class MulticastMember(_message.Message):
    __slots__ = ("accelerator", "offset")
    ACCELERATOR_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    accelerator: int
    offset: int
    def __init__(self, accelerator: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class MulticastGroup(_message.Message):
    __slots__ = ("id", "partition_id", "size_bytes", "address", "members", "create_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    PARTITION_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: int
    partition_id: int
    size_bytes: int
    address: int
    members: _containers.RepeatedCompositeFieldContainer[MulticastMember]
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[int] = ..., partition_id: _Optional[int] = ..., size_bytes: _Optional[int] = ..., address: _Optional[int] = ..., members: _Optional[_Iterable[_Union[MulticastMember, _Mapping]]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListLinksRequest(_message.Message):
    __slots__ = ("compute_tray", "switch_tray", "accelerator", "plane", "state")
    COMPUTE_TRAY_FIELD_NUMBER: _ClassVar[int]
    SWITCH_TRAY_FIELD_NUMBER: _ClassVar[int]
    ACCELERATOR_FIELD_NUMBER: _ClassVar[int]
    PLANE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    compute_tray: str
    switch_tray: str
    accelerator: int
    plane: int
    state: LinkState
    def __init__(self, compute_tray: _Optional[str] = ..., switch_tray: _Optional[str] = ..., accelerator: _Optional[int] = ..., plane: _Optional[int] = ..., state: _Optional[_Union[LinkState, str]] = ...) -> None: ...

class ListLinksResponse(_message.Message):
    __slots__ = ("links",)
    LINKS_FIELD_NUMBER: _ClassVar[int]
    links: _containers.RepeatedCompositeFieldContainer[Link]
    def __init__(self, links: _Optional[_Iterable[_Union[Link, _Mapping]]] = ...) -> None: ...

class InjectFaultRequest(_message.Message):
    __slots__ = ("fault", "idempotency_key")
    FAULT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    fault: FaultSpec
    idempotency_key: str
    def __init__(self, fault: _Optional[_Union[FaultSpec, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class InjectFaultResponse(_message.Message):
    __slots__ = ("fault",)
    FAULT_FIELD_NUMBER: _ClassVar[int]
    fault: Fault
    def __init__(self, fault: _Optional[_Union[Fault, _Mapping]] = ...) -> None: ...

class ClearFaultRequest(_message.Message):
    __slots__ = ("fault_id", "all", "idempotency_key")
    FAULT_ID_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    fault_id: str
    all: bool
    idempotency_key: str
    def __init__(self, fault_id: _Optional[str] = ..., all: _Optional[bool] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class ClearFaultResponse(_message.Message):
    __slots__ = ("faults",)
    FAULTS_FIELD_NUMBER: _ClassVar[int]
    faults: _containers.RepeatedCompositeFieldContainer[Fault]
    def __init__(self, faults: _Optional[_Iterable[_Union[Fault, _Mapping]]] = ...) -> None: ...

class SetAdminStateRequest(_message.Message):
    __slots__ = ("target", "admin_state", "reason", "idempotency_key")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    ADMIN_STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    target: ComponentRef
    admin_state: AdminState
    reason: str
    idempotency_key: str
    def __init__(self, target: _Optional[_Union[ComponentRef, _Mapping]] = ..., admin_state: _Optional[_Union[AdminState, str]] = ..., reason: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class SetAdminStateResponse(_message.Message):
    __slots__ = ("links",)
    LINKS_FIELD_NUMBER: _ClassVar[int]
    links: _containers.RepeatedCompositeFieldContainer[LinkRef]
    def __init__(self, links: _Optional[_Iterable[_Union[LinkRef, _Mapping]]] = ...) -> None: ...
