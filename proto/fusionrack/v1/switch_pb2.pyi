import datetime

from fusionrack.v1 import common_pb2 as _common_pb2
from fusionrack.v1 import memory_pb2 as _memory_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConfigPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONFIG_PHASE_UNSPECIFIED: _ClassVar[ConfigPhase]
    CONFIG_PHASE_PREPARE: _ClassVar[ConfigPhase]
    CONFIG_PHASE_COMMIT: _ClassVar[ConfigPhase]
    CONFIG_PHASE_ABORT: _ClassVar[ConfigPhase]
CONFIG_PHASE_UNSPECIFIED: ConfigPhase
CONFIG_PHASE_PREPARE: ConfigPhase
CONFIG_PHASE_COMMIT: ConfigPhase
CONFIG_PHASE_ABORT: ConfigPhase

class PartitionTableEntry(_message.Message):
    __slots__ = ("id", "accelerators")
    ID_FIELD_NUMBER: _ClassVar[int]
    ACCELERATORS_FIELD_NUMBER: _ClassVar[int]
    id: int
    accelerators: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, id: _Optional[int] = ..., accelerators: _Optional[_Iterable[int]] = ...) -> None: ...

class SwitchConfig(_message.Message):
    __slots__ = ("partitions", "multicast_groups")
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    MULTICAST_GROUPS_FIELD_NUMBER: _ClassVar[int]
    partitions: _containers.RepeatedCompositeFieldContainer[PartitionTableEntry]
    multicast_groups: _containers.RepeatedCompositeFieldContainer[_common_pb2.MulticastGroup]
    def __init__(self, partitions: _Optional[_Iterable[_Union[PartitionTableEntry, _Mapping]]] = ..., multicast_groups: _Optional[_Iterable[_Union[_common_pb2.MulticastGroup, _Mapping]]] = ...) -> None: ...

class ApplyConfigRequest(_message.Message):
    __slots__ = ("phase", "generation", "config", "prepare_timeout", "controller_epoch")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    PREPARE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    phase: ConfigPhase
    generation: int
    config: SwitchConfig
    prepare_timeout: _duration_pb2.Duration
    controller_epoch: int
    def __init__(self, phase: _Optional[_Union[ConfigPhase, str]] = ..., generation: _Optional[int] = ..., config: _Optional[_Union[SwitchConfig, _Mapping]] = ..., prepare_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., controller_epoch: _Optional[int] = ...) -> None: ...

class ApplyConfigResponse(_message.Message):
    __slots__ = ("committed_generation", "prepared_generation", "controller_epoch")
    COMMITTED_GENERATION_FIELD_NUMBER: _ClassVar[int]
    PREPARED_GENERATION_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    committed_generation: int
    prepared_generation: int
    controller_epoch: int
    def __init__(self, committed_generation: _Optional[int] = ..., prepared_generation: _Optional[int] = ..., controller_epoch: _Optional[int] = ...) -> None: ...

class GetConfigRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetConfigResponse(_message.Message):
    __slots__ = ("committed_generation", "config", "prepared_generation", "controller_epoch")
    COMMITTED_GENERATION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    PREPARED_GENERATION_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    committed_generation: int
    config: SwitchConfig
    prepared_generation: int
    controller_epoch: int
    def __init__(self, committed_generation: _Optional[int] = ..., config: _Optional[_Union[SwitchConfig, _Mapping]] = ..., prepared_generation: _Optional[int] = ..., controller_epoch: _Optional[int] = ...) -> None: ...

class GetForwardEndpointRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetForwardEndpointResponse(_message.Message):
    __slots__ = ("address",)
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    address: str
    def __init__(self, address: _Optional[str] = ...) -> None: ...

