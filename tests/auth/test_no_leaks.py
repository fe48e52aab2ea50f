"""No password, hash input or token in any stored event or log line of a full auth scenario."""

from __future__ import annotations

import io
from collections.abc import Iterator

import orjson
import pytest
import structlog

from micro import Context, Micro, UnauthorizedError, ValidationError
from micro.log import configure_logging
from tests.auth.support import PASSWORD, log_in, sign_up

NEW_PASSWORD = "Brand-New-Secret-991"
WRONG_PASSWORD = "Wrong-Guess-Password-5"
ADMIN_PASSWORD = "Adm1n-Strong-Pass!"


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    captured = io.StringIO()
    configure_logging("debug", "json", captured, force=True)
    yield captured
    configure_logging(force=True)


async def test_a_full_auth_scenario_leaks_no_password_and_no_token(
    make_service, auth_settings, store, logs
) -> None:
    service = make_service(auth_admin_login="root", auth_admin_password=ADMIN_PASSWORD)
    auth = service.modules.get("auth")
    log = structlog.get_logger("micro.test.careless")

    async def careless(payload: dict, ctx: Context) -> str:
        # A handler logging everything it got, as real code sometimes does.
        log.info("got a request", payload=payload, meta=ctx.meta, user=ctx.user.public())
        log.debug(f"raw meta {ctx.meta}")
        return "ok"

    async def failing(payload: dict, ctx: Context) -> None:
        raise RuntimeError(f"could not use {ctx.meta['token']} with {payload}")

    service.add("careless", auth.required(careless))
    service.add("failing", auth.required(failing))
    tokens: list[str] = []
    async with service, Micro(auth_settings, service="client") as client:
        await sign_up(client)
        with pytest.raises(UnauthorizedError):
            await log_in(client, password=WRONG_PASSWORD)
        with pytest.raises(ValidationError):
            await sign_up(client, login="bob", password="tiny-pw")
        laptop = await log_in(client, device="laptop")
        phone = await log_in(client, device="phone")
        root = await log_in(client, login="root", password=ADMIN_PASSWORD)
        tokens += [laptop, phone, root]
        await client.act(
            "auth grant role", {"login": "ann", "role": "teller"}, meta={"token": root}
        )
        await client.act("careless", {"password": PASSWORD, "note": laptop}, meta={"token": laptop})
        with pytest.raises(Exception, match="internal"):
            await client.act("failing", {"password": PASSWORD}, meta={"token": laptop})
        refreshed = (await client.act("auth refresh", meta={"token": laptop}))["token"]
        tokens.append(refreshed)
        await client.act(
            "auth change password",
            {
                "current_password": PASSWORD,
                "new_password": NEW_PASSWORD,
                "new_password_confirmation": NEW_PASSWORD,
            },
            meta={"token": refreshed},
        )
        tokens.append(await log_in(client, password=NEW_PASSWORD, device="tablet"))
        tokens.append(auth.service_token())
        await client.act("auth logout", meta={"token": refreshed})

    events = [event async for event in store.read_all()]
    stored = b"\n".join(
        orjson.dumps({"data": event.data, "metadata": event.metadata}) for event in events
    ).decode()
    logged = logs.getvalue()
    assert len(events) >= 8
    assert "got a request" in logged
    assert "handler failed" in logged
    for secret in (PASSWORD, NEW_PASSWORD, WRONG_PASSWORD, ADMIN_PASSWORD, "tiny-pw", *tokens):
        assert secret not in stored, "a secret reached the event store"
        assert secret not in logged, "a secret reached the logs"
    for token in tokens:
        for part in token.split("."):  # not even the signature or the claims on their own
            if len(part) > 20:
                assert part not in logged
                assert part not in stored
    hashes = [e.data["password_hash"] for e in events if "password_hash" in e.data]
    assert hashes
    assert all(h.startswith("$argon2id$") for h in hashes)
