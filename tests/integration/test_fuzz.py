"""Every RPC of every service fuzzed against a rack of real processes (`fusionctl rack up`,
tests/support/fuzzer.py on the rig of tests/support/fuzz_rig.py): no request makes a server fail
(UNKNOWN or INTERNAL), hang past its deadline or die; the sentinel words isolation protects and
the partition tables stay as they should; the agents' memory stays bounded. The quick mode of
bench/fuzz.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fuzz_rig import FUZZ_MANIFEST, methods
from tests.support.fuzzer import Fuzzer
from tests.support.process_racks import ProcessRack

CASES = 25  # per RPC: the whole test stays well under a minute on two cores
ABANDONED = 500  # streams of each streaming RPC opened and dropped
TAKEN_BACK = 200  # Forward streams admitted as a real tray and taken back by it


@pytest.fixture
def fuzzer(tmp_path: Path) -> Iterator[Fuzzer]:
    manifest = tmp_path / "fuzz.yaml"
    manifest.write_text(FUZZ_MANIFEST)
    rack = ProcessRack(manifest, tmp_path / "state")
    asyncio.run(rack.up())
    running = Fuzzer(rack)
    try:
        running.prepare()
        yield running
    finally:
        running.close()
        asyncio.run(rack.down())


def test_no_fuzzed_request_fails_a_server_or_breaks_the_rack(fuzzer: Fuzzer) -> None:
    fuzzer.fuzz_round(CASES, rng_seed=12)
    fuzzer.raw_bodies(CASES, rng_seed=12)
    fuzzer.oversized()
    fuzzer.taken_back(TAKEN_BACK)
    fuzzer.abandon_streams(ABANDONED)
    fuzzer.never_read(seconds=3)
    fuzzer.check("the attacks")
    growth = fuzzer.check_rss()
    report = fuzzer.report()
    print(report, "\nRSS KiB before/after:", growth)
    assert {m.key for m in methods()} <= set(fuzzer.tallies), "an RPC was not fuzzed"
    assert not fuzzer.findings, report
