"""What the fuzzer sends: a hypothesis strategy for any request message of the contract (and
of health checking and reflection), built field by field from its descriptor
(`request_strategy`), and the per-op statuses inside an answer (`op_statuses`, reflection's
in-band errors too). Used by `fuzzer.Fuzzer`.

Integers are drawn at the edges of each field's wire type, enums with unknown numbers,
repeated fields huge, strings with unicode and NUL, bytes at random, and packed-format records
valid, nearly valid and random. Fields whose name says what they hold (an address, an
initiator, a tray) also draw values of the rack under test (`Facts`), so that cases get past
the first check.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf import descriptor as pbd
from google.protobuf import message_factory
from hypothesis import strategies as st

from fusionrack.emulator import (
    AtomicOp,
    DataType,
    fabric_address,
    multicast_address,
    packed,
)

__all__ = ["Facts", "op_statuses", "packed_ops_strategy", "request_strategy"]

# 5 compute trays of 2 GPUs, 3 switch trays of 2 chips, no default partition (the harness
# makes its own, leaving accelerators 8 and 9 out).

# ---------------------------------------------------------------------------------------------
# Strategies from descriptors.
# ---------------------------------------------------------------------------------------------

_INT_RANGES = {
    pbd.FieldDescriptor.TYPE_INT32: (-(1 << 31), (1 << 31) - 1),
    pbd.FieldDescriptor.TYPE_SINT32: (-(1 << 31), (1 << 31) - 1),
    pbd.FieldDescriptor.TYPE_SFIXED32: (-(1 << 31), (1 << 31) - 1),
    pbd.FieldDescriptor.TYPE_INT64: (-(1 << 63), (1 << 63) - 1),
    pbd.FieldDescriptor.TYPE_SINT64: (-(1 << 63), (1 << 63) - 1),
    pbd.FieldDescriptor.TYPE_SFIXED64: (-(1 << 63), (1 << 63) - 1),
    pbd.FieldDescriptor.TYPE_UINT32: (0, (1 << 32) - 1),
    pbd.FieldDescriptor.TYPE_FIXED32: (0, (1 << 32) - 1),
    pbd.FieldDescriptor.TYPE_UINT64: (0, (1 << 64) - 1),
    pbd.FieldDescriptor.TYPE_FIXED64: (0, (1 << 64) - 1),
    pbd.FieldDescriptor.TYPE_ENUM: (-(1 << 31), (1 << 31) - 1),
}
_EDGES = (0, 1, -1, 2, 7, 8, 255, 256, 4095, 4096, 65535, 65536, 32766, 32767, 1 << 22,
          (1 << 22) + 1, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32, 1 << 48, 1 << 53,
          (1 << 62), (1 << 63) - 1, 1 << 63, (1 << 64) - 1, -(1 << 31), -(1 << 63))  # fmt: skip
MAX_DEPTH = 4


@dataclass
class Facts:
    """What the strategies know of the rack under test, so that cases reach past the first
    check: its accelerators, trays, uids, digest, partition and group ids."""

    accelerators: int = 10
    trays: tuple[str, ...] = ()
    uids: tuple[int, ...] = ()
    digest: str = ""
    hbm_bytes: int = 1 << 30
    ids: tuple[int, ...] = (1, 2, 32766)
    avoid: int = -1  # accelerator no fuzzed op may name as initiator on a forged stream
    services: tuple[str, ...] = ()  # full names of the services the servers offer
    files: tuple[str, ...] = ()  # their proto files ("fusionrack/v1/memory.proto", ...)

    def addresses(self) -> st.SearchStrategy[int]:
        """Addresses the rack has (any accelerator, offsets near both ends of its HBM and
        misaligned ones), multicast ones, and any 64-bit number."""
        offsets = st.one_of(
            st.sampled_from([0, 1, 3, 4, 8, 4096, self.hbm_bytes - 8, self.hbm_bytes - 1,
                             self.hbm_bytes, self.hbm_bytes + 8, (1 << 48) - 1]),
            st.integers(0, self.hbm_bytes - 1),
        )  # fmt: skip
        targets = st.integers(0, self.accelerators + 2)
        return st.one_of(
            st.builds(fabric_address, targets, offsets),
            st.builds(multicast_address, st.integers(0, 20), offsets),
            st.integers(0, (1 << 64) - 1),
            st.sampled_from([1 << 62, (1 << 63) | (1 << 62), (1 << 64) - 1]),
        )


def _hinted_int(name: str, low: int, high: int, facts: Facts) -> st.SearchStrategy[int] | None:
    """Values of the rack for an integer field whose name says what it holds."""
    small = st.integers(0, facts.accelerators + 2)
    if name in {"address", "source", "destination"}:
        return facts.addresses()
    if name in {"initiator", "target", "accelerator", "accelerators", "index", "plane",
                "chiplet", "switch_chip", "port", "link", "accelerator_index"}:  # fmt: skip
        return small
    if name in {"size", "size_bytes", "offset"}:
        return st.sampled_from([0, 1, 2, 4, 8, 64, 4096, 65536, 1 << 22, (1 << 22) + 1])
    if name in {"id", "partition_id", "group_id", "generation", "count", "sequence", "epoch",
                "request_id", "format_version"}:  # fmt: skip
        return st.one_of(st.sampled_from(facts.ids), st.integers(0, 40))
    if name in {"uid", "uids"} and facts.uids:
        return st.sampled_from(facts.uids)
    return None


# String fields of health checking and reflection that name a service, a symbol or a file.
_SYMBOL_FIELDS = {"service", "file_containing_symbol", "containing_type",
                  "all_extension_numbers_of_type"}  # fmt: skip


def _hinted_str(name: str, facts: Facts) -> st.SearchStrategy[str] | None:
    if name == "manifest_digest" and facts.digest:
        return st.just(facts.digest)
    if name in _SYMBOL_FIELDS and facts.services:
        symbols = [*facts.services, *(f"{s}.{m}" for s in facts.services for m in ("Get", "X"))]
        return st.sampled_from([*symbols, "", "fusionrack.v1", "google.protobuf.Empty"])
    if name == "file_by_filename" and facts.files:
        return st.sampled_from([*facts.files, "", "google/protobuf/timestamp.proto"])
    if facts.trays and name in {"tray", "name", "fault_id", "partition", "idempotency_key"}:
        return st.sampled_from([*facts.trays, *_component_names(facts.trays[0]), "fuzz", ""])
    return None


def _component_names(tray: str) -> list[str]:
    """Names of every kind of component on `tray`, some the rack has and some one past it: a
    fault's or drain's target is checked for its kind, then looked up in its kind's table."""
    return [f"{tray}/{part}" for part in ("gpu0", "gpu0/nvlink0", "gpu0/nvlink99", "chip0",
                                          "chiplet0", "gpu9")]  # fmt: skip


