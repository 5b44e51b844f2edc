"""The layer rules of DESIGN.md, checked so a violation fails before review.

* The import-linter contracts in pyproject.toml (`lint-imports`): `emulator` imports nothing
  of ours, `agent` and `controller` never import each other, the shared runtime imports
  neither, and no package's modules import each other in a circle.
* Here by hand, what the contracts cannot say: `emulator` touches nothing of the outside world
  (sockets, clocks, threads, asyncio: standard modules, which import-linter does not see), and
  nothing imports bare top-level `agent` / `controller` / `emulator` packages.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

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


def test_the_shells_import_no_bare_packages() -> None:
    bad = [
        (folder, file, module)
        for folder in ("agent", "controller")
        for file, module in imports(folder)
        if module.split(".")[0] in BARE
    ]
    assert not bad, f"import fusionrack.agent / fusionrack.controller, never bare names: {bad}"


def test_the_import_linter_contracts_hold(unpacked_wheel: tuple[Path, Path]) -> None:
    # On the installed tree: grimp looks for a package's modules under its own folder, and the
    # source tree spreads `fusionrack.*` over the card's folders.
    _, site = unpacked_wheel
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-logo", "--no-cache",
         "--config", str(ROOT / "pyproject.toml")],
        capture_output=True, text=True, timeout=120, check=False, cwd=site.parent,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken." in result.stdout
