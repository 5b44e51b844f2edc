"""The layer rules of DESIGN.md, checked on the source so a violation fails before review.

* `emulator` imports nothing of the project and nothing that touches the outside world
  (sockets, clocks, threads, asyncio, gRPC): it is the pure core.
* `agent` and `controller` never import each other.
* Nothing installs or imports bare top-level `agent` / `controller` / `emulator` packages.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMPURE = {"socket", "asyncio", "time", "threading", "grpc", "aiomqtt", "prometheus_client",
          "datetime", "random", "subprocess", "selectors", "http", "urllib"}  # fmt: skip
BARE = {"agent", "controller", "emulator"}


def imports(folder: str) -> list[tuple[str, str]]:
    """(file, imported module) for every absolute import under `folder`."""
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [(path.name, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.append((path.name, node.module))
    return found


def test_the_core_imports_nothing_of_ours_and_nothing_impure() -> None:
    bad = [
        (file, module)
        for file, module in imports("emulator")
        if module.split(".")[0] in IMPURE | BARE | {"fusionrack"}
    ]
    assert not bad, f"emulator/ must stay pure and self-contained: {bad}"


@pytest.mark.parametrize(
    ("folder", "forbidden"), [("agent", "controller"), ("controller", "agent")]
)
def test_agent_and_controller_never_import_each_other(folder: str, forbidden: str) -> None:
    bad = [
        (file, module)
        for file, module in imports(folder)
        if module.startswith(f"fusionrack.{forbidden}") or module.split(".")[0] in BARE
    ]
    assert not bad, f"{folder}/ may not import {forbidden} (or bare packages): {bad}"