def _clip(values: Iterable[int], low: int, high: int) -> list[int]:
    return sorted({v for v in values if low <= v <= high})


def scalar_strategy(f: pbd.FieldDescriptor, facts: Facts) -> st.SearchStrategy[Any]:
    """One value of a non-message field."""
    t = f.type
    if t in _INT_RANGES:
        low, high = _INT_RANGES[t]
        branches = [st.sampled_from(_clip(_EDGES, low, high)), st.integers(low, high)]
        if t == pbd.FieldDescriptor.TYPE_ENUM:
            branches.insert(0, st.sampled_from([v.number for v in f.enum_type.values]))
        elif (hint := _hinted_int(f.name, low, high, facts)) is not None:
            branches.insert(0, hint.filter(lambda v: low <= v <= high))
        return st.one_of(branches)
    if t == pbd.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (pbd.FieldDescriptor.TYPE_DOUBLE, pbd.FieldDescriptor.TYPE_FLOAT):
        floats = st.floats(width=32 if t == pbd.FieldDescriptor.TYPE_FLOAT else 64)
        return st.one_of(st.sampled_from([0.0, -0.0, 1e-9, 0.5, 1.0, 2.0]), floats)
    if t == pbd.FieldDescriptor.TYPE_STRING:
        text = st.one_of(
            st.text(max_size=40),
            st.text(alphabet=st.characters(codec="utf-8"), max_size=300),
            st.sampled_from(["\x00", "a\x00b", "é漢🚀", " ", "../../etc", "x" * 300]),
            st.integers(256, 70000).map(lambda n: "n" * n),
        )
        hint = _hinted_str(f.name, facts)
        return st.one_of(hint, text) if hint is not None else text
    if t == pbd.FieldDescriptor.TYPE_BYTES:
        return bytes_strategy(f, facts)
    raise AssertionError(f"field {f.full_name}: type {t} not handled")


