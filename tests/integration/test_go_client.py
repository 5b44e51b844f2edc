"""A Go client generated from `proto/` alone drives a real rack, as outside orchestration tools do.

Debian's `protoc` with its `protoc-gen-go` and `protoc-gen-go-grpc` generate the Go code of
`proto/fusionrack/v1` with no command-line mapping (the protos name their Go package), Debian's
Go builds it with Debian's grpc-go, offline (GOPATH mode on /usr/share/gocode, no module proxy),
together with our client `tests/goclient/main.go`, and the client's answers from a real rack and
controller are read back with the Python stubs' JSON parser. `make test` installs the toolchain
(scripts/install-system-deps.sh); without it these tests fail saying so, they never skip.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format

from fusionrack.controller.main import RunningController
from fusionrack.v1 import controller_pb2, controller_pb2_grpc, memory_pb2, tray_pb2

from .conftest import Clients

ROOT = Path(__file__).resolve().parents[2]
CLIENT_SOURCE = ROOT / "tests" / "goclient" / "main.go"
# Where Debian's golang-*-dev packages put their sources (a GOPATH entry).
DEBIAN_GOCODE = Path("/usr/share/gocode")
# The Go import path the protos name (option go_package) and the package name after its `;`.
GO_IMPORT_PATH = "github.com/fusionrack/fusionrack/gen/go/fusionrack/v1"
GO_PACKAGE = "fusionrackv1"
TOOLS = ("protoc", "protoc-gen-go", "protoc-gen-go-grpc", "go")
INSTALL_HINT = (
    "`make test` installs them (scripts/install-system-deps.sh, Debian packages golang-go, "
    "protobuf-compiler, protoc-gen-go, protoc-gen-go-grpc, golang-google-grpc-dev, "
    "golang-google-protobuf-dev, golang-github-golang-protobuf-1-5-dev)"
)


@dataclass(frozen=True)
class GoClient:
    """The built client, and the Go files protoc generated for it."""

    binary: Path
    generated: list[Path]


def _run(
    argv: list[str], what: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> None:
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=100, check=False, cwd=cwd, env=env
    )
    assert result.returncode == 0, f"{what} failed ({' '.join(argv)}):\n{result.stderr}"


@pytest.fixture(scope="session")
def go_client(tmp_path_factory: pytest.TempPathFactory) -> GoClient:
    """Generate the Go code of proto/fusionrack/v1 and build tests/goclient against it."""
    tools = {name: shutil.which(name) for name in TOOLS}
    missing = [name for name, path in tools.items() if path is None]
    if missing or not (DEBIAN_GOCODE / "src" / "google.golang.org" / "grpc").is_dir():
        pytest.fail(
            f"the Go toolchain is missing ({', '.join(missing) or 'grpc-go sources'}); "
            + INSTALL_HINT,
            pytrace=False,
        )
    gopath = tmp_path_factory.mktemp("gopath")
    (gopath / "src" / "goclient").mkdir(parents=True)
    # README's command (no `M...=` options: the protos name their Go package), with the output
    # folder inside a module at the import path the protos name.
    out = gopath / "src" / GO_IMPORT_PATH.removesuffix("/fusionrack/v1")
    out.mkdir(parents=True)
    _run(
        [
            str(tools["protoc"]),
            f"--plugin=protoc-gen-go={tools['protoc-gen-go']}",
            f"--plugin=protoc-gen-go-grpc={tools['protoc-gen-go-grpc']}",
            f"-I{ROOT / 'proto'}",
            f"--go_out={out}",
            "--go_opt=paths=source_relative",
            f"--go-grpc_out={out}",
            "--go-grpc_opt=paths=source_relative",
            *sorted(str(p) for p in (ROOT / "proto" / "fusionrack" / "v1").glob("*.proto")),
        ],
        "protoc with Debian's Go plugins",
    )
    generated = sorted((out / "fusionrack" / "v1").glob("*.go"))
    shutil.copy(CLIENT_SOURCE, gopath / "src" / "goclient" / "main.go")
    offline = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(gopath),
        # GOPATH mode over Debian's sources: every import resolves on this machine.
        "GO111MODULE": "off",
        "GOPATH": f"{gopath}{os.pathsep}{DEBIAN_GOCODE}",
        "GOPROXY": "off",
        "GOFLAGS": "",
        "GOENV": "off",
        "GOCACHE": str(gopath / "cache"),
        "CGO_ENABLED": "0",  # no C compiler needed, and std builds faster
    }
    binary = gopath / "bin" / "goclient"
    _run(
        [str(tools["go"]), "build", "-o", str(binary), "goclient"],
        "go build of tests/goclient with the generated code",
        cwd=gopath,
        env=offline,
    )
    return GoClient(binary, generated)


def test_protoc_writes_one_go_package_at_the_import_path_the_protos_name(
    go_client: GoClient,
) -> None:
    names = sorted(path.name for path in go_client.generated)
    protos = sorted(p.stem for p in (ROOT / "proto" / "fusionrack" / "v1").glob("*.proto"))
    assert names == sorted(
        [f"{stem}.pb.go" for stem in protos]
        + [f"{stem}_grpc.pb.go" for stem in ("controller", "memory", "switch", "tray")]
    )
    for path in go_client.generated:
        assert re.search(rf"^package {GO_PACKAGE}$", path.read_text(), re.MULTILINE), path.name


async def test_a_go_client_reads_the_rack_and_moves_bytes_through_its_fabric(
    go_client: GoClient,
    controller: RunningController,
    stub: controller_pb2_grpc.ControllerStub,
    clients: Clients,
) -> None:
    process = await asyncio.create_subprocess_exec(
        str(go_client.binary),
        controller.server.address,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    lines = [json.loads(text) for text in out.decode().splitlines()]
    assert [line["call"] for line in lines] == [
        "Controller.GetDomain",
        "Controller.ListTrays",
        "Tray.GetInventory",
        "Memory.Store",
        "Memory.Load",
        "Memory.Load",
    ]
    domain, trays, inventory, _stored, loaded, refused = lines

    # Go's proto3 JSON reads back into the same messages the Python client gets.
    seen = json_format.ParseDict(domain["response"], controller_pb2.GetDomainResponse())
    ours = await stub.GetDomain(controller_pb2.GetDomainRequest())
    assert seen.properties == ours.properties
    assert seen.state.control_plane_state == controller_pb2.CONTROL_PLANE_STATE_READY
    assert seen.state.reachable_tray_count == ours.state.tray_count == 4
    listed = json_format.ParseDict(trays["response"], controller_pb2.ListTraysResponse())
    assert [tray.name for tray in listed.trays] == ["compute-01", "compute-02"]
    read = json_format.ParseDict(inventory["response"], tray_pb2.GetInventoryResponse())
    direct = await clients.tray("compute-01").GetInventory(tray_pb2.GetInventoryRequest())
    assert (read.tray.name, read.boot_id, len(read.links)) == (
        "compute-01",
        direct.boot_id,
        len(direct.links),
    )

    # The Go client stored from compute-01/gpu0 into compute-02/gpu0 (domain index 2, byte
    # 0x1000): the bytes are in that accelerator's memory, as any other initiator loads them.
    written = b"written by a Go client"
    assert json_format.ParseDict(loaded["response"], memory_pb2.LoadResponse()).data == written
    again = await clients.memory("compute-02").Load(
        memory_pb2.LoadRequest(initiator=3, address=2 << 48 | 0x1000, size=len(written))
    )
    assert again.data == written
    # A bad request reaches Go as the status code and message a Python client gets.
    with pytest.raises(grpc.aio.AioRpcError) as python_refused:
        await clients.memory("compute-01").Load(
            memory_pb2.LoadRequest(initiator=0, address=2 << 48 | 0x1000, size=0)
        )
    assert python_refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (refused["code"], refused["message"]) == (
        "InvalidArgument",
        python_refused.value.details(),
    )
