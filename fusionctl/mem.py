"""`fusionctl mem load|store|atomic`: memory ops as one accelerator, sent to its compute
tray's agent (the only commands that talk to an agent rather than the controller: the data
plane does not pass through the controller). The controller's ListTrays says where the agent is.
"""

from __future__ import annotations

import argparse

from fusionrack.cli import ArgumentParser, integer
from fusionrack.emulator.addressing import fabric_address
from fusionrack.v1 import common_pb2, memory_pb2

from .arguments import (
    ATOMIC_OP,
    DATA_TYPE,
    accelerator_ref,
    access_size,
    choices,
    data_bytes,
    enum_word,
    hex_bytes,
    offset,
    scalar,
)
from .client import Session
from .commands import Commands, resolve_accelerator
from .views import hexdump

__all__ = ["register"]


async def _memory_target(s: Session) -> tuple[common_pb2.TrayInfo, int, int, str]:
    """(initiator's tray, initiator index, fabric address, how to say where) of a mem command."""
    a = s.args
    tray, initiator = await resolve_accelerator(s, a.initiator)
    if a.address is not None:
        return tray, initiator.index, a.address, f"{a.address:#018x}"
    _, target = await resolve_accelerator(s, a.target)
    where = f"{target.name} + {a.offset:#x}"
    return tray, initiator.index, fabric_address(target.index, a.offset), where


async def _load(s: Session) -> int:
    tray, initiator, address, _ = await _memory_target(s)
    request = memory_pb2.LoadRequest(initiator=initiator, address=address, size=s.args.size)
    response = await s.call("Load", request, agent=tray)
    return s.show(response, lambda r: hexdump(address, r.data))


async def _store(s: Session) -> int:
    tray, initiator, address, where = await _memory_target(s)
    data = s.args.hex if s.args.hex is not None else s.args.data
    request = memory_pb2.StoreRequest(initiator=initiator, address=address, data=data)
    response = await s.call("Store", request, agent=tray)
    return s.show(
        response, lambda _: f"stored {len(data)} bytes at {where} (as accelerator {initiator})"
    )


async def _atomic(s: Session) -> int:
    a = s.args
    tray, initiator, address, where = await _memory_target(s)
    request = memory_pb2.AtomicRequest(
        initiator=initiator,
        address=address,
        op=a.op,
        data_type=a.type,
        operand=a.operand,
        compare=a.compare,
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


def _atomic_values(args: argparse.Namespace) -> None:
    """--operand and --compare as values of --type: --compare with compare_swap only, and
    always with it (a missing one would compare against 0)."""
    cas = args.op == common_pb2.ATOMIC_OP_COMPARE_SWAP
    if cas and args.compare is None:
        raise argparse.ArgumentTypeError(
            "--op compare_swap needs --compare (the expected old value); --operand is the "
            "value written"
        )
    if not cas and args.compare is not None:
        op = enum_word(common_pb2.AtomicOp, args.op)
        raise argparse.ArgumentTypeError(f"--compare goes with --op compare_swap, not {op}")
    if args.operand is None:
        raise argparse.ArgumentTypeError(
            "--operand is required (the value to apply; the wrap limit for increment and decrement)"
        )
    args.operand = scalar(args.type, args.operand, "--operand")
    if cas:
        args.compare = scalar(args.type, args.compare, "--compare")


def _offset_with_target(args: argparse.Namespace) -> None:
    if args.address is not None and args.offset is not None:
        raise argparse.ArgumentTypeError(
            "--offset goes with --target (--address already holds the offset)"
        )
    if args.offset is None:
        args.offset = 0


def _target_options(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--initiator",
        type=accelerator_ref,
        required=True,
        metavar="ACCELERATOR",
        help="the accelerator that issues the op (index, UID, name or TRAY/INDEX); the op is "
        "sent to its compute tray's agent",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--target",
        type=accelerator_ref,
        metavar="ACCELERATOR",
        help="the accelerator whose memory is accessed",
    )
    where.add_argument(
        "--address",
        type=integer(0, (1 << 64) - 1, "a 64-bit fabric address"),
        metavar="ADDR",
        help="a raw 64-bit fabric address instead of --target/--offset",
    )
    parser.add_argument(
        "--offset",
        type=offset,
        metavar="BYTES",
        help="with --target: byte offset in its memory (default 0; 0x1000, 4KiB)",
    )
    parser.add_check(_offset_with_target)


_ME = "--initiator compute-01/gpu0 --target compute-02/gpu0"  # of the examples


def register(commands: Commands) -> None:
    """Add `mem` to `fusionctl`."""
    add, group = commands.add, commands.group

    verbs = group("mem", "load, store and atomics as an accelerator (through its tray's agent)")
    p = add(
        verbs,
        "load",
        _load,
        "read bytes of an accelerator's memory",
        [
            f"fusionctl mem load {_ME} --offset 4KiB --size 16",
            "fusionctl mem load --initiator 0 --address 0x0004000000001000 --size 16",
        ],
    )
    _target_options(p)
    p.add_argument(
        "--size",
        type=access_size,
        required=True,
        metavar="BYTES",
        help="how many bytes (1 B .. 4 MiB)",
    )
    p = add(
        verbs,
        "store",
        _store,
        "write bytes into an accelerator's memory",
        [
            f"fusionctl mem store {_ME} --offset 4KiB --data hello",
            f"fusionctl mem store {_ME} --offset 4KiB --hex 68656c6c6f",
        ],
    )
    _target_options(p)
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", type=data_bytes, help="the bytes, as text (UTF-8)")
    data.add_argument("--hex", type=hex_bytes, help="the bytes, in hexadecimal")
    p = add(
        verbs,
        "atomic",
        _atomic,
        "an atomic read-modify-write; prints the old value",
        [
            f"fusionctl mem atomic {_ME} --offset 8KiB --op add --operand 5",
            f"fusionctl mem atomic {_ME} --offset 8KiB --op cas --compare 5 --operand 9",
            f"fusionctl mem atomic {_ME} --offset 16KiB --op add --type f64 --operand 0.5",
        ],
    )
    _target_options(p)
    p.add_argument("--op", type=ATOMIC_OP, required=True, help=f"the op ({choices(ATOMIC_OP)})")
    p.add_argument(
        "--type",
        type=DATA_TYPE,
        default=common_pb2.DATA_TYPE_U64,
        help=f"element type ({choices(DATA_TYPE)}; default u64)",
    )
    p.add_argument(
        "--operand",
        help="the operand, a value of --type (integers: decimal or 0x...); for compare_swap the "
        "value written, for increment/decrement the wrap limit",
    )
    p.add_argument("--compare", help="with --op compare_swap (required): the expected old value")
    p.add_check(_atomic_values)
