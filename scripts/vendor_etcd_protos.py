"""Copy etcd's v3 API protos into proto/fusionrack/etcdv3/, trimmed to what protoc needs.

    python scripts/vendor_etcd_protos.py ETCD_SOURCE_DIR   # then: make protos, and commit

ETCD_SOURCE_DIR is a checkout of etcd at the release the protos come from (the tree whose
`etcdserver/etcdserverpb/rpc.proto`, `mvcc/mvccpb/kv.proto` and `auth/authpb/auth.proto` they
are; release 3.4's layout; Debian's `golang-etcd-server-dev` package ships the same tree).

What changes, and nothing else: the gogoproto options (Go code generation) and the grpc-gateway
HTTP annotations go, with their imports; the imports of kv.proto and auth.proto name their
vendored paths. Packages, messages, fields and services stay etcd's, so the wire is etcd's.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "proto" / "fusionrack" / "etcdv3"
SOURCES = {
    "rpc.proto": "etcdserver/etcdserverpb/rpc.proto",
    "kv.proto": "mvcc/mvccpb/kv.proto",
    "auth.proto": "auth/authpb/auth.proto",
}
IMPORTS = {
    "etcd/mvcc/mvccpb/kv.proto": "fusionrack/etcdv3/kv.proto",
    "etcd/auth/authpb/auth.proto": "fusionrack/etcdv3/auth.proto",
}
HEADER = (
    "// Vendored from etcd {release}, {path}\n"
    "// (Apache License 2.0; see README.md beside this file). Trimmed by\n"
    "// scripts/vendor_etcd_protos.py: gogoproto and HTTP annotations removed, imports renamed;\n"
    "// otherwise etcd's text.\n"
)


def trim(text: str) -> str:
    """`text` without gogoproto / google.api options and imports, imports renamed."""
    dropped = r'^import "(gogoproto/gogo|google/api/annotations)\.proto";\n'
    text = re.sub(dropped, "", text, flags=re.M)
    text = re.sub(r"^// for grpc-gateway\n", "", text, flags=re.M)
    text = re.sub(r"^option \(gogoproto\.[a-z_]+\) = \w+;\n", "", text, flags=re.M)
    text = _without_http_options(text)
    for old, new in IMPORTS.items():
        text = text.replace(f'import "{old}";', f'import "{new}";')
    if "gogoproto" in text or "google.api" in text:
        raise SystemExit("an option this script does not know is left; extend trim()")
    return re.sub(r"\n{3,}", "\n\n", text)


def _without_http_options(text: str) -> str:
    """`text` without its `option (google.api.http) = { ... };` blocks (braces nest in them:
    `additional_bindings { ... }`)."""
    opening = re.compile(r"\n[ \t]*option \(google\.api\.http\) = \{")
    while found := opening.search(text):
        depth, end = 1, found.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        if text[end] != ";":
            raise SystemExit(f"an HTTP option not ended by ';' at byte {end}")
        text = text[: found.start()] + text[end + 1 :]
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("source", type=Path, help="etcd source tree")
    parser.add_argument("--release", default="v3.4.23", help="the release it is (for the header)")
    args = parser.parse_args(argv)
    for name, path in SOURCES.items():
        text = (args.source / path).read_text()
        out = TARGET / name
        out.write_text(HEADER.format(release=args.release, path=path) + trim(text))
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
