"""The REST portal in its own process (``micro run samples/rest_portal``), and a browser."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from micro.testing import NatsServer
from tests.e2e.support import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, ROOT, URL_LINE, Portal


@pytest.fixture(scope="session")
def portal(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    """The portal on the session's nats-server, its own namespace, a free port."""
    data = tmp_path_factory.mktemp("portal")
    log = data / "portal.log"
    environment = {
        **os.environ,
        "NATS_URL": nats_server.url,
        "MICRO_NAMESPACE": "e2e" + uuid.uuid4().hex[:8],
        "MICRO_EMBEDDED": "false",
        "MICRO_DATA_DIR": str(data),
        "MICRO_LOG_FORMAT": "json",
        "MICRO_GATEWAY_PORT": "0",
        # argon2id at its cheapest: the tests sign up many users, not attackers.
        "MICRO_AUTH_HASH_TIME_COST": "1",
        "MICRO_AUTH_HASH_MEMORY_KIB": "1024",
        "MICRO_AUTH_HASH_PARALLELISM": "1",
        "PYTHONPATH": str(ROOT),
    }
    with log.open("w") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "micro.cli", "run", str(ROOT / "samples" / "rest_portal")],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            cwd=data,
        )
    assert process.stdout is not None
    url = None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 30
    while url is None and time.monotonic() < deadline and process.poll() is None:
        if selector.select(timeout=deadline - time.monotonic()):
            line = process.stdout.readline()
            found = URL_LINE.search(line)
            url = found.group(1) if found else None
    if url is None:
        process.kill()
        process.wait(10)
        process.stdout.close()
        raise RuntimeError(f"the portal did not start: {log.read_text()[-3000:]}")
    try:
        yield Portal(url, process, log)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        process.stdout.close()
        selector.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    # Keep each phase's report on the test, so a fixture can tell whether the test failed.
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def browser_page(request: pytest.FixtureRequest) -> Iterator[object]:
    """A Chromium page (Debian's chromium, headless); a screenshot is kept if the test fails."""
    if not CHROMIUM.exists():
        pytest.skip(
            "/usr/bin/chromium is absent: install it with 'apt-get install -y chromium' "
            "to run the browser tests"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        try:
            yield page
        finally:
            report = getattr(request.node, "report_call", None)
            if report is not None and report.failed:
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
            browser.close()
