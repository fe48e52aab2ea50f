"""docker-compose.yml says only what micro understands, and points at what exists.

No Docker engine runs here: the file is parsed and every promise it makes is checked against
the code (settings and their validation, app paths, URLs, the NATS configuration). The NATS
configuration is also run for real: three nodes on loopback addresses standing in for the
compose hosts form a JetStream cluster that stores an R3 stream.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import nats
import pytest
import yaml

from micro.gateway import GatewaySettings
from micro.modules.auth.keys import load_keys
from micro.settings import Settings
from micro.testing import NatsServer, find_nats_server

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
NATS_CONFIG = ROOT / "deploy" / "nats" / "jetstream.conf"
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")
_GATEWAY = "MICRO_GATEWAY_"


def interpolate(value: str) -> str:
    """``${NAME:-default}`` as docker compose reads it with NAME unset: the default."""

    def default(match: re.Match[str]) -> str:
        assert match.group(2) is not None, f"{match.group(0)} has no default: compose needs it set"
        return match.group(2)

    return _INTERPOLATION.sub(default, value)


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {key: interpolate(str(value)) for key, value in raw.items()}


def command_of(service: dict[str, Any]) -> list[str]:
    entrypoint = service.get("entrypoint") or []
    command = service.get("command") or []
    parts = [*entrypoint, *command]
    assert all(isinstance(part, str) for part in parts), "commands are lists of strings"
    return parts


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def nats_nodes(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if "nats-server" in command_of(s)[:1]}


def micro_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if command_of(s)[:2] == ["micro", "run"]}


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No MICRO_* or NATS_URL of this machine leaks into the settings read below."""
    import os

    for key in list(os.environ):
        if key.startswith("MICRO_") or key == "NATS_URL":
            monkeypatch.delenv(key)
    return monkeypatch


def test_the_file_runs_micro_services_nats_nodes_and_eventstoredb(
    services: dict[str, dict[str, Any]],
) -> None:
    assert len(nats_nodes(services)) == 3
    assert {"bank-1", "bank-2", "gateway"} <= set(micro_services(services))
    assert "kurrentdb" in services["eventstore"]["image"]


def test_every_micro_variable_is_a_setting_and_its_value_is_valid(
    services: dict[str, dict[str, Any]], clean_environment: pytest.MonkeyPatch
) -> None:
    micro_fields = {f"MICRO_{name.upper()}" for name in Settings.model_fields} | {"NATS_URL"}
    gateway_fields = {f"{_GATEWAY}{name.upper()}" for name in GatewaySettings.model_fields}
    for name, service in micro_services(services).items():
        environment = environment_of(service)
        unknown = [
            key
            for key in environment
            if key.startswith("MICRO_") and key not in micro_fields | gateway_fields
        ]
        assert not unknown, f"{name}: not micro settings: {unknown}"
        with pytest.MonkeyPatch.context() as patch:
            for key, value in environment.items():
                patch.setenv(key, value)
            # Exactly as the service reads them: from its environment.
            settings = Settings()
            GatewaySettings()
            # ...and through Settings(**...), field by field, so each value is validated
            # as given, not only as an environment string.
            given = {
                key.removeprefix("MICRO_").lower(): value
                for key, value in environment.items()
                if key.startswith("MICRO_") and not key.startswith(_GATEWAY)
            }
            Settings(**given, nats_url=environment.get("NATS_URL"))
        assert settings.nats_url, f"{name} must name its NATS servers"
        assert not settings.embedded, f"{name} must not start an embedded nats-server"
        if settings.production:
            load_keys(settings)  # production refuses to start without real keys: these load


