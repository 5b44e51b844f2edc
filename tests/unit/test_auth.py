"""The rule tables cover every RPC, and a Guard decides as documented (fusionrack.auth)."""

from __future__ import annotations

import stat
from pathlib import Path

import grpc
import pytest

from fusionrack.auth import (
    AGENT_RULES,
    CONTROLLER_RULES,
    SECRET_METADATA,
    Access,
    Guard,
    Identity,
    generate_secret_file,
    generate_token_file,
    identity_of_uris,
    read_secret_file,
    read_tokens,
)
from fusionrack.v1 import controller_pb2, memory_pb2, switch_pb2, tray_pb2

SECRET = bytes(range(32))


def methods(module: object, service: str) -> set[str]:
    descriptor = module.DESCRIPTOR.services_by_name[service]  # type: ignore[attr-defined]
    return {f"/{descriptor.full_name}/{method.name}" for method in descriptor.methods}


def test_every_rpc_of_every_service_has_exactly_one_rule() -> None:
    agent = (
        methods(tray_pb2, "Tray") | methods(switch_pb2, "Switch") | methods(memory_pb2, "Memory")
    )
    assert set(AGENT_RULES) == agent  # a new RPC must be classified (and no stale entry)
    assert set(CONTROLLER_RULES) == methods(controller_pb2, "Controller")


def test_the_controller_reads_need_read_only_and_every_change_admin() -> None:
    reads = {m for m, rule in CONTROLLER_RULES.items() if rule.access == Access.READ}
    names = {m.rsplit("/", 1)[1] for m in reads}
    assert all(n.startswith(("Get", "List", "Subscribe")) for n in names)
    admin = {m.rsplit("/", 1)[1] for m, r in CONTROLLER_RULES.items() if r.access == Access.ADMIN}
    assert {"CreatePartition", "InjectFault", "SetAdminState", "StartTraffic"} <= admin
    assert not any(n.startswith(("Get", "List")) for n in admin)


def test_fabric_internal_agent_rpcs_and_who_may_call_them() -> None:
    internal = {m.rsplit("/", 1)[1]: r.callers for m, r in AGENT_RULES.items()
                if r.access == Access.FABRIC}  # fmt: skip
    assert internal == {
        "ApplyConfig": {"controller"},
        "SetTraffic": {"controller"},
        "SetAdminState": {"controller"},
        "InjectFault": {"controller"},
        "ClearFault": {"controller"},
        "Forward": {"compute"},
    }


APPLY = "/fusionrack.v1.Switch/ApplyConfig"
CREATE = "/fusionrack.v1.Controller/CreatePartition"
LIST = "/fusionrack.v1.Controller/ListPartitions"


def test_the_secret_decides_fabric_calls_without_tls() -> None:
    guard = Guard(AGENT_RULES, secret=SECRET)
    assert guard.check(APPLY, {SECRET_METADATA: SECRET.hex()}, None) is None
    missing = guard.check(APPLY, {}, None)
    assert missing is not None and missing.code == grpc.StatusCode.UNAUTHENTICATED
    assert missing.reason == "no-secret"
    for wrong in ("00" * 32, "not hex", SECRET.hex()[:-2]):
        refusal = guard.check(APPLY, {SECRET_METADATA: wrong}, None)
        assert refusal is not None and refusal.reason == "wrong-secret"
    assert guard.check("/fusionrack.v1.Tray/GetStatus", {}, None) is None
    assert guard.check("/grpc.health.v1.Health/Check", {}, None) is None
    # Without a secret or TLS: open, as before.
    assert Guard(AGENT_RULES).check(APPLY, {}, None) is None


