"""The web console in a real browser: sign up, log in, open an account, deposit, watch."""

from __future__ import annotations

import uuid

import httpx
from playwright.sync_api import Page, expect

from tests.e2e.support import ARTIFACTS, Portal

PASSWORD = "correct-horse-battery-staple-42"


def _sign_up(portal: Portal, login: str) -> None:
    response = httpx.post(
        f"{portal.url}/auth/signup",
        json={
            "name": "Grace Hopper",
            "login": login,
            "password": PASSWORD,
            "password_confirmation": PASSWORD,
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text


def _token(portal: Portal, login: str) -> str:
    response = httpx.post(
        f"{portal.url}/auth/login", json={"login": login, "password": PASSWORD}, timeout=10
    )
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def test_sign_up_log_in_open_an_account_and_watch_a_deposit_arrive_live(
    portal: Portal, browser_page: Page
) -> None:
    page = browser_page
    login = f"ada{uuid.uuid4().hex[:6]}"
    account = f"acc-{uuid.uuid4().hex[:6]}"
    page.goto(portal.url)
    expect(page.get_by_test_id("services")).to_contain_text("bank")

    signup = page.get_by_test_id("signup-form")
    signup.locator("[name=name]").fill("Ada Lovelace")
    signup.locator("[name=login]").fill(login)
    signup.locator("[name=password]").fill(PASSWORD)
    signup.locator("[name=password_confirmation]").fill(PASSWORD)
    page.get_by_test_id("signup-submit").click()
    expect(page.get_by_test_id("auth-message")).to_contain_text("now log in")

    page.get_by_test_id("login-form").locator("[name=password]").fill(PASSWORD)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("who")).to_contain_text(login)
    expect(page.get_by_test_id("feed-state")).to_have_text("live")

    opening = page.get_by_test_id("open-account-form")
    opening.locator("[name=id]").fill(account)
    page.get_by_test_id("open-account-submit").click()
    expect(page.get_by_test_id(f"balance-{account}")).to_have_text("0")

    page.get_by_test_id("account-select").select_option(account)
    page.get_by_test_id("move-money-form").locator("[name=amount]").fill("125")
    page.get_by_test_id("deposit-submit").click()
    expect(page.get_by_test_id(f"balance-{account}")).to_have_text("125")
    events = page.get_by_test_id("events")
    expect(events.locator("li[data-type=Deposited]").first).to_contain_text(account)
    expect(events.locator("li[data-type=AccountOpened]").first).to_contain_text(account)

    # A deposit made by someone else (straight through the API) shows up without a reload.
    token = _token(portal, login)
    response = httpx.post(
        f"{portal.url}/accounts/{account}/deposit",
        json={"amount": 5},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200
    expect(page.get_by_test_id(f"balance-{account}")).to_have_text("130")
    expect(events.locator("li[data-type=Deposited]")).to_have_count(2)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console.png"))


def test_the_command_form_shows_field_errors_and_replies(
    portal: Portal, browser_page: Page
) -> None:
    page = browser_page
    login = f"grace{uuid.uuid4().hex[:6]}"
    _sign_up(portal, login)
    token = _token(portal, login)
    page.add_init_script(f"sessionStorage.setItem('micro.token', {token!r})")
    page.goto(portal.url)
    expect(page.get_by_test_id("who")).to_contain_text(login)
    page.locator("[data-service=bank] li[data-endpoint='open account']").click()
    form = page.get_by_test_id("call-form")
    form.locator("[name=id]").fill("bad id with spaces")
    form.locator("[name=owner]").fill("Grace")
    page.get_by_test_id("call-submit").click()
    expect(page.get_by_test_id("call-status")).to_have_text("400 validation")
    expect(form.locator("[data-field=id] .field-error")).not_to_be_empty()
    form.locator("[name=id]").fill(f"ok-{uuid.uuid4().hex[:6]}")
    page.get_by_test_id("call-submit").click()
    expect(page.get_by_test_id("call-status")).to_have_text("200 OK")
    expect(page.get_by_test_id("call-result")).to_contain_text("Grace")


def test_the_docs_page_lists_operations_and_tries_a_call(
    portal: Portal, browser_page: Page
) -> None:
    page = browser_page
    page.goto(f"{portal.url}/docs")
    operation = page.locator("details", has_text="/accounts/{id}").first
    expect(operation).to_be_visible()
    page.locator("summary", has_text="GET/accounts").first.click()
    page.get_by_role("button", name="Send").first.click()
    expect(page.locator(".status-ok").first).to_contain_text("200")
