"""`fusionctl fault list|inject|clear`, `drain`, `undrain`: breaking the rack on purpose, and
taking links or trays out of service (admin down) and back.
"""

from __future__ import annotations

import argparse
from typing import Any

from fusionrack.cli import number
from fusionrack.emulator import FaultKind, targets
from fusionrack.v1 import common_pb2, controller_pb2

from .arguments import FAULT_KIND, MAX_DURATION, UINT32, choices, enum_word
from .client import Session
from .commands import Commands, key_option
from .views import FAULT_HEADER, fault_rows

__all__ = ["register"]


class _Target(argparse.Action):
    """TARGET, checked while parsing against what the command takes: a name shaped as another
    kind of component is a usage error (exit 2) before any call, e.g. `fault inject link_down
    compute-01`. `drain` names the drain command; without it, the target is what the fault
    KIND (parsed just before) breaks. Whether the rack has it is the controller's to say."""

    def __init__(self, *args: Any, drain: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.drain = drain

    def __call__(
        self, parser: Any, namespace: argparse.Namespace, value: Any, option: Any = None
    ) -> None:
        if self.drain:
            who, kinds = self.drain, targets.DRAIN_TARGETS
        else:
            kind = FaultKind(namespace.kind)
            who = enum_word(common_pb2.FaultKind, kind)
            kinds = (targets.FAULT_TARGETS[kind],)
        why = targets.misnamed(who, kinds, value)
        if why is not None:
            raise argparse.ArgumentError(self, why)
        setattr(namespace, self.dest, value)


async def _list(s: Session) -> int:
    response = await s.call("ListFaults", controller_pb2.ListFaultsRequest(tray=s.args.tray or ""))
    return s.show(response, lambda r: s.table(fault_rows(r.faults), FAULT_HEADER))


async def _inject(s: Session) -> int:
    a = s.args
    spec = common_pb2.FaultSpec(
        kind=a.kind,
        target=common_pb2.ComponentRef(name=a.target),
        bit_error_rate=a.ber or 0.0,
        flap_count=a.flap_count or 0,
    )
    if a.flap_period is not None:
        spec.flap_period.FromNanoseconds(int(a.flap_period * 1e9))
    request = common_pb2.InjectFaultRequest(fault=spec, idempotency_key=s.key)
    response = await s.call("InjectFault", request)
    return s.show(response, lambda r: "injected:\n" + s.table(fault_rows([r.fault]), FAULT_HEADER))


async def _clear(s: Session) -> int:
    request = common_pb2.ClearFaultRequest(
        fault_id=s.args.fault_id or "", all=s.args.all, idempotency_key=s.key
    )
    response = await s.call("ClearFault", request)

    def human(r: common_pb2.ClearFaultResponse) -> str:
        if not r.faults:
            return "no active faults"
        return f"cleared {len(r.faults)}:\n" + s.table(fault_rows(r.faults), FAULT_HEADER)

    return s.show(response, human)


async def _set_admin_state(s: Session) -> int:
    drain = s.args.command == "drain"
    request = common_pb2.SetAdminStateRequest(
        target=common_pb2.ComponentRef(name=s.args.target),
        admin_state=common_pb2.ADMIN_STATE_DOWN if drain else common_pb2.ADMIN_STATE_UP,
        reason=s.args.reason or "",
        idempotency_key=s.key,
    )
    response = await s.call("SetAdminState", request)
    verb = "drained" if drain else "returned to service"
    return s.show(response, lambda r: f"{s.args.target} {verb} ({len(r.links)} links)")


# Where faults are documented (`fault --help`, README), how they end and how drains differ.
FAULTS_END = (
    "Inject, list and clear faults. A fault lives in the agent of the tray that holds it (the "
    "TRAY column of `fault list`) and ends when it is cleared, when a counted link_flap has run "
    "out, or when that tray's agent restarts (`rack restart`, a crash): a restarted tray comes "
    "back whole, without its faults. Drains (`fusionctl drain`) differ: they are the "
    "controller's desired state, applied again to a tray that comes back, and they survive a "
    "controller restart too."
)


def _options_fit_the_kind(args: argparse.Namespace) -> None:
    """--ber is degraded_ber's (and it needs one), --flap-* are link_flap's."""
    kind = enum_word(common_pb2.FaultKind, args.kind)
    if args.kind == common_pb2.FAULT_KIND_DEGRADED_BER and args.ber is None:
        raise argparse.ArgumentTypeError("degraded_ber needs --ber (the bit error rate, e.g. 1e-9)")
    if args.kind != common_pb2.FAULT_KIND_DEGRADED_BER and args.ber is not None:
        raise argparse.ArgumentTypeError(f"--ber goes with degraded_ber, not {kind}")
    if args.kind != common_pb2.FAULT_KIND_LINK_FLAP:
        for option, value in (
            ("--flap-period", args.flap_period),
            ("--flap-count", args.flap_count),
        ):
            if value is not None:
                raise argparse.ArgumentTypeError(f"{option} goes with link_flap, not {kind}")


def register(commands: Commands) -> None:
    """Add `fault`, `drain` and `undrain` to `fusionctl`."""
    add, group = commands.add, commands.group

    verbs = group("fault", "inject, list and clear faults", FAULTS_END)
    p = add(
        verbs,
        "list",
        _list,
        "active faults of the rack",
        ["fusionctl fault list", "fusionctl fault list --tray compute-01"],
    )
    p.add_argument("--tray", help="only faults held by this tray's agent")
    p = add(
        verbs,
        "inject",
        _inject,
        "break something on purpose",
        [
            "fusionctl fault inject link_down compute-01/gpu0/nvlink3",
            "fusionctl fault inject degraded_ber compute-02/gpu1/nvlink0 --ber 1e-9",
            "fusionctl fault inject link_flap compute-02/gpu1/nvlink1 --flap-period 0.5 "
            "--flap-count 2",
            "fusionctl fault inject switch_chip_failure switch-9/chip1",
        ],
    )
    p.add_argument("kind", type=FAULT_KIND, metavar="KIND", help=choices(FAULT_KIND))
    p.add_argument(
        "target",
        metavar="TARGET",
        action=_Target,
        help="a link (compute-01/gpu0/nvlink3) for link_down, link_flap and degraded_ber; a "
        "chiplet (asic-01/chiplet0) for chiplet_failure; a switch chip (switch-1/chip0) for "
        "switch_chip_failure; a tray (compute-01) for tray_loss",
    )
    p.add_argument(
        "--ber",
        type=number(0, 1, above=True, below=True),
        help="degraded_ber: the bit error rate, in (0, 1), e.g. 1e-9",
    )
    p.add_argument(
        "--flap-period",
        type=number(0, MAX_DURATION, above=True),
        metavar="SECONDS",
        help="link_flap: length of each down / up phase, > 0 (default 1)",
    )
    p.add_argument(
        "--flap-count",
        type=UINT32,
        metavar="N",
        help="link_flap: down phases before it clears itself (default: until cleared)",
    )
    p.add_check(_options_fit_the_kind)
    key_option(p)
    p = add(
        verbs,
        "clear",
        _clear,
        "clear a fault by id, or every fault",
        ["fusionctl fault clear --all"],
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("fault_id", nargs="?", metavar="FAULT_ID", help="e.g. compute-01/1")
    which.add_argument("--all", action="store_true", help="clear every active fault of the rack")
    key_option(p)

    for name, what in (
        ("drain", "take a link or a whole tray out of service (admin down)"),
        ("undrain", "return a drained link or tray to service"),
    ):
        reason = ' --reason "reseat the cable"' if name == "drain" else ""
        examples = [
            f"fusionctl {name} compute-03/gpu2/nvlink5{reason}",
            f"fusionctl {name} compute-18",
        ]
        p = add(commands.root, name, _set_admin_state, what, examples)
        p.add_argument(
            "target",
            metavar="TARGET",
            action=_Target,
            drain=name,
            help="a link (compute-01/gpu0/nvlink3) or a tray (compute-01)",
        )
        p.add_argument("--reason", help="why, for the event and the logs")
        key_option(p)
