"""What every `fusionctl` command that talks to a running controller shares: how a noun adds its
verbs to the parser (`Commands`), the idempotency key option, and how an accelerator named on
the command line is found in the rack.

Each noun module (`inventory`, `partition`, `mcast`, `mem`, `fault`, `traffic`, `events`, `top`)
has a `register(commands)` that adds its subcommands. A command builds its request from the
arguments (`arguments.py`), makes it through the invocation's `client.Session` (connection,
timeouts, errors and exit codes; the only way a command reaches the controller), and shows the
response (`views.py` for people, `output.print_json` for programs).

Output is a table for people (state words in colour when stdout is a terminal and NO_COLOR is
unset) or, with `-o json`, the response message in the proto3 JSON mapping with the proto's
field names (`wire.to_json`).

Mutating requests carry an idempotency key: `--idempotency-key KEY`, by default a fresh UUID per
invocation, so re-running a command line with the same key applies it at most once.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from fusionrack.cli import ArgumentParser, non_empty
from fusionrack.v1 import common_pb2

from .arguments import accelerator_text
from .client import Command, Refused, Session, connection_options, output_options, runner
from .views import location_text

__all__ = ["Commands", "announced", "key_option", "resolve_accelerator", "with_examples"]


class Commands:
    """`fusionctl`'s subcommands, for each noun to add its own: `root` is where a top-level
    command goes (`fusionctl links`), `group` makes a noun with verbs (`fusionctl partition`)."""

    def __init__(self, root: Any) -> None:
        self.root = root
        # Built once: argparse copies a parent's options into each parser that names it.
        self._parents = [connection_options(), output_options()]

    def add(
        self,
        parent: Any,
        name: str,
        run: Command,
        help: str,
        examples: Sequence[str] = (),
        **kw: Any,
    ) -> ArgumentParser:
        """A command `name` under `parent` (`root` or a `group`) that runs `run` in a Session;
        `examples` (command lines, `fusionctl ...`) end its --help. They work on the default
        rack (gb200-nvl72), run in the order --help lists them: tests/e2e/test_examples.py."""
        kw.update(with_examples(examples))
        parser = parent.add_parser(name, help=help, description=help, parents=self._parents, **kw)
        parser.set_defaults(run=runner(run))
        return parser

    def group(self, name: str, help: str, description: str | None = None) -> Any:
        """A noun whose verbs are added with `add(group, verb, ...)`; `description` is what its
        --help says (default: `help`)."""
        parser = self.root.add_parser(name, help=help, description=description or help)
        return parser.add_subparsers(dest="verb", required=True, metavar="VERB")


def with_examples(examples: Sequence[str]) -> dict[str, Any]:
    """The `add_parser` options that end a command's --help with `examples` (command lines,
    one a line, as written)."""
    if not examples:
        return {}
    return {
        "epilog": "examples:\n" + "\n".join(f"  {line}" for line in examples),
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }


def key_option(parser: argparse.ArgumentParser) -> None:
    """`--idempotency-key`, on every command that changes something."""
    parser.add_argument(
        "--idempotency-key",
        type=non_empty,
        metavar="KEY",
        help="key of this change: the controller applies a key's request at most once "
        "(default: a new UUID each time; pass the same key to retry a command safely)",
    )


def announced(verb: str, lines: list[str]) -> list[str]:
    """What `show` prints of an object just made (`created ...`, `started ...`)."""
    return [f"{verb} {lines[0]}", *lines[1:]]


async def resolve_accelerator(
    s: Session, ref: common_pb2.AcceleratorRef
) -> tuple[common_pb2.TrayInfo, common_pb2.Accelerator]:
    """(tray, accelerator) named by `ref`, from ListTrays."""
    case = ref.WhichOneof("accelerator")
    for tray in await s.trays():
        for a in tray.accelerators:
            if (
                (case == "index" and a.index == ref.index)
                or (case == "uid" and a.uid == ref.uid)
                or (case == "name" and ref.name in (a.name, location_text(a.location)))
                or (
                    case == "location"
                    and (ref.location.tray, ref.location.index)
                    == (a.location.tray, a.location.index)
                    and ref.location.rack in ("", a.location.rack)
                )
            ):
                return tray, a
    raise Refused(
        f"NOT_FOUND: no accelerator {accelerator_text(ref)!r} in this rack "
        "(see `fusionctl accelerators`)"
    )