def test_every_service_shares_one_namespace_and_replicates_its_events_three_times(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in micro_services(services).items():
        environment = environment_of(service)
        assert environment["MICRO_EVENT_STORE_REPLICAS"] == "3", name
        if environment.get("MICRO_EVENT_STORE", "jetstream") == "jetstream":
            assert environment["MICRO_NAMESPACE"] == "micro", name
    assert len(nats_nodes(services)) >= 3  # R3 needs three nodes


def test_nats_urls_name_the_nats_nodes_of_the_file(services: dict[str, dict[str, Any]]) -> None:
    nodes = nats_nodes(services)
    listen = re.search(r"^listen:\s*\S+:(\d+)", NATS_CONFIG.read_text(), re.MULTILINE)
    assert listen is not None
    for name, service in micro_services(services).items():
        urls = environment_of(service)["NATS_URL"].split(",")
        hosts = {urlsplit(url).hostname for url in urls}
        assert hosts == set(nodes), f"{name} must list every NATS node to reconnect to"
        assert {urlsplit(url).port for url in urls} == {int(listen.group(1))}
        assert all(urlsplit(url).scheme == "nats" for url in urls)


def test_the_event_store_url_names_a_service_of_the_file(
    services: dict[str, dict[str, Any]],
) -> None:
    esdb = 0
    for name, service in micro_services(services).items():
        environment = environment_of(service)
        url = environment.get("MICRO_EVENT_STORE_URL")
        if environment.get("MICRO_EVENT_STORE") == "esdb":
            assert url, f"{name}: the esdb backend needs MICRO_EVENT_STORE_URL"
        if url is None:
            continue
        esdb += 1
        split = urlsplit(url)
        assert split.scheme == "esdb"
        assert split.hostname in services, f"{name}: {split.hostname} is not a service"
        assert f"{split.port}:{split.port}" in services[split.hostname].get("ports", [])
        assert split.hostname in (service.get("depends_on") or {})
    assert esdb == 1


def test_every_app_path_exists_and_is_in_the_image(services: dict[str, dict[str, Any]]) -> None:
    copied = re.findall(r"^COPY\s+(\S+)\s", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    for name, service in micro_services(services).items():
        target = ROOT / command_of(service)[2]
        app = target / "app.py" if target.is_dir() else target
        assert app.is_file(), f"{name} runs {target}, which has no app"
        top = target.relative_to(ROOT).parts[0]
        assert top in copied, f"{name}: the Dockerfile does not copy {top}/"


def test_dependencies_and_volumes_are_declared(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        assert set(service.get("depends_on") or {}) <= set(services), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in declared, f"{name} uses the undeclared volume {source}"


@dataclass
class Node:
    name: str
    server_name: str
    config: str
    """Path of the configuration inside the container."""


def nodes_of(services: dict[str, dict[str, Any]]) -> list[Node]:
    nodes = []
    for name, service in nats_nodes(services).items():
        command = command_of(service)
        config = command[command.index("-c") + 1]
        mounts = dict(volume.rsplit(":", 2)[:2] for volume in service["volumes"])
        assert mounts.get("./deploy/nats/jetstream.conf") == config, f"{name} runs {config}"
        data = [target for source, target in mounts.items() if not source.startswith(".")]
        assert data == ["/data"], f"{name} keeps JetStream in a volume of its own at /data"
        nodes.append(Node(name, environment_of(service)["NATS_SERVER_NAME"], config))
    return nodes


def test_the_nats_nodes_run_the_config_with_sync_interval_always(
    services: dict[str, dict[str, Any]],
) -> None:
    nodes = nodes_of(services)
    assert len({node.server_name for node in nodes}) == len(nodes), "server names are unique"
    text = NATS_CONFIG.read_text()
    jetstream = re.search(r"^jetstream\s*\{(.*?)^\}", text, re.MULTILINE | re.DOTALL)
    assert jetstream is not None
    assert re.search(r"^\s*sync_interval:\s*always\s*$", jetstream.group(1), re.MULTILINE)
    assert "store_dir: /data/" in jetstream.group(1)
    routes = set(re.findall(r"nats://([\w-]+):6222", text))
    assert routes == {node.name for node in nodes}, "every node routes to every node"
    for node in nodes:
        checked = subprocess.run(
            [find_nats_server(), "-t", "-c", str(NATS_CONFIG)],
            env={"NATS_SERVER_NAME": node.server_name},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert checked.returncode == 0, checked.stderr


@dataclass
class ConfiguredServer(NatsServer):
    """A nats-server run from a configuration text of our own."""

    text: str = ""

    def config_text(self) -> str:
        return self.text


@pytest.fixture
def compose_cluster(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> Iterator[list[ConfiguredServer]]:
    """The file's NATS nodes from deploy/nats/jetstream.conf, each on a loopback address
    of its own (127.0.0.11, .12, .13) standing in for its compose host name."""
    nodes = nodes_of(services)
    hosts = {node.name: f"127.0.0.{11 + index}" for index, node in enumerate(nodes)}
    servers = []
    for node in nodes:
        text = NATS_CONFIG.read_text()
        text = text.replace("$NATS_SERVER_NAME", node.server_name)
        text = text.replace("0.0.0.0", hosts[node.name])
        text = text.replace("/data/jetstream", str(tmp_path / node.name))
        for other, host in hosts.items():
            text = text.replace(f"nats://{other}:", f"nats://{host}:")
        servers.append(ConfiguredServer(store_dir=tmp_path / node.name, text=text))
    try:
        for server in servers:
            server.launch()
        for server in servers:
            server.wait_ready()
            server.host = hosts[nodes[servers.index(server)].name]
        yield servers
    finally:
        for server in servers:
            server.stop()


async def test_the_compose_nats_configuration_forms_a_jetstream_cluster(
    compose_cluster: list[ConfiguredServer],
) -> None:
    urls = [server.url for server in compose_cluster]
    deadline = time.monotonic() + 30
    while True:
        client = await nats.connect(servers=urls, connect_timeout=2, max_reconnect_attempts=0)
        try:
            info = await client.jetstream().add_stream(
                name="COMPOSE_CHECK", subjects=["compose.check"], num_replicas=3
            )
            assert info.config.num_replicas == 3
            acknowledged = await client.jetstream().publish("compose.check", b"stored")
            assert acknowledged.seq == 1
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
        finally:
            await client.close()
        await asyncio.sleep(0.2)  # the meta group is still electing its leader: ask again
