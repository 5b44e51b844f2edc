from fusionrack.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Scalar(_message.Message):
    __slots__ = ("uint_value", "int_value", "float_value")
    UINT_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    FLOAT_VALUE_FIELD_NUMBER: _ClassVar[int]
    uint_value: int
    int_value: int
    float_value: float
    def __init__(self, uint_value: _Optional[int] = ..., int_value: _Optional[int] = ..., float_value: _Optional[float] = ...) -> None: ...

class OpStatus(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class LoadOp(_message.Message):
    __slots__ = ("address", "size")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    address: int
    size: int
    def __init__(self, address: _Optional[int] = ..., size: _Optional[int] = ...) -> None: ...

class StoreOp(_message.Message):
    __slots__ = ("address", "data")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    address: int
    data: bytes
    def __init__(self, address: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class AtomicRmwOp(_message.Message):
    __slots__ = ("address", "op", "data_type", "operand", "compare")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    DATA_TYPE_FIELD_NUMBER: _ClassVar[int]
    OPERAND_FIELD_NUMBER: _ClassVar[int]
    COMPARE_FIELD_NUMBER: _ClassVar[int]
    address: int
    op: _common_pb2.AtomicOp
    data_type: _common_pb2.DataType
    operand: Scalar
    compare: Scalar
    def __init__(self, address: _Optional[int] = ..., op: _Optional[_Union[_common_pb2.AtomicOp, str]] = ..., data_type: _Optional[_Union[_common_pb2.DataType, str]] = ..., operand: _Optional[_Union[Scalar, _Mapping]] = ..., compare: _Optional[_Union[Scalar, _Mapping]] = ...) -> None: ...

class CopyOp(_message.Message):
    __slots__ = ("source", "destination", "size")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    source: int
    destination: int
    size: int
    def __init__(self, source: _Optional[int] = ..., destination: _Optional[int] = ..., size: _Optional[int] = ...) -> None: ...

class LoadReduceOp(_message.Message):
    __slots__ = ("address", "op", "data_type", "size")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    DATA_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    address: int
    op: _common_pb2.AtomicOp
    data_type: _common_pb2.DataType
    size: int
    def __init__(self, address: _Optional[int] = ..., op: _Optional[_Union[_common_pb2.AtomicOp, str]] = ..., data_type: _Optional[_Union[_common_pb2.DataType, str]] = ..., size: _Optional[int] = ...) -> None: ...

class ReduceOp(_message.Message):
    __slots__ = ("address", "op", "data_type", "data")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    DATA_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    address: int
    op: _common_pb2.AtomicOp
    data_type: _common_pb2.DataType
    data: bytes
    def __init__(self, address: _Optional[int] = ..., op: _Optional[_Union[_common_pb2.AtomicOp, str]] = ..., data_type: _Optional[_Union[_common_pb2.DataType, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class MemoryOp(_message.Message):
    __slots__ = ("load", "store", "atomic", "copy", "load_reduce", "reduce")
    LOAD_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    ATOMIC_FIELD_NUMBER: _ClassVar[int]
    COPY_FIELD_NUMBER: _ClassVar[int]
    LOAD_REDUCE_FIELD_NUMBER: _ClassVar[int]
    REDUCE_FIELD_NUMBER: _ClassVar[int]
    load: LoadOp
    store: StoreOp
    atomic: AtomicRmwOp
    copy: CopyOp
    load_reduce: LoadReduceOp
    reduce: ReduceOp
    def __init__(self, load: _Optional[_Union[LoadOp, _Mapping]] = ..., store: _Optional[_Union[StoreOp, _Mapping]] = ..., atomic: _Optional[_Union[AtomicRmwOp, _Mapping]] = ..., copy: _Optional[_Union[CopyOp, _Mapping]] = ..., load_reduce: _Optional[_Union[LoadReduceOp, _Mapping]] = ..., reduce: _Optional[_Union[ReduceOp, _Mapping]] = ...) -> None: ...

class OpResult(_message.Message):
    __slots__ = ("status", "data", "old_value", "member_count")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    OLD_VALUE_FIELD_NUMBER: _ClassVar[int]
    MEMBER_COUNT_FIELD_NUMBER: _ClassVar[int]
    status: OpStatus
    data: bytes
    old_value: Scalar
    member_count: int
    def __init__(self, status: _Optional[_Union[OpStatus, _Mapping]] = ..., data: _Optional[bytes] = ..., old_value: _Optional[_Union[Scalar, _Mapping]] = ..., member_count: _Optional[int] = ...) -> None: ...

class LoadRequest(_message.Message):
    __slots__ = ("initiator", "address", "size")
    INITIATOR_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    initiator: int
    address: int
    size: int
    def __init__(self, initiator: _Optional[int] = ..., address: _Optional[int] = ..., size: _Optional[int] = ...) -> None: ...

class LoadResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class StoreRequest(_message.Message):
    __slots__ = ("initiator", "address", "data")
    INITIATOR_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    initiator: int
    address: int
    data: bytes
    def __init__(self, initiator: _Optional[int] = ..., address: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class StoreResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AtomicRequest(_message.Message):
    __slots__ = ("initiator", "address", "op", "data_type", "operand", "compare")
    INITIATOR_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    DATA_TYPE_FIELD_NUMBER: _ClassVar[int]
    OPERAND_FIELD_NUMBER: _ClassVar[int]
    COMPARE_FIELD_NUMBER: _ClassVar[int]
    initiator: int
    address: int
    op: _common_pb2.AtomicOp
    data_type: _common_pb2.DataType
    operand: Scalar
    compare: Scalar
    def __init__(self, initiator: _Optional[int] = ..., address: _Optional[int] = ..., op: _Optional[_Union[_common_pb2.AtomicOp, str]] = ..., data_type: _Optional[_Union[_common_pb2.DataType, str]] = ..., operand: _Optional[_Union[Scalar, _Mapping]] = ..., compare: _Optional[_Union[Scalar, _Mapping]] = ...) -> None: ...

class AtomicResponse(_message.Message):
    __slots__ = ("old_value",)
    OLD_VALUE_FIELD_NUMBER: _ClassVar[int]
    old_value: Scalar
    def __init__(self, old_value: _Optional[_Union[Scalar, _Mapping]] = ...) -> None: ...

class CopyRequest(_message.Message):
    __slots__ = ("initiator", "source", "destination", "size")
    INITIATOR_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    initiator: int
    source: int
    destination: int
    size: int
    def __init__(self, initiator: _Optional[int] = ..., source: _Optional[int] = ..., destination: _Optional[int] = ..., size: _Optional[int] = ...) -> None: ...

class CopyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExecuteRequest(_message.Message):
    __slots__ = ("initiator", "ops")
    INITIATOR_FIELD_NUMBER: _ClassVar[int]
    OPS_FIELD_NUMBER: _ClassVar[int]
    initiator: int
    ops: _containers.RepeatedCompositeFieldContainer[MemoryOp]
    def __init__(self, initiator: _Optional[int] = ..., ops: _Optional[_Iterable[_Union[MemoryOp, _Mapping]]] = ...) -> None: ...

class ExecuteResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[OpResult]
    def __init__(self, results: _Optional[_Iterable[_Union[OpResult, _Mapping]]] = ...) -> None: ...

class ExecutePackedRequest(_message.Message):
    __slots__ = ("initiator", "format_version", "ops")
    INITIATOR_FIELD_NUMBER: _ClassVar[int]
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    OPS_FIELD_NUMBER: _ClassVar[int]
    initiator: int
    format_version: int
    ops: bytes
    def __init__(self, initiator: _Optional[int] = ..., format_version: _Optional[int] = ..., ops: _Optional[bytes] = ...) -> None: ...

class ExecutePackedResponse(_message.Message):
    __slots__ = ("format_version", "results")
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    format_version: int
    results: bytes
    def __init__(self, format_version: _Optional[int] = ..., results: _Optional[bytes] = ...) -> None: ...

class StreamRequest(_message.Message):
    __slots__ = ("request_id", "initiator", "op")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INITIATOR_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    initiator: int
    op: MemoryOp
    def __init__(self, request_id: _Optional[int] = ..., initiator: _Optional[int] = ..., op: _Optional[_Union[MemoryOp, _Mapping]] = ...) -> None: ...

class StreamResponse(_message.Message):
    __slots__ = ("request_id", "result")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    result: OpResult
    def __init__(self, request_id: _Optional[int] = ..., result: _Optional[_Union[OpResult, _Mapping]] = ...) -> None: ...

class MulticastStoreRequest(_message.Message):
    __slots__ = ("initiator", "address", "data")
    INITIATOR_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    initiator: int
    address: int
    data: bytes
    def __init__(self, initiator: _Optional[int] = ..., address: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class MulticastStoreResponse(_message.Message):
    __slots__ = ("member_count",)
    MEMBER_COUNT_FIELD_NUMBER: _ClassVar[int]
    member_count: int
    def __init__(self, member_count: _Optional[int] = ...) -> None: ...

class MulticastLoadReduceRequest(_message.Message):
    __slots__ = ("initiator", "address", "op", "data_type", "size")
    INITIATOR_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    DATA_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    initiator: int
    address: int
    op: _common_pb2.AtomicOp
    data_type: _common_pb2.DataType
    size: int
    def __init__(self, initiator: _Optional[int] = ..., address: _Optional[int] = ..., op: _Optional[_Union[_common_pb2.AtomicOp, str]] = ..., data_type: _Optional[_Union[_common_pb2.DataType, str]] = ..., size: _Optional[int] = ...) -> None: ...

class MulticastLoadReduceResponse(_message.Message):
    __slots__ = ("data", "member_count")
    DATA_FIELD_NUMBER: _ClassVar[int]
    MEMBER_COUNT_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    member_count: int
    def __init__(self, data: _Optional[bytes] = ..., member_count: _Optional[int] = ...) -> None: ...

class MulticastReduceRequest(_message.Message):
    __slots__ = ("initiator", "address", "op", "data_type", "data")
    INITIATOR_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    DATA_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    initiator: int
    address: int
    op: _common_pb2.AtomicOp
    data_type: _common_pb2.DataType
    data: bytes
    def __init__(self, initiator: _Optional[int] = ..., address: _Optional[int] = ..., op: _Optional[_Union[_common_pb2.AtomicOp, str]] = ..., data_type: _Optional[_Union[_common_pb2.DataType, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class MulticastReduceResponse(_message.Message):
    __slots__ = ("member_count",)
    MEMBER_COUNT_FIELD_NUMBER: _ClassVar[int]
    member_count: int
    def __init__(self, member_count: _Optional[int] = ...) -> None: ...
