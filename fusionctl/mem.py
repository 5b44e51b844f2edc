"""`fusionctl mem load|store|atomic`: memory ops as one accelerator, sent to its compute
tray's agent (the only commands that talk to an agent rather than the controller: the data
plane does not pass through the controller). The controller's ListTrays says where the agent is.
"""

from __future__ import annotations

import argparse

from fusionrack.emulator.addressing import fabric_address
from fusionrack.v1 import common_pb2, memory_pb2

from .arguments import (
    ATOMIC_OP,
    DATA_TYPE,
    accelerator_ref,
    choices,
    enum_word,
    hex_bytes,
    quantity,
)
from .client import Refused, Session
from .commands import Commands, resolve_accelerator
from .views import hexdump

__all__ = ["register"]


async def _memory_target(s: Session) -> tuple[common_pb2.TrayInfo, int, int, str]:
    """(initiator's tray, initiator index, fabric address, how to say where) of a mem command."""
    a = s.args
    tray, initiator = await resolve_accelerator(s, accelerator_ref(a.initiator), a.initiator)
    if a.address is not None:
        return tray, initiator.index, a.address, f"{a.address:#018x}"
    _, target = await resolve_accelerator(s, accelerator_ref(a.target), a.target)
    where = f"{target.name} + {a.offset:#x}"
    return tray, initiator.index, fabric_address(target.index, a.offset), where


async def _load(s: Session) -> int:
    tray, initiator, address, _ = await _memory_target(s)
    request = memory_pb2.LoadRequest(initiator=initiator, address=address, size=s.args.size)
    response = await s.call("Load", request, agent=tray)
    return s.show(response, lambda r: hexdump(address, r.data))


async def _store(s: Session) -> int:
    tray, initiator, address, where = await _memory_target(s)
    data = s.args.hex if s.args.hex is not None else s.args.data.encode()
    request = memory_pb2.StoreRequest(initiator=initiator, address=address, data=data)
    response = await s.call("Store", request, agent=tray)
    return s.show(
        response, lambda _: f"stored {len(data)} bytes at {where} (as accelerator {initiator})"
    )


def _scalar(data_type: int, text: str | None) -> memory_pb2.Scalar | None:
    if text is None:
        return None
    try:
        if data_type in (common_pb2.DATA_TYPE_F32, common_pb2.DATA_TYPE_F64):
            return memory_pb2.Scalar(float_value=float(text))
        if data_type in (common_pb2.DATA_TYPE_I32, common_pb2.DATA_TYPE_I64):
            return memory_pb2.Scalar(int_value=int(text, 0))
        return memory_pb2.Scalar(uint_value=int(text, 0))
    except ValueError:
        raise Refused(
            f"{text!r} is not a {enum_word(common_pb2.DataType, data_type)} value"
        ) from None


async def _atomic(s: Session) -> int:
    a = s.args
    tray, initiator, address, where = await _memory_target(s)
    request = memory_pb2.AtomicRequest(
        initiator=initiator,
        address=address,
        op=a.op,
        data_type=a.type,
        operand=_scalar(a.type, a.operand),
        compare=_scalar(a.type, a.compare),
    )
    response = await s.call("Atomic", request, agent=tray)

    def human(r: memory_pb2.AtomicResponse) -> str:
        case = r.old_value.WhichOneof("value")
        old = getattr(r.old_value, case) if case else 0
        return (
            f"{enum_word(common_pb2.AtomicOp, a.op)} {enum_word(common_pb2.DataType, a.type)} "
            f"at {where}: old value {old}"
        )

    return s.show(response, human)


def _target_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--initiator",
        required=True,
        metavar="ACCELERATOR",
        help="the accelerator that issues the op (index, UID, name or TRAY/INDEX); the op is "
        "sent to its compute tray's agent",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--target", metavar="ACCELERATOR", help="the accelerator whose memory is accessed"
    )
    where.add_argument(
        "--address",
        type=lambda t: int(t, 0),
        metavar="ADDR",
        help="a raw 64-bit fabric address instead of --target/--offset",
    )
    parser.add_argument(
        "--offset",
        type=quantity,
        default=0,
        metavar="BYTES",
        help="byte offset in the target's memory (default 0; 0x1000, 4KiB)",
    )


def register(commands: Commands) -> None:
    """Add `mem` to `fusionctl`."""
    add, group = commands.add, commands.group

    verbs = group("mem", "load, store and atomics as an accelerator (through its tray's agent)")
    p = add(verbs, "load", _load, "read bytes of an accelerator's memory")
    _target_options(p)
    p.add_argument(
        "--size",
        type=quantity,
        required=True,
        metavar="BYTES",
        help="how many bytes (1 B .. 4 MiB)",
    )
    p = add(verbs, "store", _store, "write bytes into an accelerator's memory")
    _target_options(p)
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", help="the bytes, as text (UTF-8)")
    data.add_argument("--hex", type=hex_bytes, help="the bytes, in hexadecimal")
    p = add(verbs, "atomic", _atomic, "an atomic read-modify-write; prints the old value")
    _target_options(p)
    p.add_argument("--op", type=ATOMIC_OP, required=True, help=f"the op ({choices(ATOMIC_OP)})")
    p.add_argument(
        "--type",
        type=DATA_TYPE,
        default=common_pb2.DATA_TYPE_U64,
        help=f"element type ({choices(DATA_TYPE)}; default u64)",
    )
    p.add_argument("--operand", help="the operand (integers: decimal or 0x...)")
    p.add_argument("--compare", help="compare_swap: the expected old value")
