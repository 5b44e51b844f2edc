"""How people name things on the `fusionctl` command line, parsed into v1 messages.

Each function is an argparse `type`: a malformed value, or one that cannot be right (a negative
offset, a partition id out of 1..32766, a load above 1), is a usage error (exit 2) that shows
the accepted forms, before any request is made. Enum values are typed and printed by their
short lower-case names, one spelling per enum everywhere (help, errors, tables): `admin_down`
for LINK_STATE_ADMIN_DOWN, `link_down` for FAULT_KIND_LINK_DOWN, but `all-reduce` for
TRAFFIC_PATTERN_ALL_REDUCE, as collectives are written; either separator is accepted.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from fusionrack.cli import integer, manifest_name
from fusionrack.emulator.addressing import MAX_TARGET, OFFSET_MASK
from fusionrack.emulator.errors import ManifestError
from fusionrack.emulator.manifest import parse_size
from fusionrack.emulator.memory import MAX_ACCESS_BYTES
from fusionrack.emulator.partitions import (
    DEFAULT_PARTITION_ID,
    MAX_NAME_LENGTH,
    MAX_PARTITION_ID,
)
from fusionrack.v1 import common_pb2, controller_pb2, memory_pb2

from .output import Word

__all__ = [
    "ACCELERATOR_KIND",
    "ATOMIC_OP",
    "DATA_TYPE",
    "DEFAULT_PARTITION_ID",
    "EVENT_KIND",
    "FAULT_KIND",
    "GROUP_ID",
    "LINK_STATE",
    "MAX_DURATION",
    "MEMBER_TYPE",
    "PARTITION_ID",
    "RESILIENCY",
    "TRAFFIC_PATTERN",
    "TRAY_KIND",
    "UINT32",
    "accelerator_ref",
    "accelerator_text",
    "access_size",
    "choices",
    "data_bytes",
    "enum_arg",
    "enum_word",
    "hex_bytes",
    "location",
    "locations",
    "manifest_name",
    "member_spec",
    "offset",
    "partition_filter",
    "partition_name",
    "partition_ref",
    "quantity",
    "scalar",
    "seconds",
    "size",
    "uid",
    "uids",
]

UINT32 = integer(0, (1 << 32) - 1)
PARTITION_ID = integer(1, MAX_PARTITION_ID, "a user partition's id")
GROUP_ID = integer(1, MAX_TARGET, "a multicast group id")
# How enum values are written: their short name, lower-case, words joined by `_`; the enums
# listed here join them by `-` (traffic patterns are collectives: all-reduce, all-to-all).
_HYPHENATED = frozenset({controller_pb2.TrafficPattern.DESCRIPTOR.full_name})


def _prefix(enum: EnumTypeWrapper) -> str:
    return enum.keys()[0].removesuffix("UNSPECIFIED")


def _separator(enum: EnumTypeWrapper) -> str:
    return "-" if enum.DESCRIPTOR.full_name in _HYPHENATED else "_"


def enum_word(enum: EnumTypeWrapper, value: int) -> Word:
    """`LINK_STATE_ADMIN_DOWN` -> `admin_down` (`TRAFFIC_PATTERN_ALL_REDUCE` -> `all-reduce`):
    how people read (and type) enum values."""
    try:
        name = enum.Name(value)
    except ValueError:
        return Word(str(value))
    return Word(name.removeprefix(_prefix(enum)).lower().replace("_", _separator(enum)))


def enum_arg(enum: EnumTypeWrapper, aliases: dict[str, str] | None = None) -> Callable[[str], int]:
    """An argparse type: an enum value by its word (`enum_word`) in any case, with `-` or `_`
    (`admin-down`), or its full proto name; `aliases` maps extra words to words."""
    prefix = _prefix(enum).lower()
    values = {enum_word(enum, v): v for v in enum.values() if v}
    for alias, word in (aliases or {}).items():
        values[alias] = values[word]
    separator = _separator(enum)

    def parse(text: str) -> int:
        key = text.strip().lower().replace("-", "_").removeprefix(prefix)
        key = key.replace("_", separator)
        if key not in values:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(values)}")
        return values[key]

    parse.choices = list(values)  # type: ignore[attr-defined]
    parse.enum = enum  # type: ignore[attr-defined]
    return parse


def choices(parse: Callable[[str], int]) -> str:
    return ", ".join(parse.choices)  # type: ignore[attr-defined]


_DIGITS = re.compile(r"[0-9]+")
_POSITION = re.compile(r"(?:[0-9]+|[a-z]+([0-9]+))")


def location(text: str) -> common_pb2.Location:
    """`TRAY/INDEX` (`compute-01/0`), `TRAY/NAME` (`compute-01/gpu0`) or `RACK/TRAY/INDEX`."""
    parts = text.strip().split("/")
    match = _POSITION.fullmatch(parts[-1]) if len(parts) in (2, 3) and all(parts) else None
    if match is None or int(match.group(1) or parts[-1]) > MAX_TARGET:
        raise argparse.ArgumentTypeError(
            f"location {text!r}: give TRAY/INDEX (e.g. compute-01/0), TRAY/NAME "
            "(compute-01/gpu0) or RACK/TRAY/INDEX"
        )
    index = int(match.group(1) or parts[-1])
    rack = parts[0] if len(parts) == 3 else ""
    return common_pb2.Location(rack=rack, tray=parts[-2], index=index)


def _split(text: str) -> list[str]:
    return [item for item in re.split(r"[,\s]+", text) if item]


def locations(text: str) -> list[common_pb2.Location]:
    """A comma-separated list of locations."""
    return [location(item) for item in _split(text)]


def uid(text: str) -> int:
    """A 64-bit UID, hexadecimal (`0x...`) or decimal."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"UID {text!r}: give 0x... or a decimal number") from None
    if not 0 < value < 1 << 64:
        raise argparse.ArgumentTypeError(f"UID {text!r} is not a non-zero 64-bit number")
    return value


