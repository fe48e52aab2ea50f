"""Key material for tokens and secret claims, from settings or generated for development.

HS256/384/512 share one secret between every service. EdDSA, ES256 and RS256 use a key
pair: the issuer holds the private key, the other services only the public key, so they
can verify tokens but never make one. With no key configured a development key is written
under ``data_dir/auth/`` (and a warning logged); with ``production=True`` that is refused.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from micro.errors import ConfigError
from micro.settings import Settings

__all__ = ["HMAC_ALGORITHMS", "KeyMaterial", "generate_key_pair", "load_keys"]

_log = structlog.get_logger("micro.auth")

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
_MIN_SECRET_BYTES = 32
_warned: set[Path] = set()


@dataclass(frozen=True)
class KeyMaterial:
    """What this service can do with tokens: always verify, sign only with a signing key."""

    algorithm: str
    verifying_key: Any
    signing_key: Any | None
    secret_claims_key: bytes | None
    generated: Path | None = None
    """The development key file in use, when no key was configured."""


def _pem(value: str, what: str) -> bytes:
    if "-----BEGIN" in value:
        return value.encode()
    path = Path(value).expanduser()
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{what}: cannot read the key file {path}: {error}") from None


def _check_key_type(algorithm: str, key: Any, what: str) -> None:
    expected: tuple[type[Any], ...] = {
        "EdDSA": (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey),
        "ES256": (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey),
        "RS256": (rsa.RSAPrivateKey, rsa.RSAPublicKey),
    }[algorithm]
    if not isinstance(key, expected):
        raise ConfigError(f"{what} is a {type(key).__name__}, which cannot sign {algorithm}")
    if algorithm == "ES256" and key.curve.name != "secp256r1":
        raise ConfigError(f"{what}: ES256 needs a P-256 key, not {key.curve.name}")
    if algorithm == "RS256" and key.key_size < 2048:
        raise ConfigError(f"{what}: RS256 needs an RSA key of 2048 bits or more")


def _new_private_key(algorithm: str) -> Any:
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_once(path: Path, make: Any) -> bytes:
    """The content of ``path``, written by ``make()`` if nobody wrote it yet.

    The file appears atomically (written aside, then hard-linked into place), so services
    starting together all end up with the one key that won.
    """
    with contextlib.suppress(FileNotFoundError):
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(make())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path.read_bytes()


def _development_key(settings: Settings, name: str, make: Any) -> tuple[bytes, Path]:
    if settings.production:
        raise ConfigError(
            "production=True and no auth key configured: set MICRO_AUTH_SECRET (HS*) or "
            "MICRO_AUTH_PRIVATE_KEY / MICRO_AUTH_PUBLIC_KEY (EdDSA, ES256, RS256)"
        )
    path = (settings.data_dir / "auth" / name).resolve()
    data = _write_once(path, make)
    if path not in _warned:
        _warned.add(path)
        _log.warning(
            "auth: no key configured, using a development key; set one for production",
            key_file=str(path),
            algorithm=settings.auth_algorithm,
        )
    return data, path


def _signing_keys(settings: Settings) -> tuple[Any, Any | None, Path | None]:
    algorithm = settings.auth_algorithm
    private = settings.auth_private_key
    public = settings.auth_public_key
    if algorithm in HMAC_ALGORITHMS:
        if private is not None or public is not None:
            raise ConfigError(
                f"auth_algorithm {algorithm} takes auth_secret, not a key pair; "
                "set auth_algorithm to EdDSA, ES256 or RS256 to use keys"
            )
        if settings.auth_secret is not None:
            secret = settings.auth_secret.get_secret_value().encode()
            if len(secret) < _MIN_SECRET_BYTES:
                raise ConfigError(f"auth_secret must be at least {_MIN_SECRET_BYTES} bytes")
            return secret, secret, None
        data, path = _development_key(
            settings, f"jwt-{algorithm}.secret", lambda: secrets.token_urlsafe(64).encode()
        )
        return data.strip(), data.strip(), path
    if settings.auth_secret is not None:
        raise ConfigError(f"auth_algorithm {algorithm} uses a key pair, not auth_secret")
    generated = None
    signing = None
    if private is not None:
        signing = _load_private(_pem(private.get_secret_value(), "auth_private_key"))
    elif public is None:
        data, generated = _development_key(
            settings,
            f"jwt-{algorithm}.pem",
            lambda: _new_private_key(algorithm).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        signing = _load_private(data)
    if signing is not None:
        _check_key_type(algorithm, signing, "auth_private_key")
        verifying = signing.public_key()
        if public is not None and _public_bytes(_load_public(public)) != _public_bytes(verifying):
            raise ConfigError("auth_public_key is not the public half of auth_private_key")
        return verifying, signing, generated
    verifying = _load_public(public or "")
    _check_key_type(algorithm, verifying, "auth_public_key")
    return verifying, None, None


def _load_private(data: bytes) -> Any:
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"auth_private_key is not an unencrypted PEM key: {error}") from None


def _load_public(value: str) -> Any:
    try:
        return serialization.load_pem_public_key(_pem(value, "auth_public_key"))
    except ValueError as error:
        raise ConfigError(f"auth_public_key is not a PEM public key: {error}") from None


def _public_bytes(key: Any) -> bytes:
    data: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


def _secret_claims_key(settings: Settings) -> bytes | None:
    configured = settings.auth_secret_claims_key
    if configured is not None:
        text = configured.get_secret_value().strip()
        try:
            key = base64.urlsafe_b64decode(
                text.replace("+", "-").replace("/", "_") + "=" * (-len(text) % 4)
            )
        except ValueError:
            raise ConfigError("auth_secret_claims_key is not base64") from None
        if len(key) != 32:
            raise ConfigError("auth_secret_claims_key must be 32 bytes (base64 of 32 bytes)")
        return key
    if settings.production:
        return None  # secret claims are off until a key is configured
    data, _ = _development_key(
        settings, "secret-claims.key", lambda: base64.urlsafe_b64encode(secrets.token_bytes(32))
    )
    return base64.urlsafe_b64decode(data.strip())


def load_keys(settings: Settings) -> KeyMaterial:
    """The key material ``settings`` describe; ``ConfigError`` saying what is wrong."""
    verifying, signing, generated = _signing_keys(settings)
    return KeyMaterial(
        algorithm=settings.auth_algorithm,
        verifying_key=verifying,
        signing_key=signing,
        secret_claims_key=_secret_claims_key(settings),
        generated=generated,
    )


def generate_key_pair(algorithm: str = "EdDSA") -> tuple[str, str]:
    """A new (private PEM, public PEM) pair for ``algorithm``: for tests and ``micro`` setup."""
    key = _new_private_key(algorithm)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private.decode(), public.decode()
