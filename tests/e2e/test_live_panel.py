"""The console's live panel shows a loaded bank: its commands' rate and latency, and its lag."""

from __future__ import annotations

import uuid

import httpx
from playwright.sync_api import Page, expect

from tests.e2e.support import ARTIFACTS, Portal

PASSWORD = "correct-horse-battery-staple-42"


def _load_the_bank(portal: Portal, deposits: int) -> None:
    login = f"live{uuid.uuid4().hex[:6]}"
    account = f"acc-{uuid.uuid4().hex[:6]}"
    with httpx.Client(base_url=portal.url, timeout=10) as client:
        signup = {"name": "Live", "login": login, "password": PASSWORD}
        response = client.post("/auth/signup", json={**signup, "password_confirmation": PASSWORD})
        assert response.status_code == 200, response.text
        response = client.post("/auth/login", json={"login": login, "password": PASSWORD})
        assert response.status_code == 200, response.text
        client.headers["Authorization"] = f"Bearer {response.json()['token']}"
        response = client.post("/accounts", json={"id": account, "owner": "Live"})
        assert response.status_code == 200, response.text
        for _ in range(deposits):
            response = client.post(f"/accounts/{account}/deposit", json={"amount": 1})
            assert response.status_code == 200, response.text


def test_the_live_panel_shows_each_commands_rate_latency_and_the_models_lag(
    portal: Portal, browser_page: Page
) -> None:
    page = browser_page
    page.goto(portal.url)
    bank = page.locator("[data-testid=live-service][data-service=bank]")
    expect(bank).to_be_visible(timeout=15_000)
    _load_the_bank(portal, 20)
    deposit = bank.locator("[data-testid=live-row][data-command=deposit]")
    expect(deposit).to_be_visible(timeout=15_000)
    # the rate chart has drawn a line once two samples were taken
    expect(deposit.locator("svg.spark polyline.rate")).to_have_count(1, timeout=15_000)
    expect(deposit.locator("td").nth(2)).to_contain_text("ms")
    expect(bank.get_by_test_id("live-lag")).to_have_text("lag 0", timeout=15_000)
    stats = httpx.get(f"{portal.url}/api/stats", timeout=10).json()
    (entry,) = [service for service in stats["services"] if service["service"] == "bank"]
    (row,) = [row for row in entry["commands"] if row["command"] == "deposit"]
    assert row["requests"] >= 20
    assert row["p99_ms"] >= row["p50_ms"] > 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.get_by_test_id("live").screenshot(path=str(ARTIFACTS / "console-live.png"))
