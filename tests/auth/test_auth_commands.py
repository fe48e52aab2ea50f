"""The auth commands end to end: sign-up, login per device, refresh, logout, password, roles."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from micro import (
    ConflictError,
    Context,
    ForbiddenError,
    Micro,
    UnauthorizedError,
    ValidationError,
)
from micro.eventstore.memory import MemoryEventStore
from tests.auth.support import PASSWORD, log_in, sign_up

NEW_PASSWORD = "Another-Strong-Pass-77"


async def stored(store: MemoryEventStore) -> int:
    return await store.last_position()


async def test_signup_then_login_gives_a_token_that_identifies_the_user(
    make_service, auth_settings
) -> None:
    async with make_service(), Micro(auth_settings, service="client") as client:
        user = await sign_up(client, login="Ann@Example.org")
        token = await log_in(client, login="ann@example.org")
        me = await client.act("auth whoami", meta={"token": token})
    assert user["login"] == "ann@example.org"
    assert me["id"] == user["id"]
    assert me["login"] == "ann@example.org"
    assert me["kind"] == "user"


async def test_signup_reports_each_bad_field_and_stores_nothing(
    make_service, auth_settings, store
) -> None:
    async with make_service(), Micro(auth_settings, service="client") as client:
        with pytest.raises(ValidationError) as refused:
            await client.act(
                "auth signup",
                {
                    "name": "Bob",
                    "login": "x",
                    "password": "short",
                    "password_confirmation": "other",
                },
            )
        assert await stored(store) == 0
    fields = {item["field"] for item in refused.value.fields}
    assert fields == {"login", "password", "password_confirmation"}
    assert "short" not in str(refused.value.to_wire())


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("alllowercaseonly", "three of"),
        ("Password123!", "too common"),
        ("Xx1-annabel-Yy2", "must not contain the login"),
    ],
)
async def test_weak_passwords_are_refused_with_the_reason(
    make_service, auth_settings, password, reason
) -> None:
    async with make_service(), Micro(auth_settings, service="client") as client:
        with pytest.raises(ValidationError) as refused:
            await sign_up(client, login="annabel", password=password)
    assert any(reason in item["reason"] for item in refused.value.fields)


async def test_a_login_is_taken_once_whatever_its_case(make_service, auth_settings) -> None:
    async with make_service(), Micro(auth_settings, service="client") as client:
        await sign_up(client, login="ann")
        with pytest.raises(ConflictError) as refused:
            await sign_up(client, login="ANN")
    assert refused.value.details["fields"][0]["field"] == "login"


async def test_wrong_password_and_unknown_login_get_the_same_error(
    make_service, auth_settings
) -> None:
    async with make_service(), Micro(auth_settings, service="client") as client:
        await sign_up(client)
        with pytest.raises(UnauthorizedError) as wrong_password:
            await log_in(client, password="Not-The-Password-1")
        with pytest.raises(UnauthorizedError) as unknown_login:
            await log_in(client, login="nobody")
    assert type(wrong_password.value) is type(unknown_login.value)
    assert wrong_password.value.message == unknown_login.value.message
    assert wrong_password.value.details == unknown_login.value.details


async def test_a_new_login_on_a_device_replaces_that_devices_session_only(
    make_service, auth_settings
) -> None:
    async with make_service(), Micro(auth_settings, service="client") as client:
        await sign_up(client)
        first_laptop = await log_in(client, device="laptop")
        phone = await log_in(client, device="phone")
        second_laptop = await log_in(client, device="laptop")
        with pytest.raises(UnauthorizedError) as replaced:
            await client.act("auth whoami", meta={"token": first_laptop})
        assert (await client.act("auth whoami", meta={"token": phone}))["login"] == "ann"
        assert (await client.act("auth whoami", meta={"token": second_laptop}))["login"] == "ann"
    assert replaced.value.details["reason"] == "revoked"


async def test_refresh_issues_a_new_token_and_logout_ends_the_session_of_both(
    make_service, auth_settings
) -> None:
    async with make_service(), Micro(auth_settings, service="client") as client:
        await sign_up(client)
        token = await log_in(client)
        refreshed = (await client.act("auth refresh", meta={"token": token}))["token"]
        assert refreshed != token
        assert (await client.act("auth whoami", meta={"token": refreshed}))["login"] == "ann"
        await client.act("auth logout", meta={"token": refreshed})
        for old in (token, refreshed):
            with pytest.raises(UnauthorizedError) as refused:
                await client.act("auth whoami", meta={"token": old})
            assert refused.value.details["reason"] == "revoked"


async def test_logout_from_all_devices_ends_every_session(make_service, auth_settings) -> None:
    async with make_service(), Micro(auth_settings, service="client") as client:
        await sign_up(client)
        laptop, phone = await log_in(client, device="laptop"), await log_in(client, device="phone")
        reply = await client.act("auth logout", {"all_devices": True}, meta={"token": laptop})
        assert reply == {"sessions_ended": 2}
        with pytest.raises(UnauthorizedError):
            await client.act("auth whoami", meta={"token": phone})


async def test_changing_the_password_ends_the_other_sessions(make_service, auth_settings) -> None:
    async with make_service(), Micro(auth_settings, service="client") as client:
        await sign_up(client)
        laptop, phone = await log_in(client, device="laptop"), await log_in(client, device="phone")
        change = {
            "current_password": PASSWORD,
            "new_password": NEW_PASSWORD,
            "new_password_confirmation": NEW_PASSWORD,
        }
        assert await client.act("auth change password", change, meta={"token": laptop}) == {
            "sessions_ended": 1
        }
        assert (await client.act("auth whoami", meta={"token": laptop}))["login"] == "ann"
        with pytest.raises(UnauthorizedError):
            await client.act("auth whoami", meta={"token": phone})
        with pytest.raises(UnauthorizedError):
            await log_in(client, device="tablet")
        assert await log_in(client, password=NEW_PASSWORD, device="tablet")


async def test_changing_the_password_needs_the_current_one(
    make_service, auth_settings, store
) -> None:
    async with make_service(), Micro(auth_settings, service="client") as client:
        await sign_up(client)
        token = await log_in(client)
        before = await stored(store)
        with pytest.raises(ValidationError) as refused:
            await client.act(
                "auth change password",
                {
                    "current_password": "Wrong-Password-123",
                    "new_password": NEW_PASSWORD,
                    "new_password_confirmation": NEW_PASSWORD,
                },
                meta={"token": token},
            )
        assert await stored(store) == before
    assert refused.value.fields[0]["field"] == "current_password"


async def test_the_first_admin_is_seeded_and_grants_and_revokes_roles(
    make_service, auth_settings
) -> None:
    admin = make_service(auth_admin_login="root", auth_admin_password="Adm1n-Strong-Pass!")
    async with admin, Micro(auth_settings, service="client") as client:
        await sign_up(client)
        ann = await log_in(client)
        root = await log_in(client, login="root", password="Adm1n-Strong-Pass!")
        with pytest.raises(ForbiddenError):
            await client.act(
                "auth grant role", {"login": "ann", "role": "teller"}, meta={"token": ann}
            )
        granted = await client.act(
            "auth grant role", {"login": "ann", "role": "teller"}, meta={"token": root}
        )
        assert granted == {"login": "ann", "roles": ["teller"]}
        assert (await client.act("auth whoami", meta={"token": ann}))["roles"] == ["teller"]
        await client.act(
            "auth revoke role", {"login": "ann", "role": "teller"}, meta={"token": root}
        )
        # The token still says "teller"; the guard trusts the models, not the claim.
        assert (await client.act("auth whoami", meta={"token": ann}))["roles"] == []


async def test_seeding_the_admin_twice_changes_nothing(make_service, auth_settings, store) -> None:
    options = {"auth_admin_login": "root", "auth_admin_password": "Adm1n-Strong-Pass!"}
    async with make_service(**options):
        seeded = await stored(store)
    async with make_service(**options):
        assert await stored(store) == seeded == 2


async def test_the_last_admin_keeps_the_admin_role(make_service, auth_settings) -> None:
    admin = make_service(auth_admin_login="root", auth_admin_password="Adm1n-Strong-Pass!")
    async with admin, Micro(auth_settings, service="client") as client:
        root = await log_in(client, login="root", password="Adm1n-Strong-Pass!")
        with pytest.raises(Exception, match="last admin"):
            await client.act(
                "auth revoke role", {"login": "root", "role": "admin"}, meta={"token": root}
            )


def write_note_sheets(base: Path, auth_line: str) -> None:
    (base / "rules").mkdir(parents=True)
    (base / "reducers").mkdir()
    (base / "models").mkdir()
    (base / "rules" / "write_note_rule.py").write_text(
        textwrap.dedent(
            f"""
            from pydantic import BaseModel
            from micro.modules.auth import current_user
            from micro.readmodel import Event

            {auth_line}

            class Request(BaseModel):
                text: str

            class NoteWritten(Event):
                author: str
                text: str

            stream = "notes"

            def events(request, models):
                return [NoteWritten(author=current_user().login, text=request.text)]
            """
        )
    )
    (base / "reducers" / "write_note_reducer.py").write_text(
        "reducers = {'NoteWritten': lambda event, models: None}\n"
    )


async def test_a_rule_declaring_auth_required_refuses_anonymous_callers_and_records_the_user(
    make_service, auth_settings, store, tmp_path
) -> None:
    write_note_sheets(tmp_path / "app", 'auth = "required"')
    service = make_service(service="notes", app_dir=tmp_path / "app")
    service.commander.add_command("write note")
    async with service, Micro(auth_settings, service="client") as client:
        await sign_up(client)
        token = await log_in(client)
        before = await stored(store)
        with pytest.raises(UnauthorizedError) as anonymous:
            await client.act("write note", {"text": "hello"})
        assert await stored(store) == before
        await client.act("write note", {"text": "hello"}, meta={"token": token})
    events = [event async for event in store.read_all()]
    note = events[-1]
    assert anonymous.value.details["reason"] == "missing"
    assert note.data == {"author": "ann", "text": "hello"}
    assert note.metadata["user"] == (await_id := events[0].data["user_id"])
    assert await_id.startswith("u")


async def test_a_rule_declaring_roles_refuses_users_without_them(
    make_service, auth_settings, store, tmp_path
) -> None:
    write_note_sheets(tmp_path / "app", 'roles = ["editor"]')
    service = make_service(service="notes", app_dir=tmp_path / "app")
    service.commander.add_command("write note")
    async with service, Micro(auth_settings, service="client") as client:
        await sign_up(client)
        token = await log_in(client)
        before = await stored(store)
        with pytest.raises(ForbiddenError) as refused:
            await client.act("write note", {"text": "hello"}, meta={"token": token})
        assert await stored(store) == before
    assert refused.value.details == {"roles": ["editor"]}


async def test_plain_handlers_are_guarded_and_nested_calls_forward_the_token(
    make_service, auth_settings
) -> None:
    service = make_service()
    auth = service.modules.get("auth")

    async def inner(payload: dict, ctx: Context) -> str:
        return f"inner sees {ctx.user.login}"

    async def outer(payload: dict, ctx: Context) -> list[str]:
        return [ctx.user.login, await ctx.act("inner", {})]

    service.add("inner", auth.required(inner))
    service.add("outer", auth.required(outer))
    service.add("admin only", auth.required(lambda: "ok", roles=["admin"]))
    async with service, Micro(auth_settings, service="client") as client:
        await sign_up(client)
        token = await log_in(client)
        assert await client.act("outer", {}, meta={"token": token}) == ["ann", "inner sees ann"]
        with pytest.raises(UnauthorizedError):
            await client.act("outer", {})
        with pytest.raises(ForbiddenError):
            await client.act("admin only", meta={"token": token})


async def test_protect_guards_an_endpoint_added_earlier(make_service, auth_settings) -> None:
    service = make_service()
    service.add_view("count users", lambda query, models: len(models.auth_user))
    service.modules.get("auth").protect("count users")
    async with service, Micro(auth_settings, service="client") as client:
        await sign_up(client)
        token = await log_in(client)
        with pytest.raises(UnauthorizedError):
            await client.act("count users")
        assert await client.act("count users", meta={"token": token}) == 1


async def test_secret_claims_reach_services_but_not_the_token_reader(
    make_service, auth_settings
) -> None:
    import base64

    service = make_service()
    auth = service.modules.get("auth")
    auth.add_claims(lambda user: {"tier": "gold"})
    auth.add_claims(lambda user: {"ledger_key": f"k-{user.login}-0042"}, secret=True)
    service.add("secrets", auth.required(lambda payload, ctx: ctx.user.secrets))
    async with service, Micro(auth_settings, service="client") as client:
        await sign_up(client)
        token = await log_in(client)
        assert await client.act("secrets", meta={"token": token}) == {"ledger_key": "k-ann-0042"}
    body = token.split(".")[1]
    readable = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
    assert '"tier":"gold"' in readable
    assert "k-ann-0042" not in readable
    assert '"sec":' in readable


async def test_a_service_token_lets_a_process_act_as_the_service(
    make_service, auth_settings
) -> None:
    service = make_service()
    auth = service.modules.get("auth")
    service.add("who", auth.required(lambda payload, ctx: ctx.user.public()))
    async with service, Micro(auth_settings, service="client") as client:
        me = await client.act("who", meta=auth.service_meta())
    assert me["id"] == "service:accounts"
    assert me["roles"] == ["service"]
    assert me["kind"] == "service"
