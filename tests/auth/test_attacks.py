"""Bad input and attacks: each refused with its typed error, and nothing stored for it."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import jwt
import orjson
import pytest

from micro import Micro, UnauthorizedError, ValidationError
from micro.eventstore.memory import MemoryEventStore
from micro.modules.auth import LockedOutError
from tests.auth.support import PASSWORD, log_in, sign_up


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


class Scene:
    """A service with the auth module, a client, a logged-in user and the store."""

    def __init__(self, service: Micro, client: Micro, token: str, store: MemoryEventStore):
        self.service = service
        self.client = client
        self.token = token
        self.store = store
        self.auth = service.modules.get("auth")

    async def refused_logout(self, token: object) -> UnauthorizedError:
        """Try a command that stores an event with ``token``: it must be refused, store nothing."""
        before = await self.store.last_position()
        with pytest.raises(UnauthorizedError) as refused:
            await self.client.act("auth logout", meta={"token": token})
        assert await self.store.last_position() == before
        return refused.value


@pytest.fixture
async def scene(make_service, auth_settings, store) -> AsyncIterator[Scene]:
    service = make_service()
    async with service, Micro(auth_settings, service="client") as client:
        await sign_up(client)
        token = await log_in(client)
        yield Scene(service, client, token, store)


async def test_a_token_with_alg_none_is_refused(scene: Scene) -> None:
    claims = claims_of(scene.token)
    forged = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."
    assert (await scene.refused_logout(forged)).details["reason"] == "algorithm"


async def test_a_token_claiming_another_algorithm_is_refused(scene: Scene) -> None:
    forged = jwt.encode(claims_of(scene.token), "x" * 64, algorithm="HS512")
    assert (await scene.refused_logout(forged)).details["reason"] == "algorithm"


async def test_a_tampered_token_is_refused(scene: Scene) -> None:
    header, _body, signature = scene.token.split(".")
    claims = {**claims_of(scene.token), "roles": ["admin"]}
    tampered = f"{header}.{b64(claims)}.{signature}"
    assert (await scene.refused_logout(tampered)).details["reason"] == "signature"


async def test_an_expired_token_is_refused(scene: Scene) -> None:
    past = int(time.time()) - 3600
    claims = {**claims_of(scene.token), "iat": past - 900, "nbf": past - 900, "exp": past}
    expired = scene.auth.tokens.encode(claims)
    assert (await scene.refused_logout(expired)).details["reason"] == "expired"


async def test_a_token_signed_with_another_key_is_refused(scene: Scene) -> None:
    other = jwt.encode(claims_of(scene.token), "another-secret-" * 4, algorithm="HS256")
    assert (await scene.refused_logout(other)).details["reason"] == "signature"


async def test_a_token_of_an_ended_session_is_refused(scene: Scene) -> None:
    await scene.client.act("auth logout", meta={"token": scene.token})
    assert (await scene.refused_logout(scene.token)).details["reason"] == "revoked"


async def test_a_validly_signed_token_for_an_unknown_user_is_refused(scene: Scene) -> None:
    claims = {**claims_of(scene.token), "sub": "u" + uuid.uuid4().hex, "sid": uuid.uuid4().hex}
    forged = scene.auth.tokens.encode(claims)
    assert (await scene.refused_logout(forged)).details["reason"] == "unknown_user"


async def test_a_token_moved_to_another_users_session_is_refused(
    scene: Scene,
) -> None:
    await sign_up(scene.client, login="bob")
    bob = await log_in(scene.client, login="bob")
    claims = {**claims_of(scene.token), "sid": claims_of(bob)["sid"]}
    forged = scene.auth.tokens.encode(claims)
    assert (await scene.refused_logout(forged)).details["reason"] == "revoked"


@pytest.mark.parametrize(
    "token",
    [
        "eyJ!!!.eyJzdWIiOiJ4In0.c2ln",
        "not a token at all",
        "a.b.c",
        "eyJhbGciOiJIUzI1NiJ9.%%%%.AAAA",
        "",
        12345,
        {"alg": "none"},
        "eyJhbGciOiJIUzI1NiJ9." + "A" * 10_000 + ".sig",
    ],
)
async def test_malformed_tokens_are_refused(scene: Scene, token: object) -> None:
    refused = await scene.refused_logout(token)
    assert refused.details["reason"] in {"malformed", "missing"}


async def test_a_token_missing_a_required_claim_is_refused(scene: Scene) -> None:
    claims = claims_of(scene.token)
    del claims["jti"]
    assert (await scene.refused_logout(scene.auth.tokens.encode(claims))).details[
        "reason"
    ] == "claims"


async def test_a_token_from_another_issuer_is_refused(scene: Scene) -> None:
    claims = {**claims_of(scene.token), "iss": "someone-else"}
    assert (await scene.refused_logout(scene.auth.tokens.encode(claims))).details[
        "reason"
    ] == "issuer"


async def test_an_oversized_password_is_refused_before_hashing(scene: Scene) -> None:
    before = await scene.store.last_position()
    for size in (300, 5000):  # over the settings bound, then over the schema's hard cap
        huge = "Aa1-" * (size // 4)
        with pytest.raises(ValidationError) as refused:
            await sign_up(scene.client, login=f"huge{size}", password=huge)
        assert refused.value.fields[0]["field"] == "password"
        with pytest.raises(ValidationError) as refused:
            await log_in(scene.client, password=huge)
        assert refused.value.fields[0]["field"] == "password"
    assert await scene.store.last_position() == before


async def test_brute_force_logins_hit_a_growing_lockout(make_service, auth_settings, store) -> None:
    service = make_service(auth_lockout_attempts=3, auth_lockout_seconds=2, auth_lockout_factor=5)
    async with service, Micro(auth_settings, service="client") as client:
        await sign_up(client)
        for _ in range(3):
            with pytest.raises(UnauthorizedError) as wrong:
                await log_in(client, password="Guess-Guess-1")
            assert not isinstance(wrong.value, LockedOutError)
        stored = await store.last_position()
        with pytest.raises(LockedOutError) as locked:
            await log_in(client)  # even the right password is refused while locked
        assert await store.last_position() == stored  # a refused attempt stores nothing
        assert locked.value.status == 429
        assert locked.value.details["retry_after"] >= 1
        # Wait for the first lockout to pass (a deadline, not a guess), then fail again.
        deadline = time.monotonic() + 10
        while True:
            try:
                await log_in(client, password="Guess-Guess-1")
            except LockedOutError:
                assert time.monotonic() < deadline, "the first lockout never ended"
                continue
            except UnauthorizedError:
                break
        for _ in range(2):
            with pytest.raises(UnauthorizedError):
                await log_in(client, password="Guess-Guess-1")
        with pytest.raises(LockedOutError):
            await log_in(client)
    failures = [e async for e in store.read_all() if e.type == "LoginFailed"]
    lockouts = [e for e in failures if e.data["locked_until"] is not None]
    assert len(lockouts) == 2

    def length(event: Any) -> float:
        until = event.data["locked_until"].replace("Z", "+00:00")
        recorded = event.metadata["recorded_at"].replace("Z", "+00:00")
        from datetime import datetime

        return (datetime.fromisoformat(until) - datetime.fromisoformat(recorded)).total_seconds()

    assert length(lockouts[1]) > 3 * length(lockouts[0])


async def test_unknown_logins_lock_out_like_known_ones(make_service, auth_settings, store) -> None:
    service = make_service(auth_lockout_attempts=2)
    async with service, Micro(auth_settings, service="client") as client:
        for _ in range(2):
            with pytest.raises(UnauthorizedError):
                await log_in(client, login="ghost")
        with pytest.raises(LockedOutError):
            await log_in(client, login="ghost")
        assert await store.last_position() == 0


async def test_a_login_payload_of_the_wrong_shape_is_a_validation_error(scene: Scene) -> None:
    before = await scene.store.last_position()
    for payload in ({"login": "ann"}, {"login": ["ann"], "password": PASSWORD}, "ann", None):
        with pytest.raises(ValidationError):
            await scene.client.act("auth login", payload)
    assert await scene.store.last_position() == before
