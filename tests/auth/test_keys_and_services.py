"""Keys from settings or generated, production refusals, and tokens accepted across services."""

from __future__ import annotations

import time

import jwt
import pytest
from structlog.testing import capture_logs

from micro import ConfigError, Micro, Settings, UnauthorizedError
from micro.modules.auth.keys import generate_key_pair, load_keys
from tests.auth.support import log_in, sign_up


def settings_with(base: Settings, **changes: object) -> Settings:
    return Settings(**{**base.model_dump(), **changes})


async def test_production_refuses_to_start_without_a_key(make_service) -> None:
    service = make_service(auth_secret=None, production=True)
    with pytest.raises(ConfigError, match="production"):
        await service.open()
    assert not service.serving


def test_development_generates_one_key_under_the_data_dir_and_warns(
    auth_settings: Settings,
) -> None:
    settings = settings_with(auth_settings, auth_secret=None)
    with capture_logs() as logs:
        first, second = load_keys(settings), load_keys(settings)
    assert first.generated is not None
    assert first.generated.is_relative_to(settings.data_dir.resolve())
    assert first.generated.stat().st_mode & 0o077 == 0  # readable by its owner only
    assert first.signing_key == second.signing_key
    assert first.secret_claims_key == second.secret_claims_key
    warnings = [line for line in logs if "development key" in line["event"]]
    assert [line["log_level"] for line in warnings] == ["warning", "warning"]  # jwt, claims


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"auth_secret": "too short"}, "at least 32 bytes"),
        ({"auth_public_key": generate_key_pair()[1]}, "takes auth_secret"),
        ({"auth_algorithm": "EdDSA"}, "not auth_secret"),
        (
            {"auth_algorithm": "EdDSA", "auth_secret": None, "auth_public_key": "-----BEGIN x"},
            "PEM",
        ),
        (
            {
                "auth_algorithm": "ES256",
                "auth_secret": None,
                "auth_public_key": generate_key_pair()[1],
            },
            "cannot sign ES256",
        ),
        (
            {
                "auth_algorithm": "EdDSA",
                "auth_secret": None,
                "auth_private_key": generate_key_pair()[0],
                "auth_public_key": generate_key_pair()[1],
            },
            "not the public half",
        ),
        ({"auth_secret_claims_key": "c2hvcnQ="}, "32 bytes"),
    ],
)
def test_wrong_key_settings_are_reported(auth_settings, changes, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_keys(settings_with(auth_settings, **changes))


def test_production_without_a_secret_claims_key_turns_secret_claims_off(auth_settings) -> None:
    keys = load_keys(settings_with(auth_settings, production=True))
    assert keys.secret_claims_key is None


async def test_two_services_sharing_a_secret_accept_each_others_tokens(
    make_service, auth_settings
) -> None:
    accounts = make_service("accounts")
    shop = make_service("shop", auth_commands=False)
    shop_auth = shop.modules.get("auth")
    shop.add("basket", shop_auth.required(lambda payload, ctx: ctx.user.public()))
    accounts_auth = accounts.modules.get("auth")
    accounts.add("ledger", accounts_auth.required(lambda payload, ctx: ctx.user.id))
    async with accounts, shop, Micro(auth_settings, service="client") as client:
        user = await sign_up(client)
        token = await log_in(client)
        # A token issued by accounts works at the shop...
        assert (await client.act("basket", meta={"token": token}))["id"] == user["id"]
        # ...and the shop's own (service) token works at accounts.
        assert await client.act("ledger", meta=shop_auth.service_meta()) == "service:shop"
        # A logout at accounts reaches the shop: its token is refused there too.
        await client.act("auth logout", meta={"token": token})
        deadline = time.monotonic() + 5
        reason = None
        while reason is None:
            try:
                await client.act("basket", meta={"token": token})
            except UnauthorizedError as refused:
                reason = refused.details["reason"]
            assert time.monotonic() < deadline, "the shop kept accepting a revoked token"
        assert reason == "revoked"


async def test_a_service_holding_only_the_public_key_verifies_but_cannot_sign(
    make_service, auth_settings
) -> None:
    private, public = generate_key_pair("EdDSA")
    pair = {"auth_algorithm": "EdDSA", "auth_secret": None}
    accounts = make_service("accounts", **pair, auth_private_key=private)
    shop = make_service("shop", **pair, auth_public_key=public, auth_commands=False)
    shop_auth = shop.modules.get("auth")
    shop.add("basket", shop_auth.required(lambda payload, ctx: ctx.user.login))
    async with accounts, shop, Micro(auth_settings, service="client") as client:
        await sign_up(client)
        token = await log_in(client)
        assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
        assert await client.act("basket", meta={"token": token}) == "ann"
        with pytest.raises(ConfigError, match="only the public key"):
            shop_auth.service_token()
        # An HS256 token "signed" with the public key (the classic confusion) is refused.
        claims = jwt.decode(token, options={"verify_signature": False})
        confused = jwt.encode(claims, "x" * 64, algorithm="HS256")
        with pytest.raises(UnauthorizedError) as refused:
            await client.act("basket", meta={"token": confused})
        assert refused.value.details["reason"] == "algorithm"


async def test_a_service_with_another_secret_refuses_the_tokens(
    make_service, auth_settings
) -> None:
    accounts = make_service("accounts")
    stranger = make_service(
        "stranger", auth_commands=False, auth_secret="a-completely-different-secret-0123456789"
    )
    stranger.add("door", stranger.modules.get("auth").required(lambda: "open"))
    async with accounts, stranger, Micro(auth_settings, service="client") as client:
        await sign_up(client)
        token = await log_in(client)
        with pytest.raises(UnauthorizedError) as refused:
            await client.act("door", meta={"token": token})
    assert refused.value.details["reason"] == "signature"


def test_the_sheets_are_found_in_the_wheel_layout_first_then_the_repository(tmp_path) -> None:
    from micro.modules.auth.module import sheets_dir

    package = tmp_path / "site-packages" / "micro"
    (package / "_sheets" / "rules").mkdir(parents=True)
    with pytest.raises(ConfigError, match="sheets are missing"):
        sheets_dir(package)
    (package / "_sheets" / "rules" / "auth_login_rule.py").write_text("")
    assert sheets_dir(package) == package / "_sheets"
    repository = sheets_dir()
    assert (repository / "rules" / "auth_signup_rule.py").is_file()
    assert (repository / "models" / "auth_user_model.py").is_file()


async def test_only_one_service_of_a_process_serves_the_auth_commands(
    make_service, auth_settings, store
) -> None:
    first, second = make_service("auth"), make_service("bank")
    second.add("balance", second.modules.get("auth").required(lambda payload, ctx: ctx.user.login))
    async with first, second, Micro(auth_settings, service="client") as client:
        assert "auth login" not in second.endpoints
        await sign_up(client)
        token = await log_in(client)  # one session: nobody else handled the login
        assert await client.act("balance", meta={"token": token}) == "ann"
        assert (await client.act("auth whoami", meta={"token": token}))["login"] == "ann"
    started = [e async for e in store.read_all() if e.type == "SessionStarted"]
    assert len(started) == 1
