"""`fusionctl`: the command line of fusionrack, one module per noun.

`manifest` reads rack manifests; `rack up|down|status|restart` brings an emulated rack (tray
agents, controller, broker) up and down, `fleet up|status|down` many racks (`rack.py` and
`fleet.py` parse, `launcher/` does it); every other
command talks to a running controller through `client.Session`: `inventory.py` (domain,
topology, trays, accelerators, links), `partition.py`, `mcast.py`, `mem.py` (to a tray agent),
`fault.py` (fault, drain, undrain), `traffic.py`, `events.py`, and `top.py` (a live view of the
rack). Exit codes: 0 ok, 1 refused (the server said no, or what a value names is not there or
not right: the message says why), 2 usage (whatever is known to be wrong before a request is
made: every value is checked while parsing, `fusionrack.cli`), 3 the controller cannot be
reached. `-o json` prints machine output.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fusionrack import __version__
from fusionrack.cli import ArgumentParser
from fusionrack.emulator.errors import FusionError

from . import events, fault, fleet, inventory, manifest, mcast, mem, partition, rack, top, traffic
from .client import connection_options, output_options
from .commands import Commands

# In the order `fusionctl --help` lists them.
NOUNS = (manifest, rack, fleet, inventory, partition, mcast, mem, fault, traffic, events, top)

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    # fusionrack's parser, and so every subcommand's: no abbreviations (`--cont 2` is not
    # `--controller 2`, `rack up --tls` not a prefix of --tls-ca), checks while parsing.
    parser = ArgumentParser(
        prog="fusionctl",
        description="Drive an emulated NVLink Fusion rack.",
        epilog="A manifest is a YAML file or a preset name (`fusionctl manifest list`). "
        "Exit codes: 0 ok, 1 refused, 2 usage, 3 controller unreachable.",
        parents=[connection_options(top=True), output_options(top=True)],
    )
    parser.add_argument("--version", action="version", version=f"fusionctl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    registry = Commands(commands)
    for noun in NOUNS:
        noun.register(registry)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except FusionError as exc:
        print(f"fusionctl: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `fusionctl manifest show x | head`
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