def bytes_strategy(f: pbd.FieldDescriptor, facts: Facts) -> st.SearchStrategy[bytes]:
    if f.name in {"ops", "packed_ops"}:
        return packed_ops_strategy(facts)
    if f.name == "packed_planes":
        return st.one_of(st.binary(max_size=40), st.integers(0, 40).map(lambda n: bytes(n)))
    return st.one_of(
        st.binary(max_size=64),
        st.sampled_from([1, 4, 8, 4096, 1 << 22, (1 << 22) + 1, 5 << 20]).flatmap(
            lambda n: st.integers(0, 255).map(lambda b: bytes([b]) * n)
        ),
    )


def _record(facts: Facts) -> st.SearchStrategy[np.ndarray]:
    """One valid packed record (LOAD, STORE or ATOMIC) on an address of the rack."""
    aligned = facts.addresses().map(lambda a: a & ~7)
    loads = st.builds(lambda a, s: packed.pack_loads([a - a % s], s),
                      aligned, st.sampled_from([1, 2, 4, 8]))  # fmt: skip
    stores = st.builds(lambda a, v: packed.pack_stores([a], [v]), aligned,
                       st.integers(0, (1 << 64) - 1))  # fmt: skip
    atomics = st.builds(
        lambda a, op, v: packed.pack_atomics([a], op, DataType.U64, [v]),
        aligned,
        st.sampled_from([AtomicOp.ADD, AtomicOp.OR, AtomicOp.EXCHANGE, AtomicOp.MAX]),
        st.integers(0, (1 << 64) - 1),
    )
    return st.one_of(loads, stores, atomics)


def _mutate(record: np.ndarray, byte: int, value: int) -> bytes:
    raw = bytearray(record.tobytes())
    raw[byte % len(raw)] = value
    return bytes(raw)


def packed_ops_strategy(facts: Facts) -> st.SearchStrategy[bytes]:
    """Packed records: valid, nearly valid (one byte changed), random, a length that is not a
    multiple of 32, and many."""
    valid = st.lists(_record(facts), min_size=1, max_size=8).map(
        lambda rs: b"".join(r.tobytes() for r in rs)
    )
    nearly = st.builds(_mutate, _record(facts), st.integers(0, 31), st.integers(0, 255))
    many = st.tuples(_record(facts), st.integers(1000, 70000)).map(lambda t: t[0].tobytes() * t[1])
    return st.one_of(
        valid,
        nearly,
        st.lists(nearly, max_size=8).map(b"".join),
        st.integers(0, 8).flatmap(lambda n: st.binary(min_size=32 * n, max_size=32 * n)),
        st.binary(max_size=100),
        many,
    )


HUGE_BYTES = 16 << 20  # a huge repeated field stays under the 64 MiB message limit


def _size(value: Any) -> int:
    if hasattr(value, "ByteSize"):
        return value.ByteSize() + 4
    return len(value) + 2 if isinstance(value, (str, bytes)) else 10