def test_with_tls_the_certificate_names_who_may_call() -> None:
    guard = Guard(AGENT_RULES, tls_rack="mini")
    assert guard.check(APPLY, {}, Identity("controller")) is None
    denied = guard.check(APPLY, {}, Identity("compute", "compute-01"))
    assert denied is not None and denied.code == grpc.StatusCode.PERMISSION_DENIED
    assert denied.message == (
        "ApplyConfig may be called only by the controller; this caller is compute tray compute-01"
    )
    hello = guard.check_hello(b"", Identity("compute", "compute-01"), "compute-02")
    assert hello is not None and hello.code == grpc.StatusCode.PERMISSION_DENIED
    assert "compute tray compute-01's; it cannot say hello as compute-02" in hello.message
    assert guard.check_hello(b"", Identity("compute", "compute-02"), "compute-02") is None


def test_the_roles_by_token() -> None:
    guard = Guard(
        CONTROLLER_RULES, secret=SECRET, tokens={"A" * 20: "admin", "R" * 20: "read-only"}
    )
    assert guard.check(CREATE, {"authorization": "Bearer " + "A" * 20}, None) is None
    read_only = {"authorization": "Bearer " + "R" * 20}
    assert guard.check(LIST, read_only, None) is None
    denied = guard.check(CREATE, read_only, None)
    assert denied is not None and denied.code == grpc.StatusCode.PERMISSION_DENIED
    assert denied.message == "CreatePartition needs the admin role; this caller has read-only"
    unknown = guard.check(LIST, {"authorization": "Bearer nope"}, None)
    assert unknown is not None and unknown.code == grpc.StatusCode.UNAUTHENTICATED
    assert guard.check(LIST, {}, None) is None  # anonymous: read-only
    anonymous = guard.check(CREATE, {}, None)
    assert anonymous is not None and anonymous.code == grpc.StatusCode.PERMISSION_DENIED
    assert guard.check(CREATE, {SECRET_METADATA: SECRET.hex()}, None) is None  # the rack: admin
    strict = Guard(CONTROLLER_RULES, tokens={"A" * 20: "admin"}, anonymous=None)
    refused = strict.check(LIST, {}, None)
    assert refused is not None and refused.code == grpc.StatusCode.UNAUTHENTICATED
    # By certificate.
    tls = Guard(CONTROLLER_RULES, tls_rack="mini")
    assert tls.check(CREATE, {}, Identity("client", "admin")) is None
    by_cert = tls.check(CREATE, {}, Identity("client", "read-only"))
    assert by_cert is not None and "this caller has read-only" in by_cert.message


def test_identities_are_read_from_uri_sans_of_the_rack() -> None:
    assert identity_of_uris(["urn:fusionrack:mini:tray:compute:compute-01"], "mini") == Identity(
        "compute", "compute-01"
    )
    assert identity_of_uris(["urn:fusionrack:mini:controller"], "mini") == Identity("controller")
    assert identity_of_uris(["urn:fusionrack:mini:client:admin"], "mini") == Identity(
        "client", "admin"
    )
    assert identity_of_uris(["urn:fusionrack:other:controller"], "mini") is None
    assert identity_of_uris(["urn:fusionrack:mini:client:root"], "mini") is None


def test_secret_and_token_files_are_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "state" / "rack.secret"
    secret = generate_secret_file(path)
    assert len(secret) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert generate_secret_file(path) == secret == read_secret_file(path)  # kept across ups
    token = generate_token_file(tmp_path / "admin.token")
    assert stat.S_IMODE((tmp_path / "admin.token").stat().st_mode) == 0o600
    assert read_tokens({"admin": tmp_path / "admin.token"}) == {token: "admin"}
    (tmp_path / "bad.secret").write_text("xyz\n")
    with pytest.raises(ValueError, match="does not hold a rack secret"):
        read_secret_file(tmp_path / "bad.secret")
    with pytest.raises(ValueError, match="cannot read the rack secret"):
        read_secret_file(tmp_path / "missing")
    with pytest.raises(ValueError, match="unknown role 'root'"):
        read_tokens({"root": tmp_path / "admin.token"})
