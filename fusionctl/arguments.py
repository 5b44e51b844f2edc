"""How people name things on the `fusionctl` command line, parsed into v1 messages.

Each function is an argparse `type`: a malformed value is a usage error (exit 2) that shows
the accepted forms. Enum values are typed and printed by their short lower-case names
(`admin_down` for LINK_STATE_ADMIN_DOWN).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from fusionrack.emulator.errors import ManifestError
from fusionrack.emulator.manifest import parse_size
from fusionrack.v1 import common_pb2, controller_pb2

from .output import Word

__all__ = [
    "ACCELERATOR_KIND",
    "ATOMIC_OP",
    "DATA_TYPE",
    "DEFAULT_PARTITION_ID",
    "EVENT_KIND",
    "FAULT_KIND",
    "LINK_STATE",
    "MEMBER_TYPE",
    "RESILIENCY",
    "TRAFFIC_PATTERN",
    "TRAY_KIND",
    "accelerator_ref",
    "choices",
    "enum_arg",
    "enum_word",
    "hex_bytes",
    "location",
    "locations",
    "member_spec",
    "partition_filter",
    "partition_ref",
    "quantity",
    "seconds",
    "uid",
    "uids",
]

DEFAULT_PARTITION_ID = 32766


def _prefix(enum: EnumTypeWrapper) -> str:
    return enum.keys()[0].removesuffix("UNSPECIFIED")


def enum_word(enum: EnumTypeWrapper, value: int) -> Word:
    """`LINK_STATE_ADMIN_DOWN` -> `admin_down`: how people read (and type) enum values."""
    try:
        name = enum.Name(value)
    except ValueError:
        return Word(str(value))
    return Word(name.removeprefix(_prefix(enum)).lower())


def enum_arg(enum: EnumTypeWrapper, aliases: dict[str, str] | None = None) -> Callable[[str], int]:
    """An argparse type: an enum value by its short name in any case, `-` or `_`
    (`admin-down`), or its full proto name; `aliases` maps extra words to short names."""
    prefix = _prefix(enum)
    values = {k.removeprefix(prefix).lower(): v for k, v in enum.items() if v}
    for alias, name in (aliases or {}).items():
        values[alias] = values[name]

    def parse(text: str) -> int:
        key = text.strip().lower().replace("-", "_").removeprefix(prefix.lower())
        if key not in values:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(values)}")
        return values[key]

    parse.choices = list(values)  # type: ignore[attr-defined]
    return parse


def choices(parse: Callable[[str], int]) -> str:
    return ", ".join(parse.choices)  # type: ignore[attr-defined]


_POSITION = re.compile(r"^(?:\d+|[a-z]+(\d+))$")


def location(text: str) -> common_pb2.Location:
    """`TRAY/INDEX` (`compute-01/0`), `TRAY/NAME` (`compute-01/gpu0`) or `RACK/TRAY/INDEX`."""
    parts = text.strip().split("/")
    match = _POSITION.match(parts[-1]) if len(parts) in (2, 3) and all(parts) else None
    if match is None:
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
    if text.isdigit():
        return common_pb2.AcceleratorRef(index=int(text))
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


def member_spec(text: str) -> controller_pb2.MulticastMemberSpec:
    """`ACCELERATOR[@OFFSET]`: a multicast member and where its region is bound."""
    name, _, offset = text.partition("@")
    return controller_pb2.MulticastMemberSpec(
        accelerator=accelerator_ref(name), offset=quantity(offset) if offset else 0
    )


def quantity(text: str) -> int:
    """A byte count or offset: `4096`, `0x1000`, `64KiB`, `2MiB`."""
    try:
        return int(text, 0)
    except ValueError:
        pass
    try:
        return parse_size(text)
    except ManifestError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a number (4096, 0x1000) or a size (64KiB, 2MiB)"
        ) from None


_DURATION = re.compile(r"^\s*([-+]?\d+(?:\.\d*)?|[-+]?\.\d+)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def seconds(text: str) -> float:
    """A duration: `60s`, `1.5m`, `2h`, `500ms`, or plain seconds (`90`). Its sign is the
    server's to judge (a duration must be positive: exit 1 naming it)."""
    match = _DURATION.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"duration {text!r}: give a number with a unit (500ms, 60s, 1.5m, 2h) or seconds"
        )
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]


def partition_ref(text: str) -> common_pb2.PartitionRef:
    """A partition by id (digits) or by name (anything else)."""
    if text.isdigit():
        return common_pb2.PartitionRef(id=int(text))
    return common_pb2.PartitionRef(name=text)


def partition_filter(text: str) -> int:
    """An accelerator list's partition filter: an id, `default` or `none`."""
    named = {"default": DEFAULT_PARTITION_ID, "none": 0}
    if text.lower() in named:
        return named[text.lower()]
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"partition {text!r}: give an id, 'default' or 'none'")


def hex_bytes(text: str) -> bytes:
    try:
        return bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not hexadecimal bytes") from None


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
