"""The layer rules of DESIGN.md, checked so a violation fails before review.

* The import-linter contracts in pyproject.toml (`lint-imports`): one exhaustive `layers`
  contract places every module of `fusionrack` (the programs, which never import each other,
  over the controller API's client, over the shared runtime, over the contract, over the pure
  core; a module nobody placed breaks it); `emulator` imports nothing of the outside world
  (sockets, clocks, threads, asyncio, gRPC); `fusionctl` reaches the controller only through
  the client; and no package's modules import each other in a circle.
* Here by hand, what a contract cannot name (a module that must not exist): nothing imports
  bare top-level `agent` / `controller` / `emulator` / `fusionctl` packages.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.conftest import BuiltWheel

ROOT = Path(__file__).resolve().parents[2]
BARE = {"agent", "controller", "emulator", "fusionctl", "runtime"}


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


def test_nothing_imports_bare_packages() -> None:
    bad = [
        (folder, file, module)
        # tests/ and bench/ too: they run with the repository root on sys.path (tests.support,
        # python -m bench.NAME), where a bare `import agent` would work by accident.
        for folder in ("emulator", "agent", "controller", "fusionctl", "runtime", "tests", "bench")
        for file, module in imports(folder)
        if module.split(".")[0] in BARE
    ]
    assert not bad, f"import fusionrack.agent, fusionrack.controller, ..., never bare names: {bad}"


def test_the_import_linter_contracts_hold(unpacked_wheel: BuiltWheel) -> None:
    # On the installed tree: grimp looks for a package's modules under its own folder, and the
    # source tree spreads `fusionrack.*` over the card's folders.
    site = unpacked_wheel.site
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-logo", "--no-cache",
         "--config", str(ROOT / "pyproject.toml")],
        capture_output=True, text=True, timeout=120, check=False, cwd=site.parent,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    contracts = len(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    )
    assert f"Contracts: {contracts} kept, 0 broken." in result.stdout