def _repeated(element: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    huge = st.tuples(element, st.sampled_from([1000, 10000, 100000])).map(
        lambda t: [t[0]] * max(1, min(t[1], HUGE_BYTES // _size(t[0])))
    )
    return st.one_of(st.lists(element, max_size=4), huge)


_STRATEGIES: dict[tuple[str, int], st.SearchStrategy[Any]] = {}


def request_strategy(desc: pbd.Descriptor, facts: Facts, depth: int = 0) -> st.SearchStrategy[Any]:
    """Any message of type `desc`: every field set or not, oneofs on one case or none."""
    key = (desc.full_name, depth)
    if key in _STRATEGIES:
        return _STRATEGIES[key]
    cls = message_factory.GetMessageClass(desc)
    if depth >= MAX_DEPTH:
        return st.just(cls())
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for f in desc.fields:
        if f.containing_oneof is not None and not f.containing_oneof.name.startswith("_"):
            continue
        fields[f.name] = _field_strategy(f, facts, depth)
    oneofs = []
    for oneof in desc.oneofs:
        if oneof.name.startswith("_"):  # proto3 `optional`: a field of its own
            continue
        cases = [st.tuples(st.just(f.name), _field_strategy(f, facts, depth)) for f in oneof.fields]
        oneofs.append(st.one_of(st.none(), *cases))

    def build(values: dict[str, Any], chosen: list[tuple[str, Any] | None]) -> Any:
        message = cls()
        for name, value in [*values.items(), *(c for c in chosen if c is not None)]:
            _set(message, desc.fields_by_name[name], value)
        return message

    strategy = st.builds(build, st.fixed_dictionaries({}, optional=fields),
                         st.tuples(*oneofs).map(list))  # fmt: skip
    _STRATEGIES[key] = strategy
    return strategy


def _field_strategy(f: pbd.FieldDescriptor, facts: Facts, depth: int) -> st.SearchStrategy[Any]:
    if f.message_type is not None and f.message_type.GetOptions().map_entry:
        key = scalar_strategy(f.message_type.fields_by_name["key"], facts)
        value_field = f.message_type.fields_by_name["value"]
        value = (
            request_strategy(value_field.message_type, facts, depth + 1)
            if value_field.message_type
            else scalar_strategy(value_field, facts)
        )
        return st.dictionaries(key, value, max_size=4)
    element = (
        st.deferred(lambda: request_strategy(f.message_type, facts, depth + 1))
        if f.message_type is not None
        else scalar_strategy(f, facts)
    )
    return _repeated(element) if _is_repeated(f) else element


def _is_repeated(f: pbd.FieldDescriptor) -> bool:
    return bool(f.is_repeated)


def _set(message: Any, f: pbd.FieldDescriptor, value: Any) -> None:
    if f.message_type is not None and f.message_type.GetOptions().map_entry:
        target = getattr(message, f.name)
        for k, v in value.items():
            if f.message_type.fields_by_name["value"].message_type:
                target[k].CopyFrom(v)
            else:
                target[k] = v
    elif _is_repeated(f):
        getattr(message, f.name).extend(value)
    elif f.message_type is not None:
        getattr(message, f.name).CopyFrom(value)
    else:
        setattr(message, f.name, value)


# ---------------------------------------------------------------------------------------------
# Methods.
# ---------------------------------------------------------------------------------------------


def op_statuses(message: Any) -> list[int]:
    """Every OpStatus code inside `message` (per-op results of batches and streams) and the
    statuses of packed result records."""
    codes = []
    if message.DESCRIPTOR.full_name == "fusionrack.v1.OpStatus":
        return [message.code]
    if message.DESCRIPTOR.full_name == "grpc.reflection.v1alpha.ErrorResponse":
        return [message.error_code]  # reflection answers errors inside the stream
    for f, value in message.ListFields():
        if f.name in {"results", "packed_results"} and f.type == pbd.FieldDescriptor.TYPE_BYTES:
            usable = len(value) - len(value) % packed.RESULT_RECORD_BYTES
            records = np.frombuffer(value[:usable], packed.PACKED_RESULT_DTYPE)
            codes.extend(int(c) for c in np.unique(records["status"]))
        elif f.message_type is not None and f.message_type.GetOptions().map_entry:
            if f.message_type.fields_by_name["value"].message_type is not None:
                for item in value.values():
                    codes.extend(op_statuses(item))
        elif f.message_type is not None:
            for item in value if _is_repeated(f) else [value]:
                codes.extend(op_statuses(item))
    return codes


# ---------------------------------------------------------------------------------------------
# The fuzzer.
# ---------------------------------------------------------------------------------------------
