"""Generate the Python stubs of the v1 contract from proto/fusionrack/v1/*.proto, and of
etcd's v3 API (vendored in proto/fusionrack/etcdv3/, which the controller's etcd store speaks).

    python scripts/gen_protos.py            # regenerate in place (commit the result)
    python scripts/gen_protos.py --out DIR  # write DIR/fusionrack/{v1,etcdv3}/*_pb2*

This is the one way the stubs are made: grpc_tools' bundled protoc with the proto root
``proto/`` (so generated imports read ``from fusionrack.v1 import common_pb2``), plus the
well-known types shipped with grpc_tools. The output depends only on the .proto files and the
pinned grpcio-tools version, so a test can regenerate and compare byte for byte.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE_DIR = Path("fusionrack", "v1")  # the public contract
# etcd's own API, apart from the contract: vendored, not ours to document or change.
PACKAGE_DIRS = (PACKAGE_DIR, Path("fusionrack", "etcdv3"))
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def well_known_include() -> Path:
    """The directory holding google/protobuf/*.proto as shipped with grpc_tools."""
    return Path(str(resources.files("grpc_tools") / "_proto"))


def proto_files(proto_root: Path = PROTO_ROOT) -> list[str]:
    """The .proto files of every package, relative to the proto root, in a stable order."""
    return sorted(
        p.relative_to(proto_root).as_posix()
        for package in PACKAGE_DIRS
        for p in (proto_root / package).glob("*.proto")
    )


def run_protoc(args: list[str], proto_root: Path = PROTO_ROOT) -> None:
    """Run the bundled protoc on every .proto file with `args` (output options) added."""
    argv = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{well_known_include()}",
        *args,
        *proto_files(proto_root),
    ]
    code = protoc.main(argv)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}: {' '.join(argv)}")


def generated_files(out: Path) -> list[Path]:
    """Generated stub files present under `out`'s package directories."""
    return sorted(
        p
        for package in PACKAGE_DIRS
        for p in (out / package).glob("*")
        if p.name.endswith(GENERATED_SUFFIXES)
    )


def generate(out: Path) -> list[Path]:
    """Write fresh stubs under `out`, removing stale ones of protos that no longer exist."""
    for package in PACKAGE_DIRS:
        (out / package).mkdir(parents=True, exist_ok=True)
    for stale in generated_files(out):
        stale.unlink()
    run_protoc([f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}"])
    return generated_files(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument(
        "--out",
        type=Path,
        default=PROTO_ROOT,
        help="output root; stubs land in OUT/fusionrack/v1 and OUT/fusionrack/etcdv3 "
        "(default: proto/, in place)",
    )
    args = parser.parse_args(argv)
    files = generate(args.out.resolve())
    if not files:
        print("no stubs generated", file=sys.stderr)
        return 1
    for path in files:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
