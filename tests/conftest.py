"""Shared fixtures: topologies of the shipped presets (built once per session), a real
mosquitto, a real Prometheus, a real etcd."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from fusionrack.emulator.manifest import load_manifest
from fusionrack.emulator.topology import Topology
from tests.support.etcd_server import Etcd, EtcdMissing
from tests.support.mqtt_broker import Mosquitto, MosquittoMissing
from tests.support.prometheus_server import Prometheus, PrometheusMissing

ROOT = Path(__file__).resolve().parents[1]


class BuiltWheel(NamedTuple):
    """The project built as a wheel and unpacked."""

    wheel: Path
    # A plain install's tree, with every `fusionrack.*` package under one folder.
    site: Path
    # What `pip wheel --quiet` printed while building it (a user sees this: warnings, errors).
    output: str


@pytest.fixture(scope="session")
def unpacked_wheel(tmp_path_factory: pytest.TempPathFactory) -> BuiltWheel:
    """The project built as a wheel (no download, no index, no pip configuration of this
    machine) and unpacked."""
    where = tmp_path_factory.mktemp("wheel")
    # Built from a copy without build/: setuptools builds in the tree it is given, and a build/lib
    # left by an earlier build would carry modules since moved or removed into the wheel.
    source = where / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", ".*_cache", ".hypothesis", ".fusionrack"
        ),
    )
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--wheel-dir", str(where), str(source)],
        capture_output=True, text=True, timeout=300, cwd=where, check=False,
        env={**os.environ, "PIP_CONFIG_FILE": os.devnull},
    )  # fmt: skip
    assert built.returncode == 0, f"pip wheel failed:\n{built.stdout}{built.stderr}"
    (wheel,) = where.glob("fusionrack-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(where / "site")
    return BuiltWheel(wheel, where / "site", built.stdout + built.stderr)


@pytest.fixture(scope="session")
def mini() -> Topology:
    """2 compute trays x 2 GPUs, 2 switch trays x 2 chips: 4 accelerators, 4 planes."""
    return Topology(load_manifest("mini"))


@pytest.fixture(scope="session")
def gb200() -> Topology:
    return Topology(load_manifest("gb200-nvl72"))


@pytest.fixture(scope="session")
def trn4() -> Topology:
    return Topology(load_manifest("trn4-fusion"))


@pytest.fixture
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A real mosquitto on a free 127.0.0.1 port, its own one per test (retained messages and
    sessions never leak between tests); restartable on the same port (`stop`/`kill`/`start`).
    Fails, never skips, when mosquitto is missing: `make test` installs it."""
    try:
        broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    except MosquittoMissing as exc:
        raise pytest.fail.Exception(str(exc), pytrace=False) from None
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """A real Prometheus on a free 127.0.0.1 port, with fusionrack's scrape config, recording
    rules and alerts, scraping and evaluating every second; no targets until the test calls
    `set_targets(...)`. Fails, never skips, when prometheus is missing: `make test` installs
    it."""
    try:
        server = Prometheus(tmp_path_factory.mktemp("prometheus"), interval=1.0)
    except PrometheusMissing as exc:
        raise pytest.fail.Exception(str(exc), pytrace=False) from None
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Etcd]:
    """A real etcd member on free 127.0.0.1 ports, its own one per test (no key leaks between
    tests), with etcd's default timings; restartable (`kill`/`start`). Fails, never skips, when
    etcd is missing: `make test` installs it."""
    try:
        server = Etcd(tmp_path_factory.mktemp("etcd"))
    except EtcdMissing as exc:
        raise pytest.fail.Exception(str(exc), pytrace=False) from None
    server.start()
    try:
        yield server
    finally:
        server.close()
