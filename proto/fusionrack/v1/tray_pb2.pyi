import datetime

from fusionrack.v1 import common_pb2 as _common_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetInventoryRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetInventoryResponse(_message.Message):
    __slots__ = ("tray", "links", "rack", "manifest_digest", "boot_id", "start_time", "agent_version")
    TRAY_FIELD_NUMBER: _ClassVar[int]
    LINKS_FIELD_NUMBER: _ClassVar[int]
    RACK_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_DIGEST_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    tray: _common_pb2.TrayInfo
    links: _containers.RepeatedCompositeFieldContainer[_common_pb2.Link]
    rack: str
    manifest_digest: str
    boot_id: str
    start_time: _timestamp_pb2.Timestamp
    agent_version: str
    def __init__(self, tray: _Optional[_Union[_common_pb2.TrayInfo, _Mapping]] = ..., links: _Optional[_Iterable[_Union[_common_pb2.Link, _Mapping]]] = ..., rack: _Optional[str] = ..., manifest_digest: _Optional[str] = ..., boot_id: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., agent_version: _Optional[str] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: TrayStatus
    def __init__(self, status: _Optional[_Union[TrayStatus, _Mapping]] = ...) -> None: ...

class WatchStatusRequest(_message.Message):
    __slots__ = ("heartbeat_interval",)
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    heartbeat_interval: _duration_pb2.Duration
    def __init__(self, heartbeat_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class WatchStatusResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: TrayStatus
    def __init__(self, status: _Optional[_Union[TrayStatus, _Mapping]] = ...) -> None: ...

class TrayStatus(_message.Message):
    __slots__ = ("tray", "kind", "state", "admin_state", "config_generation", "boot_id", "time", "sequence", "link_count", "active_link_count", "links", "components", "faults", "traffic_generation")
    TRAY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ADMIN_STATE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_GENERATION_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LINK_COUNT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_LINK_COUNT_FIELD_NUMBER: _ClassVar[int]
    LINKS_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    FAULTS_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_GENERATION_FIELD_NUMBER: _ClassVar[int]
    tray: str
    kind: _common_pb2.TrayKind
    state: _common_pb2.ComponentState
    admin_state: _common_pb2.AdminState
    config_generation: int
    boot_id: str
    time: _timestamp_pb2.Timestamp
    sequence: int
    link_count: int
    active_link_count: int
    links: _containers.RepeatedCompositeFieldContainer[_common_pb2.LinkStatus]
    components: _containers.RepeatedCompositeFieldContainer[_common_pb2.ComponentStatus]
    faults: _containers.RepeatedCompositeFieldContainer[_common_pb2.Fault]
    traffic_generation: int
    def __init__(self, tray: _Optional[str] = ..., kind: _Optional[_Union[_common_pb2.TrayKind, str]] = ..., state: _Optional[_Union[_common_pb2.ComponentState, str]] = ..., admin_state: _Optional[_Union[_common_pb2.AdminState, str]] = ..., config_generation: _Optional[int] = ..., boot_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sequence: _Optional[int] = ..., link_count: _Optional[int] = ..., active_link_count: _Optional[int] = ..., links: _Optional[_Iterable[_Union[_common_pb2.LinkStatus, _Mapping]]] = ..., components: _Optional[_Iterable[_Union[_common_pb2.ComponentStatus, _Mapping]]] = ..., faults: _Optional[_Iterable[_Union[_common_pb2.Fault, _Mapping]]] = ..., traffic_generation: _Optional[int] = ...) -> None: ...

class LinkTraffic(_message.Message):
    __slots__ = ("link", "up_bytes_per_second", "down_bytes_per_second")
    LINK_FIELD_NUMBER: _ClassVar[int]
    UP_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    DOWN_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    link: _common_pb2.LinkRef
    up_bytes_per_second: float
    down_bytes_per_second: float
    def __init__(self, link: _Optional[_Union[_common_pb2.LinkRef, _Mapping]] = ..., up_bytes_per_second: _Optional[float] = ..., down_bytes_per_second: _Optional[float] = ...) -> None: ...

class SetTrafficRequest(_message.Message):
    __slots__ = ("generation", "links")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    LINKS_FIELD_NUMBER: _ClassVar[int]
    generation: int
    links: _containers.RepeatedCompositeFieldContainer[LinkTraffic]
    def __init__(self, generation: _Optional[int] = ..., links: _Optional[_Iterable[_Union[LinkTraffic, _Mapping]]] = ...) -> None: ...

class SetTrafficResponse(_message.Message):
    __slots__ = ("generation", "link_count")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    LINK_COUNT_FIELD_NUMBER: _ClassVar[int]
    generation: int
    link_count: int
    def __init__(self, generation: _Optional[int] = ..., link_count: _Optional[int] = ...) -> None: ...
