"""A user's first run of the console in Chromium leaves nothing in the browser's console.

Every console message of level error or warning, uncaught page error, failed request and
response with an error status is collected while a user signs up, logs in, opens an
account, deposits, withdraws, and is refused a withdrawal once; the test fails on any.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, Page, Request, Response, expect

from tests.e2e.support import Portal

PASSWORD = "correct-horse-battery-staple-42"


class Noise:
    """What the browser complained about, one readable line each."""

    def __init__(self, page: Page) -> None:
        self.lines: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.lines.append(f"page error: {error}"))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.lines.append(f"console {message.type}: {message.text} at {message.location}")

    def _failed(self, request: Request) -> None:
        # A reload aborts the open event feed, and may abort a read still on its way: the
        # page let go of those itself. Anything else that fails is noise.
        if request.method == "GET" and request.failure == "net::ERR_ABORTED":
            return
        self.lines.append(f"request failed: {request.method} {request.url} {request.failure}")

    def _response(self, response: Response) -> None:
        if response.status >= 400:
            self.lines.append(f"HTTP {response.status}: {response.request.method} {response.url}")


@pytest.fixture
def noise(browser_page: Page) -> Noise:
    return Noise(browser_page)


def test_a_first_session_in_the_console_is_free_of_browser_errors(
    portal: Portal, browser_page: Page, noise: Noise
) -> None:
    page = browser_page
    login = f"lin{uuid.uuid4().hex[:6]}"
    account = f"first-{uuid.uuid4().hex[:6]}"
    page.goto(portal.url)
    expect(page.get_by_test_id("services")).to_contain_text("bank")
    icon = page.evaluate("document.querySelector('link[rel=icon]')?.href")
    assert icon, "the page names no icon, so the browser asks for /favicon.ico"

    signup = page.get_by_test_id("signup-form")
    signup.locator("[name=name]").fill("Lin Clark")
    signup.locator("[name=login]").fill(login)
    signup.locator("[name=password]").fill(PASSWORD)
    signup.locator("[name=password_confirmation]").fill(PASSWORD)
    page.get_by_test_id("signup-submit").click()
    expect(page.get_by_test_id("auth-message")).to_contain_text("now log in")
    page.get_by_test_id("login-form").locator("[name=password]").fill(PASSWORD)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("who")).to_contain_text(login)

    opening = page.get_by_test_id("open-account-form")
    opening.locator("[name=id]").fill(account)
    # The account-id check is on: Chromium compiles the pattern, and a bad id is refused
    # in the page before any request.
    validity: Any = opening.locator("[name=id]").evaluate(
        "input => { input.value = 'bad id'; const bad = input.validity.patternMismatch;"
        f" input.value = {account!r}; return [bad, input.validity.valid]; }}"
    )
    assert validity == [True, True]
    page.get_by_test_id("open-account-submit").click()
    expect(page.get_by_test_id(f"balance-{account}")).to_have_text("0")

    page.get_by_test_id("account-select").select_option(account)
    amount = page.get_by_test_id("move-money-form").locator("[name=amount]")
    amount.fill("100")
    page.get_by_test_id("deposit-submit").click()
    expect(page.get_by_test_id(f"balance-{account}")).to_have_text("100")
    amount.fill("30")
    page.get_by_test_id("withdraw-submit").click()
    expect(page.get_by_test_id(f"balance-{account}")).to_have_text("70")

    # Refused by the bank's rule: an answer shown beside the form, not a failure.
    amount.fill("1000")
    page.get_by_test_id("withdraw-submit").click()
    message = page.get_by_test_id("bank-message")
    expect(message).to_contain_text("insufficient")
    expect(message).to_have_class("message refused")
    expect(page.get_by_test_id(f"balance-{account}")).to_have_text("70")
    events = page.get_by_test_id("events")
    expect(events.locator("li[data-type=Withdrawn]").first).to_contain_text(account)

    page.reload()  # a second look, as a user does, signed in this time
    expect(page.get_by_test_id("who")).to_contain_text(login)
    expect(page.get_by_test_id(f"balance-{account}")).to_have_text("70")
    assert noise.lines == [], "\n".join(noise.lines)


def test_the_api_still_answers_a_refusal_with_422_unless_the_caller_prefers_an_answer(
    portal: Portal,
) -> None:
    login = f"api{uuid.uuid4().hex[:6]}"
    account = f"api-{uuid.uuid4().hex[:6]}"
    with httpx.Client(base_url=portal.url, timeout=10) as client:
        signed_up = client.post(
            "/auth/signup",
            json={
                "name": "Api User",
                "login": login,
                "password": PASSWORD,
                "password_confirmation": PASSWORD,
            },
        )
        assert signed_up.status_code == 200, signed_up.text
        logged_in = client.post("/auth/login", json={"login": login, "password": PASSWORD})
        client.headers["Authorization"] = f"Bearer {logged_in.json()['token']}"
        opened = client.post("/accounts", json={"id": account, "owner": "Api User"})
        assert opened.status_code == 200, opened.text

        refused = client.post(f"/accounts/{account}/withdraw", json={"amount": 5})
        assert refused.status_code == 422
        assert "preference-applied" not in refused.headers
        answered = client.post(
            f"/accounts/{account}/withdraw",
            json={"amount": 5},
            headers={"Prefer": "refusal=answer"},
        )
        assert answered.status_code == 200
        assert answered.headers["preference-applied"] == "refusal=answer"
        # The same body: only the status differs.
        assert answered.json()["error"]["message"] == refused.json()["error"]["message"]
        assert answered.json()["error"]["code"] == "rule_violation"
        # Only a refusal: a bad request stays a 400 whatever the caller prefers.
        bad = client.post(
            f"/accounts/{account}/withdraw",
            json={"amount": -1},
            headers={"Prefer": "refusal=answer"},
        )
        assert bad.status_code == 400
