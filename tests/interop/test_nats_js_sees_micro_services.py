"""Interop: standard NATS tooling (nats.js with @nats-io/services) sees and calls micro services.

The npm packages are installed once per test session into a temporary folder. The test is
skipped, with the reason, only when node or npm is missing.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from micro import Settings
from tests.support import npm_install

HERE = Path(__file__).parent
PACKAGES = {"@nats-io/transport-node": "3.4.0", "@nats-io/services": "3.0.0-25"}

SERVICE = """
from pydantic import BaseModel
from micro import RuleViolation

class Add(BaseModel):
    a: int
    b: int

def add(request: Add) -> int:
    return request.a + request.b

def open_account(request: dict) -> None:
    raise RuleViolation("accounts are closed today")

micro = Micro(service="bank", version="1.4.0", description="Keeps money", metadata={"team": "ops"})
micro.add("math.add", add)
micro.add("open account", open_account)
micro.hook("on_start", announce)
micro.start()
"""


@pytest.fixture(scope="session")
def nats_js(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with nats.js and its services client installed, and the client script."""
    folder = tmp_path_factory.mktemp("nats-js")
    npm_install(folder, PACKAGES, purpose="interop with nats.js")
    # ES modules resolve packages next to the script, so the script lives beside them
    shutil.copy(HERE / "nats_js_client.mjs", folder / "nats_js_client.mjs")
    return folder


@pytest.mark.timeout(300)
def test_nats_js_lists_micro_services_and_calls_their_commands(
    nats_js: Path, spawn, micro_settings: Settings
) -> None:
    service = spawn(SERVICE)
    result = subprocess.run(
        [
            "node",
            str(nats_js / "nats_js_client.mjs"),
            micro_settings.nats_url,
            micro_settings.namespace,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout)

    [ping] = seen["pings"]
    assert (ping["name"], ping["version"]) == ("bank", "1.4.0")
    [info] = seen["infos"]
    assert info["id"] == ping["id"]
    assert info["description"] == "Keeps money"
    assert info["metadata"]["team"] == "ops"
    endpoints = {e["metadata"]["micro.command"]: e for e in info["endpoints"]}
    assert set(endpoints) == {"math.add", "open account"}
    assert all(e["queue_group"] == "bank" for e in endpoints.values())
    schema = json.loads(endpoints["math.add"]["metadata"]["micro.request_schema"])
    assert schema["required"] == ["a", "b"]

    assert seen["reply"] == 5
    assert seen["error"]["message"] == "accounts are closed today"
    assert seen["error"]["code"] == "422"
    assert seen["error"]["body"]["error"]["code"] == "rule_violation"

    [stats] = seen["stats"]
    counts = {e["subject"]: (e["num_requests"], e["num_errors"]) for e in stats["endpoints"]}
    assert counts == {
        endpoints["math.add"]["subject"]: (1, 0),
        endpoints["open account"]["subject"]: (1, 1),
    }
    assert service.process.poll() is None  # still serving
