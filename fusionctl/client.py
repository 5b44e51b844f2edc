"""How `fusionctl` talks to the controller (and, for `mem`, to a tray agent): one `Session`
per invocation turns the connection options into a `fusionrack.client.ControllerClient` (which
connects, waits for READY, fails over, keys changes and calls with a timeout), and turns every
failure of it into an exit code and one line on stderr:

* 0: done;
* 1 (`Refused`): the server refused the request; its status and message are printed as they
  came (`fusionctl: error: NOT_FOUND: no partition with id 7`);
* 2: usage error (while parsing, before any of this runs: every value is checked there);
* 3 (`Unreachable`): nothing answers at the address (or the connection broke); the message
  names the address and how to start a controller.

The controller is `--controller`, else `$FUSIONRACK_CONTROLLER`, else 127.0.0.1:20051 (a rack's
controllers as `A,B,C`: a call that finds no leader goes to the next, with its idempotency key,
until its deadline), unless `--rack NAME` (or `$FUSIONRACK_RACK`) names a rack of a fleet
(`lookup.py`); TLS with `--tls-ca/--tls-cert/--tls-key` as the other tools; the bearer token
`--token-file`, else `$FUSIONRACK_TOKEN_FILE`, else the admin token of a rack `fusionctl rack up`
started here. With `--wait` the client keeps trying while a controller starts, and the session
shows progress. When the outcome of a change is unknown (connection lost, deadline), the error
gives the request's idempotency key to retry it safely.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from fusionrack.auth import TOKEN_FILES, Credentials
from fusionrack.cli import addresses, existing_file, number, rack_name
from fusionrack.client import (
    CONTROLLER,
    RPC_TIMEOUT,
    ConnectionLost,
    ControllerClient,
    ControllerError,
    ControllerStream,
    DeadlineExceeded,
)
from fusionrack.client import Unreachable as NoConnection
from fusionrack.rpc import TlsFiles, component_files
from fusionrack.v1 import common_pb2, controller_pb2

from .lookup import ENV_FLEET_DIR, RACKS_DIR, fleet_dir, fleet_rack, racks_up_here
from .output import Palette, Progress, colour_enabled, print_json, table
from .statedir import RACK_FILE, RackState

__all__ = [
    "DEFAULT_CONTROLLER",
    "ENV_CONTROLLER",
    "Command",
    "CtlError",
    "Refused",
    "Session",
    "Stream",
    "Unreachable",
    "connection_options",
    "output_options",
    "runner",
]

ENV_CONTROLLER = "FUSIONRACK_CONTROLLER"
ENV_RACK = "FUSIONRACK_RACK"
ENV_TOKEN_FILE = "FUSIONRACK_TOKEN_FILE"
DEFAULT_CONTROLLER = "127.0.0.1:20051"  # fusion-controller's default --listen

EXIT_REFUSED, EXIT_UNREACHABLE = 1, 3


class CtlError(Exception):
    """A command failed; `exit_code` says how."""

    exit_code = EXIT_REFUSED


class Refused(CtlError):
    """The server said no (or the request could not be made): exit 1."""


class Unreachable(CtlError):
    """Nothing answers at the address: exit 3."""

    exit_code = EXIT_UNREACHABLE


# -- talking to servers ---------------------------------------------------------------------


class Session:
    """One invocation's connections (a `fusionrack.client.ControllerClient` made from the
    connection options), settings and output style; the client's failures become `CtlError`s
    with the messages people read."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.address: str = args.controller
        tls = TlsFiles(args.tls_cert, args.tls_key, args.tls_ca)
        if getattr(args, "rack", None):  # a rack of the fleet `fleet up` started here
            rack = fleet_rack(args.rack)
            self.address, found = rack["controller"], Path(rack["state_dir"])
        else:
            found, self.address = _rack_of(self.address)
        if not tls.enabled and found is not None and (found / "tls" / "ca.pem").exists():
            # A rack `rack up --tls` started here: its admin client certificate.
            tls = component_files(found / "tls", "client-admin")
        self.tls = tls
        self.timeout: float = args.timeout
        self.client = ControllerClient(
            self.address,
            tls=tls,
            credentials=Credentials(token=_token(getattr(args, "token_file", None), found)),
            timeout=self.timeout,
            wait=args.wait,
            observer=_WaitProgress(),
        )
        self.json = args.output == "json"
        self.paint = Palette(colour_enabled() and not self.json)
        self.key: str = getattr(args, "idempotency_key", None) or str(uuid.uuid4())
        self._trays: list[common_pb2.TrayInfo] | None = None

    async def trays(self) -> list[common_pb2.TrayInfo]:
        """The controller's ListTrays, asked once per invocation."""
        if self._trays is None:
            self._trays = list(
                (await self.call("ListTrays", controller_pb2.ListTraysRequest())).trays
            )
        return self._trays

    async def close(self) -> None:
        await self.client.close()

    async def forget(self, address: str | None = None) -> None:
        """Close the connection to `address` (default: the controller), so the next call
        dials afresh (`ControllerClient.forget`): `top` gets a restarted controller back at
        once."""
        await self.client.forget(address)

    async def call(
        self, method: str, request: Message, *, agent: common_pb2.TrayInfo | None = None
    ) -> Any:
        """`method` of the Controller service (or, given `agent`, of that tray's Memory
        service); failures become `Refused` / `Unreachable` with the server's words."""
        try:
            if agent is None:
                return await self.client.call(method, request)
            if not agent.address:
                raise Refused(f"the controller knows no address for the agent of {agent.name}")
            return await self.client.call_tray(agent.address, agent.name, method, request)
        except ControllerError as error:
            raise self.failure(error) from None

    async def stream(
        self, method: str, request: Message, *, timeout: float | None = None
    ) -> Stream:
        """A server stream of the Controller service, with `call`'s error mapping."""
        try:
            return Stream(self, await self.client.stream(method, request, timeout=timeout))
        except ControllerError as error:
            raise self.failure(error) from None

    def failure(self, error: ControllerError) -> CtlError:
        """The CtlError for a failed call: `Unreachable` when nothing answers or the
        connection is gone, else `Refused` with the server's status and message; when the
        outcome of a change is unknown, the message gives its idempotency key to retry it
        safely."""
        if isinstance(error, NoConnection) and not isinstance(error, ConnectionLost):
            return Unreachable(self._unreachable(error.address, error.peer))
        retry = ""
        if error.idempotency_key is not None:
            retry = (
                "; the change may or may not have been made: to retry it safely, run the same "
                f"command with --idempotency-key {error.idempotency_key}"
            )
        if isinstance(error, ConnectionLost):
            return Unreachable(f"{error}{retry}")
        if isinstance(error, DeadlineExceeded):
            return Refused(f"DEADLINE_EXCEEDED: {error}{retry}")
        return Refused(f"{error}{retry}")

    def _unreachable(self, address: str, what: str) -> str:
        if what != CONTROLLER:
            return (
                f"cannot reach {what} at {address} (is the tray up? `fusionctl trays` shows "
                "which agents the controller reaches)"
            )
        tls = "" if self.tls.enabled else " (or it serves TLS: give --tls-ca)"
        elsewhere = [
            f"{rack['rack']} at --controller {rack['controller']}"
            for _, rack in racks_up_here()
            if rack.get("controller") and rack["controller"] != address
        ]
        here = f"; racks up from here: {', '.join(elsewhere)}" if elsewhere else ""
        return (
            f"cannot reach the controller at {address}: nothing answers there{tls}{here}. "
            "Start a rack with its controller: `fusionctl rack up` (or `fusion-controller "
            f"--manifest NAME`); or point fusionctl at one with --controller or ${ENV_CONTROLLER}"
        )

    def show(self, message: Message, human: Callable[[Any], str | Iterable[str]]) -> int:
        """Print `message` as JSON or as `human(message)` says; exit code 0."""
        if self.json:
            print_json(message)
        else:
            text = human(message)
            print(text if isinstance(text, str) else "\n".join(text))
        return 0

    def table(self, rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
        return table(rows, header, self.paint)


class Stream:
    """An open server stream; `read` returns None at its end."""

    def __init__(self, session: Session, stream: ControllerStream) -> None:
        self.session, self.stream = session, stream

    async def read(self) -> Any:
        try:
            return await self.stream.read()
        except ConnectionLost:
            raise Unreachable(
                f"lost the controller at {self.session.address}: the stream ended because it "
                "stopped or the connection to it broke (`fusionctl rack status` shows whether "
                "it runs)"
            ) from None
        except ControllerError as error:
            raise self.session.failure(error) from None

    def cancel(self) -> None:
        self.stream.cancel()


class _WaitProgress:
    """Shows `--wait`'s progress on stderr while the client waits for a server."""

    def __init__(self) -> None:
        self.progress: Progress | None = None

    def waiting(self, peer: str, address: str) -> None:
        self.progress = self.progress or Progress()
        self.progress.update(f"waiting for {peer} at {address}")

    def waited(self) -> None:
        if self.progress is not None:
            self.progress.done()
            self.progress = None


def output_options(top: bool = False) -> argparse.ArgumentParser:
    """`-o/--output` as a parent parser. On the top-level parser it carries the default; on a
    command it is SUPPRESSed unless given, so `fusionctl -o json X` and `fusionctl X -o json`
    both work."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default="table" if top else argparse.SUPPRESS,
        help="table for people (default) or json for programs",
    )
    return parent


def _rack_of(controller: str) -> tuple[Path | None, str]:
    """The state dir of the rack `fusionctl rack up` or `fleet up` started from this directory
    whose controllers include `controller` ("A" or "A,B": None if none), and the addresses to
    call: `controller`'s first, then the rack's other controllers (`rack up --controllers N`),
    so a call fails over to them."""
    given = controller.split(",")
    records = [*RACKS_DIR.glob(f"*/{RACK_FILE}"), *fleet_dir().glob(f"*/{RACK_FILE}")]
    for record in sorted(set(records)):
        try:
            recorded = (RackState(record.parent).record().get("controller") or "").split(",")
        except AttributeError:  # no record, or not one of ours
            continue
        if set(given) <= set(recorded):
            return record.parent, ",".join([*given, *(a for a in recorded if a not in given)])
    return None, controller


def _token(path: Path | None, rack: Path | None) -> str | None:
    """The bearer token to present: `path` (--token-file), else $FUSIONRACK_TOKEN_FILE, else
    the admin token in the state dir `rack` (None: none; the controller then gives the
    anonymous role)."""
    path = path or (Path(os.environ[ENV_TOKEN_FILE]) if os.environ.get(ENV_TOKEN_FILE) else None)
    if path is None:
        if rack is None or not (rack / TOKEN_FILES["admin"]).exists():
            return None
        path = rack / TOKEN_FILES["admin"]
    try:
        return path.read_text().strip() or None
    except OSError as error:
        raise Refused(f"cannot read the token file {path}: {error.strerror}") from None


def connection_options(top: bool = False) -> argparse.ArgumentParser:
    """Where the controller is, and how to talk to it (see `output_options` for `top`)."""

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("controller connection")
    group.add_argument(
        "--controller",
        type=addresses,
        metavar="HOST:PORT",
        default=default(os.environ.get(ENV_CONTROLLER) or DEFAULT_CONTROLLER),
        help=f"controller address, or every controller of the rack as HOST:PORT,HOST:PORT "
        f"(a change then goes to the next when one has no leader; default ${ENV_CONTROLLER}, "
        f"else {DEFAULT_CONTROLLER})",
    )
    group.add_argument(
        "--rack",
        type=rack_name,
        metavar="NAME",
        default=default(os.environ.get(ENV_RACK) or None),
        help=f"talk to this rack of the fleet `fusionctl fleet up` started here, instead of "
        f"--controller (default ${ENV_RACK}; the fleet in ${ENV_FLEET_DIR}, else "
        ".fusionrack/fleet)",
    )
    group.add_argument(
        "--tls-ca",
        type=existing_file,
        default=default(None),
        metavar="PEM",
        help="CA that signs the controller (and agents): use TLS",
    )
    group.add_argument(
        "--tls-cert",
        type=existing_file,
        default=default(None),
        metavar="PEM",
        help="client certificate, when the servers require one",
    )
    group.add_argument(
        "--tls-key",
        type=existing_file,
        default=default(None),
        metavar="PEM",
        help="private key of --tls-cert",
    )
    group.add_argument(
        "--token-file",
        type=existing_file,
        default=default(None),
        metavar="PATH",
        help=f"bearer token to present (default ${ENV_TOKEN_FILE}, else the admin token of "
        "the rack `fusionctl rack up` started here with this controller)",
    )
    group.add_argument(
        "--timeout",
        type=number(0, above=True),
        default=default(RPC_TIMEOUT),
        metavar="SECONDS",
        help=f"deadline of each request (default {RPC_TIMEOUT:g})",
    )
    group.add_argument(
        "--wait",
        type=number(0),
        default=default(0.0),
        metavar="SECONDS",
        help="keep trying to reach the controller this long, e.g. while it starts (default 0)",
    )
    return parent


Command = Callable[[Session], Awaitable[int]]


def runner(command: Command) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return asyncio.run(_run(command, args))

    return run


async def _run(command: Command, args: argparse.Namespace) -> int:
    session: Session | None = None
    try:
        session = Session(args)  # may refuse already: a token file it cannot read
        return await command(session)
    except CtlError as error:
        sys.stdout.flush()
        print(f"fusionctl: error: {error}", file=sys.stderr)
        return error.exit_code
    finally:
        if session is not None:
            await session.close()
