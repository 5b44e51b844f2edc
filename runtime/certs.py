"""A rack's certificates for mutual TLS (`fusionctl rack up --tls`): a CA and one certificate
per component, each naming who it is in a SAN URI (`fusionrack.auth.identity_of_uris`).

Layout of the directory (`tls/` in the state dir): `ca.pem` and `ca.key`, then `<name>.pem`
and `<name>.key` for `controller`, every tray by its name, `client-admin` and
`client-read-only`. Keys are EC P-256 (fast to make and to handshake) and 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CLIENT_ROLES", "make_rack_certificates"]

CLIENT_ROLES = ("admin", "read-only")
VALID_DAYS = 365


def _write(path: Path, data: bytes, private: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _sans(uri: str, hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    for host in dict.fromkeys(["localhost", "127.0.0.1", *hosts]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def make_rack_certificates(
    directory: Path, rack: str, trays: Iterable[tuple[str, str]], hosts: Iterable[str] = ()
) -> None:
    """Make the CA and every component's certificate of rack `rack` in `directory`, unless its
    CA is already there (a rack keeps its certificates across down and up). `trays`: (name,
    "compute" or "switch"); `hosts`: the names and addresses the servers are reached at."""
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / "ca.pem").exists():
        return
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"fusionrack {rack} CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    hosts = list(hosts)
    components = [("controller", f"urn:fusionrack:{rack}:controller")]
    components += [(name, f"urn:fusionrack:{rack}:tray:{kind}:{name}") for name, kind in trays]
    components += [(f"client-{role}", f"urn:fusionrack:{rack}:client:{role}")
                   for role in CLIENT_ROLES]  # fmt: skip
    for name, uri in components:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(_sans(uri, hosts)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write(directory / f"{name}.key", _key_pem(key), private=True)
        _write(directory / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM), False)
    _write(directory / "ca.key", _key_pem(ca_key), private=True)
    # Last: its presence says the directory is complete.
    _write(directory / "ca.pem", ca.public_bytes(serialization.Encoding.PEM), private=False)
