"""The pieces of leadership that need no etcd: every change a standby gets goes to the leader,
`--store` URLs are checked, and the command line refuses what cannot work together."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fusionrack.auth import CONTROLLER_RULES, Access
from fusionrack.controller.etcd_client import parse_etcd_url, range_of
from fusionrack.controller.service import ControllerServicer
from fusionrack.emulator import InvalidArgument

CONTROLLER = str(Path(sys.executable).with_name("fusion-controller"))


def test_every_change_of_the_api_is_made_by_the_leader_and_no_read_is() -> None:
    for method, rule in CONTROLLER_RULES.items():
        name = method.rsplit("/", 1)[-1]
        forwarded = getattr(getattr(ControllerServicer, name), "made_by_leader", False)
        assert forwarded == (rule.access == Access.ADMIN), name


def test_etcd_urls_name_their_members() -> None:
    assert parse_etcd_url("etcd://127.0.0.1:2379") == ["127.0.0.1:2379"]
    assert parse_etcd_url("etcd://a:1, b:2,c:3/") == ["a:1", "b:2", "c:3"]
    for wrong, words in [
        ("http://127.0.0.1:2379", "is not an etcd URL"),
        ("etcd://127.0.0.1", "is not HOST:PORT"),
        ("etcd://127.0.0.1:2379,:5", "':5' is not HOST:PORT"),
        ("etcd://h:99999", "is not HOST:PORT"),
    ]:
        with pytest.raises(InvalidArgument, match=words):
            parse_etcd_url(wrong)


def test_a_prefix_range_ends_after_every_key_of_the_prefix() -> None:
    assert range_of(b"/fusionrack/mini/idempotency/") == b"/fusionrack/mini/idempotency0"
    assert range_of(b"a\xff") == b"b"
    assert range_of(b"\xff\xff") == b"\0"  # every key


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (["--store", "etcd://127.0.0.1:2379", "--state", "x.sqlite"], "not both"),
        (["--store", "etcd://nohost"], "is not HOST:PORT"),
        (["--store", "etcd://127.0.0.1:2379", "--lease-ttl", "0"], "at least 1 (seconds)"),
    ],
)
def test_fusion_controller_refuses_a_store_it_cannot_use(arguments: list[str], words: str) -> None:
    result = subprocess.run(
        [CONTROLLER, "--manifest", "mini", "--listen", "127.0.0.1:0", *arguments],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0 and words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
