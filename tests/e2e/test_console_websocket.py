"""The console over the gateway's WebSocket, in Chromium: every call and the feed on one socket."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
from playwright.sync_api import Page, WebSocket, expect

from tests.e2e.support import Portal

PASSWORD = "correct-horse-battery-staple-42"
API_PATHS = ("/auth/", "/accounts")


class SocketLog:
    """Every frame the page's WebSockets to /ws sent and received, and its HTTP API calls."""

    def __init__(self, page: Page) -> None:
        self.sent: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []
        self.sockets: list[str] = []
        self.http_calls: list[str] = []
        page.on("websocket", self._socket)
        page.on(
            "request",
            lambda request: (
                self.http_calls.append(f"{request.method} {request.url}")
                if any(part in request.url for part in API_PATHS)
                else None
            ),
        )

    def _socket(self, socket: WebSocket) -> None:
        self.sockets.append(socket.url)
        socket.on("framesent", lambda payload: self.sent.append(json.loads(payload)))
        socket.on("framereceived", lambda payload: self.received.append(json.loads(payload)))

    def acts(self) -> list[str]:
        return [frame["act"] for frame in self.sent if "act" in frame]


def test_sign_up_log_in_open_and_deposit_over_the_socket_and_see_the_event_on_it(
    portal: Portal, browser_page: Page
) -> None:
    page = browser_page
    log = SocketLog(page)
    login = f"sock{uuid.uuid4().hex[:6]}"
    account = f"ws-{uuid.uuid4().hex[:6]}"
    page.goto(portal.url)
    expect(page.get_by_test_id("transport")).to_have_text("WebSocket")

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

    acts = log.acts()
    for command in ("auth signup", "auth login", "open account", "deposit", "accounts"):
        assert command in acts, acts
    assert {"subscribe": "events"} in log.sent
    deposited = [
        frame["event"]
        for frame in log.received
        if "event" in frame and frame["event"]["type"] == "Deposited"
    ]
    assert [event["stream"] for event in deposited] == [f"account-{account}"]
    assert all("/ws" in url for url in log.sockets)
    # Nothing of it went over plain HTTP.
    assert log.http_calls == [], log.http_calls


def test_without_websockets_the_console_falls_back_to_http_and_sse(
    portal: Portal, browser_page: Page
) -> None:
    page = browser_page
    login = f"sse{uuid.uuid4().hex[:6]}"
    response = httpx.post(
        f"{portal.url}/auth/signup",
        json={
            "name": "Grace",
            "login": login,
            "password": PASSWORD,
            "password_confirmation": PASSWORD,
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    token = httpx.post(
        f"{portal.url}/auth/login", json={"login": login, "password": PASSWORD}, timeout=10
    ).json()["token"]
    page.add_init_script(
        f"delete window.WebSocket; sessionStorage.setItem('micro.token', {token!r})"
    )
    log = SocketLog(page)
    page.goto(portal.url)
    expect(page.get_by_test_id("transport")).to_have_text("HTTP + SSE")
    expect(page.get_by_test_id("who")).to_contain_text(login)
    expect(page.get_by_test_id("feed-state")).to_have_text("live")
    account = f"sse-{uuid.uuid4().hex[:6]}"
    page.get_by_test_id("open-account-form").locator("[name=id]").fill(account)
    page.get_by_test_id("open-account-submit").click()
    expect(page.get_by_test_id(f"balance-{account}")).to_have_text("0")
    expect(
        page.get_by_test_id("events").locator("li[data-type=AccountOpened]").first
    ).to_contain_text(account)
    assert log.sockets == []
    assert any("POST" in call and call.endswith("/accounts") for call in log.http_calls)
