"""The v1 contract: committed stubs match the protos, every element is documented, enums follow
the house rules and mirror the core, and every service offers the RPCs the servers implement.
"""

from __future__ import annotations

import enum
import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import grpc
import pytest
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gen_protos.py"
V1_DIR = ROOT / "proto" / "fusionrack" / "v1"
# etcd's API, vendored beside the contract (the controller's etcd store speaks it).
GENERATED_DIRS = (V1_DIR, ROOT / "proto" / "fusionrack" / "etcdv3")
REGENERATE = "run `python scripts/gen_protos.py` and commit the result"

# Proto enums that mirror a core enum under another name or in another module than enums.py.
MIRRORED_ELSEWHERE: dict[str, tuple[str, str]] = {}
# Proto enums with no core counterpart: they describe the contract itself.
PROTO_ONLY = {"ConfigPhase", "ControlPlaneState"}

EXPECTED_RPCS = {
    "Controller": {
        "GetDomain", "GetTopology", "ListTrays", "ListAccelerators", "ListLinks",
        "CreatePartition", "GetPartition", "ListPartitions", "DeletePartition",
        "AddAccelerators", "RemoveAccelerators",
        "CreateMulticastGroup", "GetMulticastGroup", "ListMulticastGroups",
        "DeleteMulticastGroup",
        "SetAdminState", "InjectFault", "ClearFault", "ListFaults", "Subscribe",
        "StartTraffic", "ListTraffic", "StopTraffic",
    },
    "Tray": {
        "GetInventory", "GetStatus", "WatchStatus", "ListLinks", "InjectFault", "ClearFault",
        "SetAdminState", "SetTraffic",
    },
    "Memory": {
        "Load", "Store", "Atomic", "Copy", "Execute", "ExecutePacked", "Stream",
        "MulticastStore", "MulticastLoadReduce", "MulticastReduce",
    },
    "Switch": {"ApplyConfig", "GetConfig", "Forward", "GetForwardEndpoint"},
}  # fmt: skip
SERVICE_MODULES = {
    "Controller": "controller",
    "Tray": "tray",
    "Memory": "memory",
    "Switch": "switch",
}
# (client streams, server streams) for every streaming RPC; all others are unary.
STREAMING = {
    ("Controller", "Subscribe"): (False, True),
    ("Tray", "WatchStatus"): (False, True),
    ("Memory", "Stream"): (True, True),
    ("Switch", "Forward"): (True, True),
}

# Field numbers inside descriptor.proto, used to build SourceCodeInfo paths.
FILE_MESSAGE, FILE_ENUM, FILE_SERVICE = 4, 5, 6
MESSAGE_FIELD, MESSAGE_NESTED, MESSAGE_ENUM, MESSAGE_ONEOF = 2, 3, 4, 8
ENUM_VALUE = 2
SERVICE_METHOD = 2


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_protos", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[descriptor_pb2.FileDescriptorProto]:
    """The contract's file descriptors, with comments (SourceCodeInfo)."""
    out = tmp_path_factory.mktemp("descriptors") / "fusionrack-v1.binpb"
    _load_generator().run_protoc(["--include_source_info", f"--descriptor_set_out={out}"])
    found = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    contract = [f for f in found.file if f.name.startswith("fusionrack/v1/")]
    assert contract, "no fusionrack/v1 protos compiled"
    return contract


def _enums(
    files: list[descriptor_pb2.FileDescriptorProto],
) -> dict[str, descriptor_pb2.EnumDescriptorProto]:
    """Every enum of the contract by its (package-relative, dotted) name."""
    found: dict[str, descriptor_pb2.EnumDescriptorProto] = {}

    def walk(message: descriptor_pb2.DescriptorProto, prefix: str) -> None:
        for nested_enum in message.enum_type:
            found[f"{prefix}{message.name}.{nested_enum.name}"] = nested_enum
        for nested in message.nested_type:
            walk(nested, f"{prefix}{message.name}.")

    for file in files:
        for top_enum in file.enum_type:
            found[top_enum.name] = top_enum
        for message in file.message_type:
            walk(message, "")
    return found


def _upper_snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).upper()


# -- (1) committed stubs are what the protos generate --------------------------------------------