class ForwardFrame(_message.Message):
    __slots__ = ("hello", "request", "response", "link_state", "refused", "heartbeat")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    LINK_STATE_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    hello: ForwardHello
    request: ForwardRequest
    response: ForwardResponse
    link_state: LinkStateUpdate
    refused: _memory_pb2.OpStatus
    heartbeat: Heartbeat
    def __init__(self, hello: _Optional[_Union[ForwardHello, _Mapping]] = ..., request: _Optional[_Union[ForwardRequest, _Mapping]] = ..., response: _Optional[_Union[ForwardResponse, _Mapping]] = ..., link_state: _Optional[_Union[LinkStateUpdate, _Mapping]] = ..., refused: _Optional[_Union[_memory_pb2.OpStatus, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ForwardHello(_message.Message):
    __slots__ = ("tray", "boot_id", "manifest_digest", "heartbeat_interval_ms", "rack_secret")
    TRAY_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_DIGEST_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    RACK_SECRET_FIELD_NUMBER: _ClassVar[int]
    tray: str
    boot_id: str
    manifest_digest: str
    heartbeat_interval_ms: int
    rack_secret: bytes
    def __init__(self, tray: _Optional[str] = ..., boot_id: _Optional[str] = ..., manifest_digest: _Optional[str] = ..., heartbeat_interval_ms: _Optional[int] = ..., rack_secret: _Optional[bytes] = ...) -> None: ...

class OpBatch(_message.Message):
    __slots__ = ("ops",)
    OPS_FIELD_NUMBER: _ClassVar[int]
    ops: _containers.RepeatedCompositeFieldContainer[_memory_pb2.MemoryOp]
    def __init__(self, ops: _Optional[_Iterable[_Union[_memory_pb2.MemoryOp, _Mapping]]] = ...) -> None: ...

class OpBatchResult(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_memory_pb2.OpResult]
    def __init__(self, results: _Optional[_Iterable[_Union[_memory_pb2.OpResult, _Mapping]]] = ...) -> None: ...

class ForwardRequest(_message.Message):
    __slots__ = ("request_id", "initiator", "target", "plane", "op", "batch", "packed_ops", "packed_planes", "sequence", "epoch")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INITIATOR_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    PLANE_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    PACKED_OPS_FIELD_NUMBER: _ClassVar[int]
    PACKED_PLANES_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    initiator: int
    target: int
    plane: int
    op: _memory_pb2.MemoryOp
    batch: OpBatch
    packed_ops: bytes
    packed_planes: bytes
    sequence: int
    epoch: int
    def __init__(self, request_id: _Optional[int] = ..., initiator: _Optional[int] = ..., target: _Optional[int] = ..., plane: _Optional[int] = ..., op: _Optional[_Union[_memory_pb2.MemoryOp, _Mapping]] = ..., batch: _Optional[_Union[OpBatch, _Mapping]] = ..., packed_ops: _Optional[bytes] = ..., packed_planes: _Optional[bytes] = ..., sequence: _Optional[int] = ..., epoch: _Optional[int] = ...) -> None: ...

class ForwardResponse(_message.Message):
    __slots__ = ("request_id", "status", "result", "batch", "packed_results")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    PACKED_RESULTS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    status: _memory_pb2.OpStatus
    result: _memory_pb2.OpResult
    batch: OpBatchResult
    packed_results: bytes
    def __init__(self, request_id: _Optional[int] = ..., status: _Optional[_Union[_memory_pb2.OpStatus, _Mapping]] = ..., result: _Optional[_Union[_memory_pb2.OpResult, _Mapping]] = ..., batch: _Optional[_Union[OpBatchResult, _Mapping]] = ..., packed_results: _Optional[bytes] = ...) -> None: ...

class LinkStateUpdate(_message.Message):
    __slots__ = ("links",)
    LINKS_FIELD_NUMBER: _ClassVar[int]
    links: _containers.RepeatedCompositeFieldContainer[_common_pb2.LinkStatus]
    def __init__(self, links: _Optional[_Iterable[_Union[_common_pb2.LinkStatus, _Mapping]]] = ...) -> None: ...