def uids(text: str) -> list[int]:
    return [uid(item) for item in _split(text)]


def accelerator_ref(text: str) -> common_pb2.AcceleratorRef:
    """An accelerator as people name it: a domain index (`5`), a UID (`0x...`), a name
    (`compute-01/gpu0`), `TRAY/INDEX` or `RACK/TRAY/INDEX`."""
    text = text.strip()
    if _DIGITS.fullmatch(text):
        index = int(text)
        if index > MAX_TARGET:
            raise argparse.ArgumentTypeError(
                f"accelerator {text!r}: a domain index is 0..{MAX_TARGET}"
            )
        return common_pb2.AcceleratorRef(index=index)
    if text.lower().startswith("0x"):
        return common_pb2.AcceleratorRef(uid=uid(text))
    if text.count("/") == 2:
        return common_pb2.AcceleratorRef(location=location(text))
    if text.count("/") == 1 and all(text.split("/")):
        return common_pb2.AcceleratorRef(name=text)
    raise argparse.ArgumentTypeError(
        f"accelerator {text!r}: give an index (5), a UID (0x...), a name (compute-01/gpu0) or "
        "TRAY/INDEX (compute-01/0)"
    )


def accelerator_text(ref: common_pb2.AcceleratorRef) -> str:
    """How `ref` is written on the command line (for messages)."""
    case = ref.WhichOneof("accelerator")
    if case == "uid":
        return f"{ref.uid:#x}"
    if case == "location":
        where = ref.location
        return "/".join([*([where.rack] if where.rack else []), where.tray, str(where.index)])
    return str(getattr(ref, case or "index"))


def member_spec(text: str) -> controller_pb2.MulticastMemberSpec:
    """`ACCELERATOR[@OFFSET]`: a multicast member and where its region is bound."""
    name, _, at = text.partition("@")
    return controller_pb2.MulticastMemberSpec(
        accelerator=accelerator_ref(name), offset=offset(at) if at else 0
    )


def quantity(text: str, low: int = 0, high: int = (1 << 64) - 1, rule: str = "") -> int:
    """A byte count or offset: `4096`, `0x1000`, `64KiB`, `2MiB`, from `low` to `high` (`rule`
    says so in the message)."""
    try:
        value = int(text, 0)
    except ValueError:
        magnitude = text.strip()
        sign = -1 if magnitude.startswith("-") else 1
        try:
            value = sign * parse_size(magnitude.removeprefix("-"))
        except ManifestError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: give a number (4096, 0x1000) or a size (64KiB, 2MiB)"
            ) from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(
            f"{text!r}: {rule or f'give a number of bytes from {low} to {high}'}"
        )
    return value


def size(text: str) -> int:
    """A size in bytes, at least 1 (a multicast region: 2MiB)."""
    return quantity(text, 1, rule="a size is at least 1 byte")


def access_size(text: str) -> int:
    """The bytes of one load: 1 .. 4 MiB."""
    return quantity(text, 1, MAX_ACCESS_BYTES, rule="one load reads 1 B .. 4 MiB")


def offset(text: str) -> int:
    """A byte offset into an accelerator's memory (the 48 bits of a fabric address)."""
    return quantity(text, 0, OFFSET_MASK, rule=f"an offset is 0 .. {OFFSET_MASK:#x} (48 bits)")


def data_bytes(text: str) -> bytes:
    """`--data`: text, stored as UTF-8, 1 B .. 4 MiB."""
    return _access(text.encode(), text)