@pytest.fixture(scope="module")
def fresh_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stubs the generator makes now, under a temporary root."""
    out = tmp_path_factory.mktemp("stubs")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"{SCRIPT.name} failed:\n{result.stdout}{result.stderr}"
    return out


@pytest.mark.parametrize("committed_dir", GENERATED_DIRS, ids=lambda d: d.name)
def test_committed_stubs_match_a_fresh_generation(fresh_root: Path, committed_dir: Path) -> None:
    fresh_dir = fresh_root / committed_dir.relative_to(ROOT / "proto")
    suffixes = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
    fresh = {p.name: p for p in fresh_dir.iterdir() if p.name.endswith(suffixes)}
    committed = {p.name: p for p in committed_dir.iterdir() if p.name.endswith(suffixes)}
    assert fresh, "the generator produced no stubs"

    problems = [f"missing: {name}" for name in sorted(fresh.keys() - committed.keys())]
    problems += [
        f"stale (its .proto is gone): {name}" for name in sorted(committed.keys() - fresh.keys())
    ]
    problems += [
        f"stale (differs from what its .proto generates): {name}"
        for name in sorted(fresh.keys() & committed.keys())
        if fresh[name].read_bytes() != committed[name].read_bytes()
    ]
    assert not problems, (
        f"generated stubs in {committed_dir.relative_to(ROOT)} are out of date; {REGENERATE}:\n  "
        + "\n  ".join(problems)
    )


# -- (2) every element is documented --------------------------------------------------------------


def _elements(file: descriptor_pb2.FileDescriptorProto) -> list[tuple[tuple[int, ...], str]]:
    """(SourceCodeInfo path, "kind full.name") of every documentable element of `file`."""
    found: list[tuple[tuple[int, ...], str]] = []

    def walk_enum(
        item: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], full: str
    ) -> None:
        found.append((path, f"enum {full}"))
        for i, value in enumerate(item.value):
            found.append(((*path, ENUM_VALUE, i), f"enum value {full}.{value.name}"))

    def walk_message(
        message: descriptor_pb2.DescriptorProto, path: tuple[int, ...], full: str
    ) -> None:
        found.append((path, f"message {full}"))
        for i, field in enumerate(message.field):
            found.append(((*path, MESSAGE_FIELD, i), f"field {full}.{field.name}"))
        # proto3 `optional` fields live in hidden ("synthetic") oneofs: nothing to document.
        synthetic = {f.oneof_index for f in message.field if f.proto3_optional}
        for i, oneof in enumerate(message.oneof_decl):
            if i not in synthetic:
                found.append(((*path, MESSAGE_ONEOF, i), f"oneof {full}.{oneof.name}"))
        for i, nested in enumerate(message.nested_type):
            walk_message(nested, (*path, MESSAGE_NESTED, i), f"{full}.{nested.name}")
        for i, nested_enum in enumerate(message.enum_type):
            walk_enum(nested_enum, (*path, MESSAGE_ENUM, i), f"{full}.{nested_enum.name}")

    for i, service in enumerate(file.service):
        found.append(((FILE_SERVICE, i), f"service {service.name}"))
        for j, method in enumerate(service.method):
            found.append(
                ((FILE_SERVICE, i, SERVICE_METHOD, j), f"rpc {service.name}.{method.name}")
            )
    for i, message in enumerate(file.message_type):
        walk_message(message, (FILE_MESSAGE, i), message.name)
    for i, top_enum in enumerate(file.enum_type):
        walk_enum(top_enum, (FILE_ENUM, i), top_enum.name)
    return found


def test_every_element_has_a_leading_comment(
    files: list[descriptor_pb2.FileDescriptorProto],
) -> None:
    undocumented: list[str] = []
    for file in files:
        comments = {
            tuple(location.path): location.leading_comments.strip()
            for location in file.source_code_info.location
        }
        undocumented += [
            f"{file.name}: {element}" for path, element in _elements(file) if not comments.get(path)
        ]
    assert not undocumented, (
        f"{len(undocumented)} element(s) of the v1 contract lack a leading `//` comment (the "
        "proto is the documentation clients read):\n  " + "\n  ".join(undocumented)
    )


# -- (3) enum naming ------------------------------------------------------------------------------


def test_enum_values_are_prefixed_and_zero_is_unspecified(
    files: list[descriptor_pb2.FileDescriptorProto],
) -> None:
    problems: list[str] = []
    for name, item in _enums(files).items():
        prefix = _upper_snake(item.name)
        zero = [v.name for v in item.value if v.number == 0]
        if zero != [f"{prefix}_UNSPECIFIED"]:
            problems.append(f"{name}: zero value is {zero}, want {prefix}_UNSPECIFIED")
        problems += [
            f"{name}.{v.name}: value names start with {prefix}_"
            for v in item.value
            if not v.name.startswith(f"{prefix}_")
        ]
    assert not problems, "\n".join(problems)


# -- (4) proto enums mirror the core --------------------------------------------------------------


def _core_enums() -> dict[str, type[enum.IntEnum]]:
    """Proto enum name -> the core enum it mirrors."""
    core = importlib.import_module("fusionrack.emulator.enums")
    mirrored = {name: getattr(core, name) for name in core.__all__}
    for proto_name, (module, attribute) in MIRRORED_ELSEWHERE.items():
        mirrored[proto_name] = getattr(importlib.import_module(module), attribute)
    return mirrored


def test_every_proto_enum_is_mirrored_or_declared_proto_only(
    files: list[descriptor_pb2.FileDescriptorProto],
) -> None:
    unaccounted = sorted(_enums(files).keys() - _core_enums().keys() - PROTO_ONLY)
    assert not unaccounted, (
        f"proto enums {unaccounted} mirror nothing in fusionrack.emulator.enums; add the core "
        "enum, or list them in PROTO_ONLY / MIRRORED_ELSEWHERE here"
    )


@pytest.mark.parametrize("name", sorted(_core_enums()))
def test_proto_enum_matches_core_enum(
    files: list[descriptor_pb2.FileDescriptorProto], name: str
) -> None:
    core_enum = _core_enums()[name]
    proto = _enums(files).get(name)
    assert proto is not None, f"core enum {name} has no proto enum of the same name"
    prefix = _upper_snake(name)
    want = {f"{prefix}_{member.name}": int(member.value) for member in core_enum}
    have = {v.name: v.number for v in proto.value if v.number != 0}
    assert 0 not in want.values(), f"core enum {name} uses 0, which is the proto's UNSPECIFIED"
    assert have == want, (
        f"proto enum {name} differs from {core_enum.__module__}.{core_enum.__qualname__}:\n"
        f"  only in proto: {sorted(have.items() - want.items())}\n"
        f"  only in core:  {sorted(want.items() - have.items())}"
    )


def test_core_error_codes_are_grpc_status_numbers() -> None:
    # Packed batch results and OpStatus carry these numbers; they must mean the gRPC codes.
    from fusionrack.emulator.errors import ErrorCode

    for code in ErrorCode:
        assert grpc.StatusCode[code.name].value[0] == code.value, code


# -- (5) every file names its generated code in other languages -----------------------------------


def test_every_file_names_the_same_package_in_other_languages(
    files: list[descriptor_pb2.FileDescriptorProto],
) -> None:
    """A client in Go, Java or C# generates from the protos alone (no `M...=` mapping per file),
    and every file of the package lands in the same package (`fusionrackv1` for Go)."""
    for file in files:
        options = file.options
        stem = Path(file.name).stem
        assert (
            options.go_package,
            options.java_package,
            options.java_multiple_files,
            options.java_outer_classname,
            options.csharp_namespace,
        ) == (
            "github.com/fusionrack/fusionrack/gen/go/fusionrack/v1;fusionrackv1",
            "io.github.fusionrack.v1",
            True,
            f"{stem.capitalize()}Proto",
            "Fusionrack.V1",
        ), file.name


# -- (6) stubs import and offer the expected RPCs --------------------------------------------------


@pytest.mark.parametrize("service", sorted(EXPECTED_RPCS))
def test_service_stubs_offer_expected_rpcs(service: str) -> None:
    module = SERVICE_MODULES[service]
    messages = importlib.import_module(f"fusionrack.v1.{module}_pb2")
    stubs = importlib.import_module(f"fusionrack.v1.{module}_pb2_grpc")

    methods = messages.DESCRIPTOR.services_by_name[service].methods
    assert {m.name for m in methods} == EXPECTED_RPCS[service]
    for method in methods:
        shape = (method.client_streaming, method.server_streaming)
        assert shape == STREAMING.get((service, method.name), (False, False)), method.full_name

    servicer = getattr(stubs, f"{service}Servicer")
    assert callable(getattr(stubs, f"add_{service}Servicer_to_server"))
    with grpc.insecure_channel("127.0.0.1:1") as channel:  # never dialled: no call is made
        stub = getattr(stubs, f"{service}Stub")(channel)
        for rpc in EXPECTED_RPCS[service]:
            assert callable(getattr(servicer, rpc)), f"{service}Servicer.{rpc}"
            assert callable(getattr(stub, rpc)), f"{service}Stub.{rpc}"


def test_every_module_of_the_package_imports() -> None:
    names = sorted(p.stem for p in V1_DIR.glob("*.py") if p.stem != "__init__")
    assert names, "no generated modules"
    for name in names:
        importlib.import_module(f"fusionrack.v1.{name}")
