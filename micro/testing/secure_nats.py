"""Test support for secured NATS: certificates, operator-mode JWTs, a secured nats-server.

Everything is made at test time, nothing is checked in:

- ``make_certificates(folder)``: a CA, a server certificate for 127.0.0.1, a client
  certificate, and a second CA that signed nothing of ours (the "wrong CA"), with
  ``cryptography``;
- ``Operator``: an operator, one account and its users as NKeys (``nkeys``) and the JWTs
  that nats-server's operator mode reads, signed the way ``nsc`` signs them
  (``ed25519-nkey``); ``Operator.creds(...)`` writes a user's ``.creds`` file;
- ``secured_server(...)``: a ``NatsServer`` (JetStream, free 127.0.0.1 port) with TLS,
  users and permissions, or an operator with a memory resolver.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nkeys
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from micro._nats_server import NatsServer

__all__ = [
    "Certificates",
    "NatsUser",
    "Operator",
    "make_certificates",
    "new_nkey",
    "secured_server",
    "server_config",
]


# -- certificates ------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    """PEM files in one folder."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    """A CA that signed nothing here: trusting only it, a client rejects the server."""


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _authority(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    name: str,
    authority: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    usage: x509.ObjectIdentifier,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = authority
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def make_certificates(folder: Path) -> Certificates:
    """A CA, a server certificate for 127.0.0.1/localhost, a client one, and a foreign CA."""
    folder.mkdir(parents=True, exist_ok=True)
    authority = _authority("micro test CA")
    server = _leaf("127.0.0.1", authority, ExtendedKeyUsageOID.SERVER_AUTH)
    client = _leaf("micro client", authority, ExtendedKeyUsageOID.CLIENT_AUTH)
    other, _ = _authority("another CA")
    return Certificates(
        ca=_write_cert(authority[0], folder / "ca.pem"),
        server_cert=_write_cert(server[0], folder / "server.pem"),
        server_key=_write_key(server[1], folder / "server-key.pem"),
        client_cert=_write_cert(client[0], folder / "client.pem"),
        client_key=_write_key(client[1], folder / "client-key.pem"),
        other_ca=_write_cert(other, folder / "other-ca.pem"),
    )


# -- operator mode -----------------------------------------------------------------------


def new_nkey(prefix: int) -> nkeys.KeyPair:
    """A fresh NKey pair of one type (``nkeys.PREFIX_BYTE_USER``, ``..._ACCOUNT``...)."""
    import os

    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def _new(prefix: int) -> nkeys.KeyPair:
    return new_nkey(prefix)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _jwt(claims: dict[str, Any], signer: nkeys.KeyPair) -> str:
    """A NATS JWT: ``ed25519-nkey`` header, claims with their ``jti``, the NKey signature."""
    claims = {**claims, "iat": int(time.time())}
    claims["jti"] = (
        base64.b32encode(hashlib.sha256(orjson.dumps(claims)).digest()).decode().rstrip("=")
    )
    header = _b64(orjson.dumps({"typ": "JWT", "alg": "ed25519-nkey"}))
    payload = _b64(orjson.dumps(claims))
    signature = signer.sign(f"{header}.{payload}".encode())
    return f"{header}.{payload}.{_b64(signature)}"


def _nanoseconds(duration: str) -> int:
    """``"10m"`` (a server config duration: ms, s, m or h) in nanoseconds, as JWTs want."""
    units = {"ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
    for unit in ("ms", "s", "m", "h"):
        if duration.endswith(unit):
            return int(float(duration[: -len(unit)]) * units[unit])
    raise ValueError(f"{duration!r} is not a duration such as 500ms, 30s, 10m or 1h")


def _public(key: nkeys.KeyPair) -> str:
    return str(key.public_key.decode())


@dataclass
class NatsUser:
    """One user of the account: its NKey, JWT and ``.creds`` file."""

    name: str
    key: nkeys.KeyPair
    jwt: str
    creds: Path

    @property
    def seed(self) -> str:
        return str(self.key.seed.decode())


@dataclass
class Operator:
    """An operator with one account (JetStream enabled) that signs its users."""

    name: str = "micro-test"
    operator_key: nkeys.KeyPair = field(default_factory=lambda: _new(nkeys.PREFIX_BYTE_OPERATOR))
    account_key: nkeys.KeyPair = field(default_factory=lambda: _new(nkeys.PREFIX_BYTE_ACCOUNT))
    system_key: nkeys.KeyPair = field(default_factory=lambda: _new(nkeys.PREFIX_BYTE_ACCOUNT))
    """The system account: JetStream will not start in operator mode without one."""

    @property
    def operator_jwt(self) -> str:
        return _jwt(
            {
                "iss": _public(self.operator_key),
                "sub": _public(self.operator_key),
                "name": self.name,
                "nats": {
                    "type": "operator",
                    "version": 2,
                    "system_account": _public(self.system_key),
                },
            },
            self.operator_key,
        )

    @property
    def account_public(self) -> str:
        return _public(self.account_key)

    @property
    def account_jwt(self) -> str:
        unlimited = {
            "subs": -1,
            "data": -1,
            "payload": -1,
            "imports": -1,
            "exports": -1,
            "wildcards": True,
            "conn": -1,
            "leaf": -1,
            "mem_storage": -1,
            "disk_storage": -1,
            "streams": -1,
            "consumer": -1,
        }
        return _jwt(
            {
                "iss": _public(self.operator_key),
                "sub": self.account_public,
                "name": "micro",
                "nats": {"type": "account", "version": 2, "limits": unlimited},
            },
            self.operator_key,
        )

    @property
    def system_jwt(self) -> str:
        return _jwt(
            {
                "iss": _public(self.operator_key),
                "sub": _public(self.system_key),
                "name": "SYS",
                "nats": {"type": "account", "version": 2},
            },
            self.operator_key,
        )

    def user(self, name: str, folder: Path, permissions: dict[str, Any] | None = None) -> NatsUser:
        """A user of the account, with a nats-server permissions block or everything."""
        key = new_nkey(nkeys.PREFIX_BYTE_USER)
        claims: dict[str, Any] = {"type": "user", "version": 2, "subs": -1, "data": -1}
        claims["payload"] = -1
        if permissions is not None:
            claims["pub"] = permissions.get("publish", {})
            claims["sub"] = permissions.get("subscribe", {})
            responses = permissions.get("allow_responses")
            if responses is True:
                claims["resp"] = {"max": 1, "ttl": 0}
            elif isinstance(responses, dict):
                claims["resp"] = {
                    "max": int(responses.get("max", 1)),
                    "ttl": _nanoseconds(str(responses.get("expires", "0s"))),
                }
        token = _jwt(
            {"iss": self.account_public, "sub": _public(key), "name": name, "nats": claims},
            self.account_key,
        )
        folder.mkdir(parents=True, exist_ok=True)
        creds = folder / f"{name}.creds"
        creds.write_text(
            "-----BEGIN NATS USER JWT-----\n"
            f"{token}\n"
            "------END NATS USER JWT------\n\n"
            "-----BEGIN USER NKEY SEED-----\n"
            f"{key.seed.decode()}\n"
            "------END USER NKEY SEED------\n"
        )
        creds.chmod(0o600)
        return NatsUser(name=name, key=key, jwt=token, creds=creds)

    def server_config(self) -> str:
        """The operator-mode lines of a nats-server config (memory resolver, preloaded)."""
        system = _public(self.system_key)
        return (
            f"operator: {self.operator_jwt}\n"
            f"system_account: {system}\n"
            "resolver: MEMORY\n"
            f"resolver_preload: {{ {self.account_public}: {self.account_jwt}, "
            f"{system}: {self.system_jwt} }}\n"
        )


# -- a secured server --------------------------------------------------------------------


def server_config(
    *,
    certificates: Certificates | None = None,
    verify_clients: bool = False,
    handshake_first: bool = False,
    users: list[dict[str, Any]] | None = None,
    operator: Operator | None = None,
) -> str:
    """nats-server config lines for TLS, users with permissions, or an operator."""
    lines: list[str] = []
    if certificates is not None:
        tls = {
            "cert_file": str(certificates.server_cert),
            "key_file": str(certificates.server_key),
            "ca_file": str(certificates.ca),
            "verify": verify_clients,
        }
        if handshake_first:
            tls["handshake_first"] = True
        lines.append(f"tls: {orjson.dumps(tls).decode()}")
    if users is not None:
        lines.append(f"authorization: {orjson.dumps({'users': users}).decode()}")
    if operator is not None:
        lines.append(operator.server_config())
    return "\n".join(lines) + "\n"


def secured_server(store_dir: Path, config: str) -> NatsServer:
    """A started ``NatsServer`` (JetStream, free 127.0.0.1 port) with ``config`` added."""
    return NatsServer(store_dir=store_dir, extra_config=config).start()
