"""What every command line of fusionrack shares (`fusionctl`, `fusion-agent`,
`fusion-controller`, the benchmarks): one parser class and the argparse types of the values they
all take, so that a value that cannot be right is a usage error (exit 2, the usage and one line
naming the option) while parsing, never a traceback or a refusal after the work has begun.

`ArgumentParser` differs from argparse's in three ways, all inherited by its subparsers:

* no abbreviations: `--cont 2` is an error, not `--controller 2` (`allow_abbrev=False`);
* a value that starts like a negative number is a value: `--size -2MiB` reads as `--size=-2MiB`
  (its type then says what is wrong with it) instead of "expected one argument";
* `add_check(check)`: a check of the parsed options together (`--compare` with `--op cas`, two
  options that contradict each other), run when this parser's arguments are parsed; it raises
  `argparse.ArgumentTypeError` and the parser exits 2 with its message, as for a bad value.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fusionrack.emulator.errors import FusionError
from fusionrack.emulator.manifest import check_rack_name, resolve_manifest

__all__ = [
    "ArgumentParser",
    "Check",
    "addresses",
    "existing_directory",
    "existing_file",
    "host_port",
    "integer",
    "manifest_name",
    "mqtt_url",
    "named_address",
    "non_empty",
    "number",
    "port",
    "rack_name",
    "split_listen",
]

# What argparse of Python 3.13 takes for a negative number (-1, -.5, -1e-9), widened to any
# value that starts like one (-2MiB, -0x10): no option of ours starts with a digit.
_NUMBER_LIKE = re.compile(r"^-\.?\d")

Check = Callable[[argparse.Namespace], None]


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser without abbreviations, with negative-looking values and checks (see
    the module docstring)."""

    def __init__(self, *args: Any, allow_abbrev: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, allow_abbrev=allow_abbrev, **kwargs)
        # argparse's own hook for what "looks like a negative number" (a value, not an option).
        self._negative_number_matcher = _NUMBER_LIKE
        self.checks: list[Check] = []

    def add_check(self, check: Check) -> None:
        """Run `check(namespace)` once this parser's arguments are parsed."""
        self.checks.append(check)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        namespace, extras = super().parse_known_args(args, namespace)
        for check in self.checks:
            try:
                check(namespace)
            except argparse.ArgumentTypeError as error:
                self.error(str(error))
        return namespace, extras


def integer(
    low: int | None = None, high: int | None = None, what: str = ""
) -> Callable[[str], int]:
    """An argparse type: a whole number (decimal or 0x...) from `low` to `high` (None:
    unbounded); `what` names what it is, for the message."""
    if low is not None and high is not None:
        bounds = f"from {low} to {high}"
    elif low is not None:
        bounds = f"of at least {low}"
    else:
        bounds = "" if high is None else f"of at most {high}"
    rule = f"give a whole number {bounds}".rstrip() + (f" ({what})" if what else "")

    def parse(text: str) -> int:
        try:
            value = int(text.strip(), 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: {rule}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text!r}: {rule}")
        return value

    parse.__name__ = "integer"
    return parse


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    above: bool = False,
    below: bool = False,
) -> Callable[[str], float]:
    """An argparse type: a finite number from `low` to `high` (None: unbounded), `low`
    excluded when `above`, `high` when `below`; the message shows the interval, (0, 1]."""
    if low is not None and high is not None:
        interval = f"in {'(' if above else '['}{low:g}, {high:g}{')' if below else ']'}"
    elif low is not None:
        interval = f"{'>' if above else '>='} {low:g}"
    elif high is not None:
        interval = f"{'<' if below else '<='} {high:g}"
    else:
        interval = "(finite)"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (
            math.isfinite(value)
            and (low is None or value > low or (value == low and not above))
            and (high is None or value < high or (value == high and not below))
        ):
            raise argparse.ArgumentTypeError(f"{text!r}: give a number {interval}")
        return value

    parse.__name__ = "number"
    return parse


def port(text: str) -> int:
    """A TCP port, 1..65535."""
    return integer(1, 65535, "a TCP port")(text)


def existing_file(text: str) -> Path:
    """An argparse type: the path of a file that exists (a certificate, a token, a secret)."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(
            f"{text}: {'is a directory, not a file' if path.is_dir() else 'no such file'}"
        )
    return path


def existing_directory(text: str) -> Path:
    """An argparse type: the path of a directory that exists."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such directory")
    return path


def addresses(text: str) -> str:
    """An argparse type: servers to call, `HOST:PORT` or `HOST:PORT,HOST:PORT,...` (or gRPC
    target URIs, `dns:///host:port`, `unix:/path`), as given."""
    parts = text.split(",")
    if not all(part.strip() and ":" in part for part in parts):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give HOST:PORT, or several as HOST:PORT,HOST:PORT (127.0.0.1:20051)"
        )
    return text


def non_empty(text: str) -> str:
    """An argparse type: any text but an empty one."""
    if not text.strip():
        raise argparse.ArgumentTypeError("give a value that is not empty")
    return text


def manifest_name(text: str) -> str:
    """An argparse type: a rack manifest, a file or the name of a preset (`fusionctl manifest
    list`). Whether it is a good manifest is checked when it is read (exit 1 naming the field)."""
    try:
        resolve_manifest(text)
    except FusionError as error:
        raise argparse.ArgumentTypeError(error.message) from None
    return text


def rack_name(text: str) -> str:
    """An argparse type: a rack's name (letters, digits, `.`, `_`, `-`; at most 63)."""
    try:
        return check_rack_name(text)
    except FusionError as error:
        raise argparse.ArgumentTypeError(error.message) from None


def mqtt_url(text: str) -> str:
    """An argparse type: a broker to publish to, `mqtt://HOST[:PORT]`, as given."""
    from fusionrack.mqtt import parse_mqtt_url  # the MQTT client: only for the servers

    try:
        parse_mqtt_url(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def named_address(text: str) -> str:
    """An argparse type: `NAME=HOST:PORT` (a tray and its agent's address), as given."""
    name, _, address = text.partition("=")
    if not name or not address or ":" not in address:
        raise argparse.ArgumentTypeError(f"{text!r}: give NAME=HOST:PORT (switch-1=10.0.0.7:20100)")
    return text


def split_listen(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[V6]:PORT`` too) -> (host, port); ValueError naming what is wrong."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"a listen address must be HOST:PORT (port 0 picks one): {address!r}")
    return host.removeprefix("[").removesuffix("]"), int(port_text)


def host_port(text: str) -> str:
    """An argparse type: an address to listen on, `HOST:PORT` (`[V6]:PORT` too; port 0 picks
    a free one), as given."""
    try:
        split_listen(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text
