"""Every command line of fusionrack refuses what cannot be right while parsing: a usage error
(exit 2, the usage and a line naming the option), never a traceback and never a request made
with it. Abbreviations are refused everywhere (`--cont 2` is not `--controller 2`), and every
enum is spelled one way in help, errors and tables.

Each program's parser is the one its `main` builds (caught as it parses), so a new option,
subcommand, benchmark or script is covered without being listed here; a new option that takes
a value must say here what is wrong for it, or why any text is right.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fusionrack.agent.main import build_parser as agent_parser
from fusionrack.agent.main import main as agent_main
from fusionrack.controller.main import build_parser as controller_parser
from fusionrack.controller.main import main as controller_main
from fusionrack.fusionctl.arguments import enum_word
from fusionrack.fusionctl.main import build_parser as fusionctl_parser
from fusionrack.fusionctl.main import main as fusionctl_main
from fusionrack.fusionctl.views import traffic_rows
from fusionrack.v1 import controller_pb2

ROOT = Path(__file__).resolve().parents[2]
FUSIONCTL = str(Path(sys.executable).with_name("fusionctl"))


class Caught(Exception):
    """Raised in place of parsing: the program's parser is in `parser`."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def parser_of(main: Callable[[list[str]], Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The parser `main` builds, caught when it parses (nothing of the program runs)."""

    def catch(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        raise Caught(self)

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", catch)
        with pytest.raises(Caught) as caught:
            main([])
    return caught.value.parser


def walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """`parser` and every subcommand's parser under it, with the words that reach it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, (*path, name))


def script(path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A script of the repository, imported as `python scripts/NAME.py` runs it."""
    monkeypatch.syspath_prepend(str(path.parent))
    spec = importlib.util.spec_from_file_location(f"_usage_{path.parent.name}_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


PROGRAMS = {
    "fusionctl": lambda _: fusionctl_main,
    "fusion-agent": lambda _: agent_main,
    "fusion-controller": lambda _: controller_main,
    # A benchmark as `python -m bench.NAME` imports it (the repository root is on sys.path).
    **{
        f"bench/{path.name}": (
            lambda _, name=path.stem: importlib.import_module(f"bench.{name}").main
        )
        for path in sorted((ROOT / "bench").glob("[!_]*.py"))
    },
    **{
        f"scripts/{path.name}": (lambda mp, path=path: script(path, mp).main)
        for path in sorted((ROOT / "scripts").glob("*.py"))
    },
}


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_no_parser_of_any_program_takes_an_abbreviation(
    program: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    parser = parser_of(PROGRAMS[program](monkeypatch), monkeypatch)
    parsers = list(walk(parser))
    for path, each in parsers:
        assert each.allow_abbrev is False, (program, path)
        for option in each._option_string_actions:
            shorter = option[:-1]
            if not option.startswith("--") or len(shorter) < 3:
                continue
            if shorter in each._option_string_actions:
                continue
            # What argparse makes of the word: an option only if it is one, never a prefix.
            assert each._parse_optional(shorter) == (None, shorter, None), (program, path, option)
    if program == "fusionctl":
        assert len(parsers) > 30  # every noun and verb was walked


def usage_error(
    build: Callable[[], argparse.ArgumentParser],
    argv: list[str],
    capsys: pytest.CaptureFixture[str],
) -> str:
    """Parsing `argv` with the program's parser must exit 2 as a usage error; what it printed
    on stderr. Only parsed, never run: a value taken would start nothing here."""
    with pytest.raises(SystemExit) as exited:
        build().parse_args(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    assert "usage: " in err and "Traceback" not in err
    return err


def test_an_abbreviation_is_refused_not_taken_for_another_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `--cont 2`, a typo for --count, became --controller 2.
    argv = ["partition", "create", "--name", "p", "--count", "1", "--cont", "2"]
    assert "unrecognized arguments: --cont 2" in usage_error(fusionctl_parser, argv, capsys)
    for abbreviated in (["domain", "--time", "5"], ["rack", "up", "--control", "3"]):
        assert "unrecognized arguments" in usage_error(fusionctl_parser, abbreviated, capsys)


# A value that cannot be right, for every option of fusionctl that takes one ("" for the
# top-level command's options, which every command takes).
BAD_VALUES: dict[tuple[str, str], str] = {
    ("", "--controller"): "nowhere",
    ("", "--rack"): "no rack",
    ("", "--tls-ca"): "/nonexistent/ca.pem",
    ("", "--tls-cert"): "/nonexistent/client.pem",
    ("", "--tls-key"): "/nonexistent/client.key",
    ("", "--token-file"): "/nonexistent/admin.token",
    ("", "--timeout"): "0",
    ("", "--wait"): "-1",
    ("", "--output"): "xml",
    ("manifest check", "manifest"): "gb300",
    ("manifest show", "manifest"): "gb300",
    ("rack up", "--manifest"): "gb300",
    ("rack up", "--base-port"): "70000",
    ("rack up", "--host"): "",
    ("rack up", "--controller-listen"): "20051",
    ("rack up", "--controllers"): "9",
    ("rack up", "--prometheus-interval"): "0",
    ("rack up", "--mqtt-listen"): "1883",
    ("rack up", "--prometheus-listen"): "127.0.0.1:0",
    ("rack up", "--unprogrammed"): "open",
    ("rack down", "--manifest"): "gb300",
    ("rack down", "--rack"): "no rack",
    ("rack status", "--manifest"): "gb300",
    ("rack status", "--rack"): "no rack",
    ("rack restart", "--rack"): "no rack",
    ("fleet up", "--racks"): "0",
    ("fleet up", "--mqtt-listen"): "host:",
    ("fleet up", "--prometheus-listen"): "9090",
    ("fleet up", "--fleet"): "/nonexistent/fleet.yaml",
    ("fleet up", "--manifest"): "gb300",
    ("fleet up", "--base-port"): "0",
    ("fleet up", "--host"): "",
    ("fleet up", "--prometheus-interval"): "-1",
    ("trays", "--kind"): "gpu",
    ("accelerators", "--kind"): "fpga",
    ("accelerators", "--partition"): "40000",
    ("links", "--state"): "up",
    ("links", "--accelerator"): "gpu0",
    ("links", "--plane"): "-1",
    ("partition show", "partition"): "0",
    ("partition create", "--name"): "",
    ("partition create", "--locations"): "compute-01",
    ("partition create", "--uids"): "0",
    ("partition create", "--count"): "-3",
    ("partition create", "--member-type"): "name",
    ("partition create", "--id"): "-1",
    ("partition create", "--resiliency"): "best_effort",
    ("partition create", "--multicast-group-limit"): "-1",
    ("partition create", "--idempotency-key"): "",
    ("partition delete", "partition"): "99999999999",
    ("partition delete", "--idempotency-key"): " ",
    ("partition add", "partition"): "40000",
    ("partition add", "--locations"): "compute-01/gpu",
    ("partition add", "--uids"): "0x1" + "0" * 16,
    ("partition add", "--idempotency-key"): "",
    ("partition remove", "partition"): "0",
    ("partition remove", "--locations"): "/0",
    ("partition remove", "--uids"): "-1",
    ("partition remove", "--idempotency-key"): "",
    ("mcast list", "--partition"): "0",
    ("mcast show", "id"): "0",
    ("mcast create", "--partition"): "99999",
    ("mcast create", "--size"): "-2MiB",
    ("mcast create", "--member"): "gpu0",
    ("mcast create", "--id"): "16384",
    ("mcast create", "--idempotency-key"): "",
    ("mcast delete", "id"): "-1",
    ("mcast delete", "--idempotency-key"): "",
    ("mem load", "--initiator"): "gpu0",
    ("mem load", "--target"): "99999",
    ("mem load", "--address"): "-1",
    ("mem load", "--offset"): "-8",
    ("mem load", "--size"): "5MiB",
    ("mem store", "--initiator"): "gpu0",
    ("mem store", "--target"): "gpu0",
    ("mem store", "--address"): str(1 << 64),
    ("mem store", "--offset"): "256TiB",
    ("mem store", "--data"): "",
    ("mem store", "--hex"): "zz",
    ("mem atomic", "--initiator"): "gpu0",
    ("mem atomic", "--target"): "gpu0",
    ("mem atomic", "--address"): "x",
    ("mem atomic", "--offset"): "-0x10",
    ("mem atomic", "--op"): "nand",
    ("mem atomic", "--type"): "u128",
    ("fault inject", "kind"): "meteor",
    ("fault inject", "--ber"): "2",
    ("fault inject", "--flap-period"): "0",
    ("fault inject", "--flap-count"): "-1",
    ("fault inject", "--idempotency-key"): "",
    ("fault clear", "--idempotency-key"): "",
    ("drain", "--idempotency-key"): "",
    ("undrain", "--idempotency-key"): "",
    ("traffic start", "--partition"): "0",
    ("traffic start", "--pattern"): "tree",
    ("traffic start", "--load"): "1.5",
    ("traffic start", "--duration"): "-5s",
    ("traffic start", "--group"): "0",
    ("traffic start", "--source"): "gpu0",
    ("traffic start", "--idempotency-key"): "",
    ("traffic list", "--partition"): "0",
    ("traffic stop", "id"): "0",
    ("traffic stop", "--partition"): "0",
    ("traffic stop", "--idempotency-key"): "",
    ("events", "--kind"): "everything",
    ("events", "--partition"): "0",
    ("top", "--interval"): "0",
    ("top", "--events"): "-1",
}
# Options whose every text may be right until it is looked up (exit 1 naming it), and why.
ANY_TEXT: dict[tuple[str, str], str] = {
    ("rack up", "--state-dir"): "a directory made if missing",
    ("rack down", "--state-dir"): "looked for: none up there says so",
    ("rack status", "--state-dir"): "looked for: none up there says so",
    ("rack restart", "--state-dir"): "looked for: none up there says so",
    ("rack restart", "name"): "a tray of the rack, known from its manifest",
    ("fleet up", "--state-dir"): "a directory made if missing",
    ("fleet status", "--state-dir"): "looked for: no fleet there says so",
    ("fleet down", "--state-dir"): "looked for: no fleet there says so",
    ("accelerators", "--tray"): "a tray name, the controller's to know",
    ("links", "--compute-tray"): "a tray name, the controller's to know",
    ("links", "--switch-tray"): "a tray name, the controller's to know",
    ("fault list", "--tray"): "a tray name, the controller's to know",
    ("fault inject", "target"): "a component name, the controller's to know",
    ("fault clear", "fault_id"): "a fault id, the controller's to know",
    ("drain", "target"): "a component name, the controller's to know",
    ("drain", "--reason"): "free text",
    ("undrain", "target"): "a component name, the controller's to know",
    ("undrain", "--reason"): "free text",
    ("events", "--tray"): "a tray name, the controller's to know",
    ("mem atomic", "--operand"): "a value of --type: checked with it (test below)",
    ("mem atomic", "--compare"): "a value of --type: checked with it (test below)",
}


def _value_options(
    monkeypatch: pytest.MonkeyPatch,
) -> dict[tuple[str, str], argparse.Action]:
    """Every option (or positional) of fusionctl that takes a value, by (command, name)."""
    top = parser_of(fusionctl_main, monkeypatch)
    shared = {(tuple(action.option_strings), action.help) for action in top._actions}
    found = {}
    for path, parser in walk(top):
        leaf = not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
        if path and not leaf:
            continue
        for action in parser._actions:
            if action.nargs == 0 or isinstance(action, argparse._SubParsersAction):
                continue
            if path and (tuple(action.option_strings), action.help) in shared:
                continue  # the top-level option, copied into every command
            name = action.option_strings[-1] if action.option_strings else action.dest
            found[" ".join(path), name] = action
    return found


def test_every_option_that_takes_a_value_is_checked_or_says_why_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    options = set(_value_options(monkeypatch))
    assert not BAD_VALUES.keys() & ANY_TEXT.keys()
    assert options - BAD_VALUES.keys() - ANY_TEXT.keys() == set(), "say what is wrong for them"
    assert (BAD_VALUES.keys() | ANY_TEXT.keys()) - options == set(), "options that are gone"


@pytest.mark.parametrize(("where", "bad"), sorted(BAD_VALUES.items()))
def test_a_value_that_cannot_be_right_is_a_usage_error(
    where: tuple[str, str], bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    command, option = where
    words = command.split()
    argv = [*words, option, bad] if option.startswith("-") else [*words, bad]
    err = usage_error(fusionctl_parser, argv, capsys)
    assert "error: argument " in err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        # mem atomic: --compare is compare_swap's, and compare_swap needs it.
        (["--op", "cas", "--operand", "1"], "--op compare_swap needs --compare"),
        (["--op", "compare_swap", "--operand", "1"], "--op compare_swap needs --compare"),
        (["--op", "add", "--operand", "1", "--compare", "0"], "--compare goes with --op compare"),
        (["--op", "add"], "--operand is required"),
        (["--op", "add", "--operand", "-1"], "argument --operand: '-1' is not a u64 value"),
        (["--op", "add", "--operand", "0x80000000", "--type", "i32"], "is not a i32 value"),
        (["--op", "cas", "--operand", "1", "--compare", "1.5"], "argument --compare: '1.5'"),
        (["--op", "max", "--operand", "one", "--type", "f64"], "'one' is not a f64 value"),
    ],
)
def test_atomic_operands_are_checked_with_their_op_and_type(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["mem", "atomic", "--initiator", "0", "--target", "1"]
    assert says in usage_error(fusionctl_parser, [*where, *argv], capsys)


def test_options_that_contradict_each_other_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text("racks: [{name: a}]\n")
    cases = [
        (["mem", "load", "--initiator", "0", "--address", "0", "--offset", "8", "--size", "1"],
         "--offset goes with --target"),
        (["partition", "create", "--name", "p", "--locations", "compute-01/0", "--member-type",
          "uid"], "--member-type goes with --count"),
        (["fault", "inject", "degraded_ber", "compute-01/gpu0/nvlink0"],
         "degraded_ber needs --ber"),
        (["fault", "inject", "link_down", "compute-01/gpu0/nvlink0", "--ber", "1e-9"],
         "--ber goes with degraded_ber, not link_down"),
        (["fault", "inject", "tray_loss", "compute-01", "--flap-count", "2"],
         "--flap-count goes with link_flap, not tray_loss"),
        (["traffic", "start", "--partition", "p", "--pattern", "ring", "--load", "0.5",
          "--group", "1"], "--group goes with --pattern all-reduce"),
        (["traffic", "start", "--partition", "p", "--pattern", "all-to-all", "--load", "0.5",
          "--source", "0"], "--source goes with --pattern multicast"),
        (["traffic", "stop", "1", "--partition", "p"], "--partition goes with --all"),
        (["rack", "up", "--controllers", "3", "--no-controller"], "contradict each other"),
        (["rack", "status", "--rack", "r", "--state-dir", "d"], "or --state-dir, not both"),
        (["fleet", "up", "--fleet", str(fleet_file), "--manifest", "mini"], "without --manifest"),
    ]  # fmt: skip
    for argv, says in cases:
        assert says in usage_error(fusionctl_parser, argv, capsys), argv


def test_a_negative_looking_value_is_read_as_a_value(capsys: pytest.CaptureFixture[str]) -> None:
    """`--size -2MiB` reads as `--size=-2MiB` (argparse took it for an option: "expected one
    argument"), and both say what is wrong with it."""
    where = ["mcast", "create", "--partition", "p"]
    spaced = usage_error(fusionctl_parser, [*where, "--size", "-2MiB"], capsys)
    joined = usage_error(fusionctl_parser, [*where, "--size=-2MiB"], capsys)
    assert "argument --size: '-2MiB': a size is at least 1 byte" in spaced
    assert spaced == joined
    offset = ["mem", "load", "--initiator", "0", "--target", "1", "--size", "8", "--offset", "-8"]
    assert "argument --offset: '-8': an offset is 0 .. 0xffffffffffff" in usage_error(
        fusionctl_parser, offset, capsys
    )


@pytest.mark.parametrize(
    ("build", "argv", "says"),
    [
        (agent_parser, ["--manifest", "mini", "--tray", "switch-1", "--base-port", "0"],
         "--base-port 0 goes with --all"),
        (agent_parser, ["--manifest", "mini", "--tray", "switch-1", "--listen", "20100"],
         "argument --listen"),
        (agent_parser, ["--manifest", "mini", "--tray", "compute-01", "--switch", "switch-1"],
         "argument --switch: 'switch-1': give NAME=HOST:PORT"),
        (agent_parser, ["--manifest", "mini", "--all", "--listen", "127.0.0.1:1"],
         "--listen goes with --tray"),
        (agent_parser, ["--manifest", "mini", "--all", "--mqtt", "http://h:1"], "argument --mqtt"),
        (agent_parser, ["--manifest", "mini", "--all", "--rack-name", "a rack"],
         "argument --rack-name: rack name 'a rack'"),
        (agent_parser, ["--manifest", "mini", "--all", "--base-port", "-1"],
         "argument --base-port"),
        (agent_parser, ["--manifest", "mini", "--all", "--tls-cert", "c.pem"],
         "--tls-cert and --tls-key together"),
        (controller_parser, ["--manifest", "mini", "--lease-ttl", "0"], "argument --lease-ttl"),
        (controller_parser, ["--manifest", "mini", "--store-timeout", "-1"],
         "argument --store-timeout"),
        (controller_parser, ["--manifest", "mini", "--listen", "nowhere"], "argument --listen"),
        (controller_parser, ["--manifest", "mini", "--advertise", "h"], "argument --advertise"),
        (controller_parser, ["--manifest", "mini", "--base-port", "0"], "argument --base-port"),
        (controller_parser, ["--manifest", "mini", "--agent", "compute-01"], "argument --agent"),
        (controller_parser, ["--manifest", "mini", "--state", "s", "--store", "etcd://h:1"],
         "--state (SQLite) or --store (etcd), not both"),
        (controller_parser, ["--manifest", "mini", "--etcd-ca", "ca.pem"], "go with --store"),
        (controller_parser, ["--manifest", "mini", "--pids-file", "p"], "--pids-file goes with"),
        (controller_parser, [], "--manifest is required"),
    ],
)  # fmt: skip
def test_the_servers_refuse_what_cannot_be_right_while_parsing(
    build: Callable[[], argparse.ArgumentParser],
    argv: list[str],
    says: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert says in usage_error(build, argv, capsys)


# The servers' options as fusionctl's above: a value that cannot be right for each, or why any
# text may be (paths are looked at where the program runs: a deployment's flags are checked
# where its files are not, tests/unit/test_kubernetes.py).
_PATH = "a path, opened where the program runs (exit 1 naming it)"
SERVER_BAD_VALUES: dict[tuple[str, str], str] = {
    ("fusion-agent", "--rack-name"): "a rack",
    ("fusion-agent", "--host"): "",
    ("fusion-agent", "--base-port"): "70000",
    ("fusion-agent", "--listen"): "20100",
    ("fusion-agent", "--metrics"): "host",
    ("fusion-agent", "--forward"): "host:port",
    ("fusion-agent", "--switch"): "switch-1",
    ("fusion-agent", "--mqtt"): "http://127.0.0.1:1883",
    ("fusion-agent", "--log-level"): "loud",
    ("fusion-agent", "--unprogrammed"): "open",
    ("fusion-controller", "--rack-name"): "-rack",
    ("fusion-controller", "--store"): "http://127.0.0.1:2379",
    ("fusion-controller", "--controller-id"): "",
    ("fusion-controller", "--advertise"): "nowhere",
    ("fusion-controller", "--store-timeout"): "0",
    ("fusion-controller", "--lease-ttl"): "0",
    ("fusion-controller", "--listen"): ":20051",
    ("fusion-controller", "--host"): " ",
    ("fusion-controller", "--base-port"): "0",
    ("fusion-controller", "--agent"): "compute-01",
    ("fusion-controller", "--metrics"): "127.0.0.1:x",
    ("fusion-controller", "--mqtt"): "mqtts://127.0.0.1:8883",
    ("fusion-controller", "--log-level"): "verbose",
}
SERVER_ANY_TEXT: dict[tuple[str, str], str] = {
    **{("fusion-agent", option): _PATH for option in (
        "--manifest", "--each", "--pids-file", "--tls-cert", "--tls-key", "--tls-ca", "--tls-dir",
        "--rack-secret-file")},
    ("fusion-agent", "--tray"): "a tray of the manifest, read where it runs (exit 1 naming them)",
    **{("fusion-controller", option): _PATH for option in (
        "--manifest", "--state", "--etcd-ca", "--etcd-cert", "--etcd-key", "--tls-cert",
        "--tls-key", "--tls-ca", "--tls-dir", "--rack-secret-file", "--admin-token-file",
        "--read-only-token-file", "--each", "--pids-file")},
}  # fmt: skip
SERVERS = {"fusion-agent": agent_parser, "fusion-controller": controller_parser}


def test_every_server_option_that_takes_a_value_is_checked_or_says_why_not() -> None:
    options = {
        (program, action.option_strings[-1])
        for program, build in SERVERS.items()
        for action in build()._actions
        if action.nargs != 0 and action.option_strings
    }
    listed = SERVER_BAD_VALUES.keys() | SERVER_ANY_TEXT.keys()
    assert options - listed == set(), "say what is wrong for them"
    assert listed - options == set(), "options that are gone"


@pytest.mark.parametrize(("where", "bad"), sorted(SERVER_BAD_VALUES.items()))
def test_a_server_value_that_cannot_be_right_is_a_usage_error(
    where: tuple[str, str], bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    program, option = where
    rest = ["--all"] if program == "fusion-agent" else []  # what it needs but the value
    err = usage_error(SERVERS[program], ["--manifest", "mini", *rest, option, bad], capsys)
    assert f"error: argument {option}" in err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("partition", "create", "--name", "p", "--count", "-3"), "argument --count: '-3'"),
        (("partition", "create", "--name", "p", "--id", "-1", "--count", "1"), "argument --id"),
        (("mem", "store", "--initiator", "gpu0", "--target", "1", "--data", "x"),
         "argument --initiator: accelerator 'gpu0'"),
        (("rack", "up", "--manifest", "gb300"), "presets: gb200-nvl72"),
    ],
)  # fmt: skip
def test_as_a_user_runs_it_a_usage_error_not_a_traceback(args: tuple[str, ...], says: str) -> None:
    result = subprocess.run(
        [FUSIONCTL, *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr


def _enum_options(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, argparse.Action]]:
    return [
        (f"{command} {name}", action)
        for (command, name), action in _value_options(monkeypatch).items()
        if hasattr(action.type, "enum")
    ]


def test_every_enum_is_spelled_one_way_in_help_errors_and_tables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    options = _enum_options(monkeypatch)
    assert len(options) >= 10
    for where, action in options:
        parse: Any = action.type
        words = parse.choices
        for word in words:
            value = parse(word)
            assert parse(word.replace("-", "_")) == parse(word.replace("_", "-")) == value
            assert word in {enum_word(parse.enum, value), "cas", "inc", "dec", "xchg"}, where
        with pytest.raises(argparse.ArgumentTypeError) as refused:
            parse("nothing-of-the-kind")
        assert str(refused.value).endswith(f"is not one of {', '.join(words)}"), where
        for word in words:  # the help never spells a choice the other way
            other = word.replace("-", "_") if "-" in word else word.replace("_", "-")
            assert other == word or other not in (action.help or ""), (where, other)
    session = controller_pb2.TrafficSession(
        id=1, pattern=controller_pb2.TRAFFIC_PATTERN_ALL_TO_ALL, algorithm="direct"
    )
    assert "all-to-all (direct)" in traffic_rows([session])[0]


# How README writes enum values after the options that take them.
README_ENUMS = {
    "--pattern": "traffic start --pattern",
    "--resiliency": "partition create --resiliency",
    "--state": "links --state",
    "fault inject": "fault inject kind",
}


def test_the_readme_spells_enum_values_as_fusionctl_does(monkeypatch: pytest.MonkeyPatch) -> None:
    options = dict(_enum_options(monkeypatch))
    readme = (ROOT / "README.md").read_text()
    seen = 0
    for before, where in README_ENUMS.items():
        parse: Any = options[where].type
        for found in re.finditer(rf"{before} ([a-z_|\\-]+)", readme):
            for word in re.split(r"\\?\|", found.group(1)):  # `a\|b` in a table
                assert word in parse.choices, (before, word)
                seen += 1
    kinds = re.search(r"faults \(([^)]*)\)", readme)
    assert kinds is not None
    for word in re.findall(r"`([a-z_-]+)`", kinds.group(1)):
        assert word in options["fault inject kind"].type.choices  # type: ignore[union-attr]
        seen += 1
    assert seen >= 8
