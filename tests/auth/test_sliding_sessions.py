"""Sliding sessions: a token past half its lifetime is answered with a fresh one, in the
reply's Micro-Token header, never for a revoked or expired session, never beyond it."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from micro import Micro, UnauthorizedError
from micro.gateway import Gateway, GatewaySettings, Route
from tests.auth.support import log_in, sign_up


def aged(service: Micro, token: str, *, by: float) -> str:
    """The same token, issued ``by`` seconds earlier (so it is further into its lifetime)."""
    tokens = service.modules.get("auth").tokens
    claims: dict[str, Any] = tokens.decode(token)
    for claim in ("iat", "nbf", "exp"):
        claims[claim] = int(claims[claim] - by)
    return str(tokens.encode(claims))


async def test_a_token_past_half_its_lifetime_gets_a_fresh_one(make_service, auth_settings) -> None:
    service = make_service(auth_sliding_sessions=True, auth_token_ttl=600)
    async with service, Micro(auth_settings, service="client") as client:
        await sign_up(client)
        token = await log_in(client)
        old = aged(service, token, by=400)  # 400 s into its 600 s
        reply = await client.request("auth whoami", meta={"token": old})
        assert reply.value["login"] == "ann"
        assert reply.token is not None
        tokens = service.modules.get("auth").tokens
        fresh, before = tokens.decode(reply.token), tokens.decode(old)
        assert fresh["sid"] == before["sid"]
        assert fresh["exp"] > before["exp"]
        assert (await client.act("auth whoami", meta={"token": reply.token}))["login"] == "ann"


async def test_a_young_token_does_not_slide(make_service, auth_settings) -> None:
    service = make_service(auth_sliding_sessions=True, auth_token_ttl=600)
    async with service, Micro(auth_settings, service="client") as client:
        await sign_up(client)
        token = await log_in(client)
        reply = await client.request("auth whoami", meta={"token": aged(service, token, by=100)})
        assert reply.token is None


async def test_sessions_do_not_slide_unless_asked(make_service, auth_settings) -> None:
    service = make_service(auth_token_ttl=600)
    async with service, Micro(auth_settings, service="client") as client:
        await sign_up(client)
        token = await log_in(client)
        reply = await client.request("auth whoami", meta={"token": aged(service, token, by=500)})
        assert reply.token is None


async def test_a_revoked_session_never_slides(make_service, auth_settings) -> None:
    service = make_service(auth_sliding_sessions=True, auth_token_ttl=600)
    async with service, Micro(auth_settings, service="client") as client:
        await sign_up(client)
        token = await log_in(client)
        old = aged(service, token, by=500)
        await client.act("auth logout", meta={"token": token})
        with pytest.raises(UnauthorizedError) as refused:
            await client.request("auth whoami", meta={"token": old})
        assert refused.value.details["reason"] == "revoked"


async def test_a_slid_token_never_outlives_its_session(make_service, auth_settings) -> None:
    service = make_service(auth_sliding_sessions=True, auth_token_ttl=600, auth_session_ttl=200)
    async with service, Micro(auth_settings, service="client") as client:
        await sign_up(client)
        token = await log_in(client)
        reply = await client.request("auth whoami", meta={"token": aged(service, token, by=500)})
        assert reply.token is not None
        fresh = service.modules.get("auth").tokens.decode(reply.token)
        assert fresh["exp"] <= time.time() + 200 + 1  # the session ends within 200 s


async def test_a_session_carries_the_fresh_token_on(make_service, auth_settings) -> None:
    service = make_service(auth_sliding_sessions=True, auth_token_ttl=600)
    async with service, Micro(auth_settings, service="client") as client:
        await sign_up(client)
        old = aged(service, await log_in(client), by=400)
        session = client.session(meta={"token": old})
        await session.act("auth whoami")
        assert session.meta["token"] != old
        assert (await session.request("auth whoami")).token is None  # the new one is young


async def test_the_gateway_hands_the_fresh_token_over_in_x_micro_token(
    make_service, auth_settings, store
) -> None:
    service = make_service(auth_sliding_sessions=True, auth_token_ttl=600)
    async with service, Micro(auth_settings, service="client") as client:
        await sign_up(client)
        old = aged(service, await log_in(client), by=400)
        gateway = Gateway(
            Micro(auth_settings, service="gateway"),
            GatewaySettings(port=0, required_services=["accounts"]),
            routes=[Route("GET", "/me", "auth whoami")],
            event_store=store,
        )
        await gateway.start()
        try:
            async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
                slid = await http.get("/me", headers={"Authorization": f"Bearer {old}"})
                fresh = slid.headers["X-Micro-Token"]
                again = await http.get("/me", headers={"Authorization": f"Bearer {fresh}"})
        finally:
            await gateway.stop()
            await gateway.micro.close()
    assert slid.status_code == 200
    assert again.status_code == 200
    assert "X-Micro-Token" not in again.headers
