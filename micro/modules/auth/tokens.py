"""JWTs: issued with the one pinned algorithm, verified strictly, secret claims sealed.

A token carries ``iss``, ``sub`` (the user id), ``sid`` (its session), ``jti`` (its own id),
``iat``, ``nbf``, ``exp`` and ``typ`` (``access`` or ``service``), plus public claims such as
``login``, ``name`` and ``roles``. Secret claims (QEWD's ``makeSecret``) travel in ``sec``,
sealed with AES-256-GCM under a key only services hold, with a fresh nonce per token and the
token's ``sub`` and ``jti`` as associated data, so a sealed value cannot be moved to another
token. Verification trusts nothing in the token's header: the algorithm is pinned by
settings, so ``alg: none`` or an HS256 token signed with a public key are refused.
"""

from __future__ import annotations

import base64
import binascii
import os
import time
import uuid
from typing import Any

import jwt
import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from micro.errors import ConfigError, UnauthorizedError
from micro.modules.auth.keys import KeyMaterial
from micro.settings import Settings

__all__ = ["MAX_TOKEN_BYTES", "Tokens", "refused"]

MAX_TOKEN_BYTES = 8192
"""Longer tokens are refused before any parsing."""

_REQUIRED = ["exp", "iat", "nbf", "sub", "jti", "typ", "iss"]


def refused(reason: str, message: str) -> UnauthorizedError:
    """An ``UnauthorizedError`` whose ``details["reason"]`` says why, in one stable word."""
    return UnauthorizedError(f"token refused: {message}", details={"reason": reason})


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Tokens:
    """Issues and verifies this deployment's tokens."""

    def __init__(self, keys: KeyMaterial, settings: Settings) -> None:
        self.keys = keys
        self.algorithm = keys.algorithm
        self.issuer = settings.auth_issuer
        self.leeway = settings.auth_leeway
        self.ttl = settings.auth_token_ttl
        self._box = AESGCM(keys.secret_claims_key) if keys.secret_claims_key else None

    def encode(self, claims: dict[str, Any]) -> str:
        """Sign ``claims`` as they are (no claim added or checked)."""
        if self.keys.signing_key is None:
            raise ConfigError(
                "this service holds only the public key: it can verify tokens, not issue them"
            )
        return jwt.encode(claims, self.keys.signing_key, algorithm=self.algorithm)

    def issue(
        self,
        *,
        subject: str,
        kind: str = "access",
        session: str | None = None,
        ttl: float | None = None,
        claims: dict[str, Any] | None = None,
        secrets: dict[str, Any] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """A new signed token and its claims."""
        now = int(time.time())
        token_id = uuid.uuid4().hex
        body: dict[str, Any] = {
            **(claims or {}),
            "iss": self.issuer,
            "sub": subject,
            "jti": token_id,
            "typ": kind,
            "iat": now,
            "nbf": now,
            "exp": now + int(ttl if ttl is not None else self.ttl),
        }
        if session is not None:
            body["sid"] = session
        if secrets:
            body["sec"] = self.seal(secrets, subject, token_id)
        return self.encode(body), body

    def decode(self, token: object) -> dict[str, Any]:
        """The claims of a valid token; ``UnauthorizedError`` (with a reason) otherwise."""
        if not isinstance(token, str) or not token:
            raise refused("missing", "no token in the request meta ('token')")
        if len(token) > MAX_TOKEN_BYTES:
            raise refused("malformed", f"longer than {MAX_TOKEN_BYTES} bytes")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise refused("malformed", "not a JWT") from None
        if header.get("alg") != self.algorithm:
            # Checked before PyJWT too: the refusal says why, and 'none' never gets near it.
            raise refused("algorithm", f"signed with {header.get('alg')!r}, not {self.algorithm}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.keys.verifying_key,
                algorithms=[self.algorithm],
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": _REQUIRED, "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise refused("expired", "expired") from None
        except jwt.InvalidSignatureError:
            raise refused("signature", "bad signature") from None
        except jwt.ImmatureSignatureError:
            raise refused("immature", "not valid yet") from None
        except jwt.InvalidIssuerError:
            raise refused("issuer", "issued by someone else") from None
        except jwt.MissingRequiredClaimError as error:
            raise refused("claims", f"missing the {error.claim!r} claim") from None
        except (jwt.DecodeError, binascii.Error, ValueError, TypeError):
            raise refused("malformed", "cannot be decoded") from None
        except jwt.InvalidTokenError as error:
            raise refused("invalid", type(error).__name__) from None
        if not isinstance(claims.get("sub"), str) or not isinstance(claims.get("jti"), str):
            raise refused("claims", "sub and jti must be strings")
        return claims

    # -- secret claims --------------------------------------------------------------------

    def seal(self, values: dict[str, Any], subject: str, token_id: str) -> str:
        """``values`` encrypted for services only (base64url of nonce and ciphertext)."""
        if self._box is None:
            raise ConfigError("secret claims need auth_secret_claims_key (production mode)")
        nonce = os.urandom(12)
        sealed = self._box.encrypt(nonce, orjson.dumps(values), f"{subject}\x1f{token_id}".encode())
        return _b64encode(nonce + sealed)

    def open(self, claims: dict[str, Any]) -> dict[str, Any]:
        """The secret claims of verified ``claims`` (empty when it has none)."""
        sealed = claims.get("sec")
        if sealed is None:
            return {}
        if self._box is None:
            raise refused("secrets", "this service has no key for secret claims")
        try:
            data = _b64decode(str(sealed))
            opened = self._box.decrypt(
                data[:12], data[12:], f"{claims['sub']}\x1f{claims['jti']}".encode()
            )
            values = orjson.loads(opened)
        except (InvalidTag, ValueError, binascii.Error, orjson.JSONDecodeError):
            raise refused("secrets", "secret claims cannot be opened") from None
        if not isinstance(values, dict):
            raise refused("secrets", "secret claims are not an object")
        return values