def _access(data: bytes, text: str) -> bytes:
    if not 1 <= len(data) <= MAX_ACCESS_BYTES:
        raise argparse.ArgumentTypeError(
            f"{text[:20]!r}{'...' if len(text) > 20 else ''}: {len(data)} bytes; a store writes "
            "1 B .. 4 MiB"
        )
    return data


_WORDS_32 = (common_pb2.DATA_TYPE_I32, common_pb2.DATA_TYPE_U32, common_pb2.DATA_TYPE_F32)


def scalar(data_type: int, text: str, option: str) -> memory_pb2.Scalar:
    """The `option` value `text` (`--operand`, `--compare`) as a value of `data_type`: a usage
    error when it is not one (a negative u64, a fraction of an i32, an i32 beyond 31 bits)."""
    word = enum_word(common_pb2.DataType, data_type)
    bits = 32 if data_type in _WORDS_32 else 64
    try:
        if data_type in (common_pb2.DATA_TYPE_F32, common_pb2.DATA_TYPE_F64):
            return memory_pb2.Scalar(float_value=float(text))
        value = int(text, 0)
    except ValueError:
        value = None
    signed = data_type in (common_pb2.DATA_TYPE_I32, common_pb2.DATA_TYPE_I64)
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if value is None or not low <= value <= high:
        raise argparse.ArgumentTypeError(
            f"argument {option}: {text!r} is not a {word} value ({low}..{high}; decimal or 0x...)"
        )
    return memory_pb2.Scalar(int_value=value) if signed else memory_pb2.Scalar(uint_value=value)


_DURATION = re.compile(r"^\s*([-+]?\d+(?:\.\d*)?|[-+]?\.\d+)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


MAX_DURATION = 315_576_000_000  # seconds: the most a google.protobuf.Duration holds


def seconds(text: str) -> float:
    """A duration, more than 0: `60s`, `1.5m`, `2h`, `500ms`, or plain seconds (`90`)."""
    match = _DURATION.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"duration {text!r}: give a number with a unit (500ms, 60s, 1.5m, 2h) or seconds"
        )
    value = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    if not 0 < value <= MAX_DURATION:
        raise argparse.ArgumentTypeError(f"duration {text!r}: give a time longer than 0 s")
    return value


def partition_ref(text: str) -> common_pb2.PartitionRef:
    """A partition by id (digits: 1..32766, 32766 the default partition) or by name."""
    if _DIGITS.fullmatch(text):
        found = int(text)
        if not 1 <= found <= DEFAULT_PARTITION_ID:
            raise argparse.ArgumentTypeError(
                f"partition {text!r}: an id is 1..{DEFAULT_PARTITION_ID} "
                f"({DEFAULT_PARTITION_ID} the default partition)"
            )
        return common_pb2.PartitionRef(id=found)
    return common_pb2.PartitionRef(name=partition_name(text))


def partition_name(text: str) -> str:
    """A partition's name: 1..255 printable ASCII characters."""
    if not 1 <= len(text) <= MAX_NAME_LENGTH or not (text.isascii() and text.isprintable()):
        raise argparse.ArgumentTypeError(
            f"partition name {text[:40]!r}: give 1..{MAX_NAME_LENGTH} printable ASCII characters"
        )
    return text


def partition_filter(text: str) -> int:
    """An accelerator list's partition filter: an id, `default` or `none`."""
    named = {"default": DEFAULT_PARTITION_ID, "none": 0}
    if text.lower() in named:
        return named[text.lower()]
    if _DIGITS.fullmatch(text) and 1 <= int(text) <= DEFAULT_PARTITION_ID:
        return int(text)
    raise argparse.ArgumentTypeError(
        f"partition {text!r}: give an id (1..{DEFAULT_PARTITION_ID}), 'default' or 'none'"
    )


def hex_bytes(text: str) -> bytes:
    """`--hex`: bytes in hexadecimal (`0x` first or not), 1 B .. 4 MiB."""
    try:
        data = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not hexadecimal bytes") from None
    return _access(data, text)


LINK_STATE = enum_arg(common_pb2.LinkState)
TRAY_KIND = enum_arg(common_pb2.TrayKind)
ACCELERATOR_KIND = enum_arg(common_pb2.AcceleratorKind)
RESILIENCY = enum_arg(common_pb2.ResiliencyMode)
MEMBER_TYPE = enum_arg(common_pb2.PartitionMemberType)
FAULT_KIND = enum_arg(common_pb2.FaultKind)
EVENT_KIND = enum_arg(common_pb2.EventKind)
ATOMIC_OP = enum_arg(
    common_pb2.AtomicOp,
    {"cas": "compare_swap", "inc": "increment", "dec": "decrement", "xchg": "exchange"},
)
DATA_TYPE = enum_arg(common_pb2.DataType)
TRAFFIC_PATTERN = enum_arg(controller_pb2.TrafficPattern)
