"""Random requests sent straight to every endpoint of the bank over NATS: never a 5xx.

The payloads and headers are drawn from a fixed seed, so the run is the same in CI every
time; ``MICRO_FUZZ_EXPLORE=1`` draws from a fresh seed (printed) to look for new failures,
and each failure found becomes an explicit example in ``KNOWN``.
"""

from __future__ import annotations

import json
import os
import random
import runpy
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest

from micro import Micro, Settings
from micro.bus import headers as h
from micro.bus.subjects import command_subject
from micro.eventstore.memory import MemoryEventStore
from tests.auth.support import FAST_HASHING, SECRET, log_in, sign_up

BANK = Path(__file__).resolve().parents[2] / "samples" / "bank" / "app.py"
PER_ENDPOINT = 40

KNOWN: list[tuple[str, Any]] = [
    # A view whose query was a plain dict: a missing field was a KeyError (500).
    ("account balance", {}),
    ("account balance", {"id": 5}),
    ("transfer status", {}),
    ("transfer status", []),
    ("accounts", "x"),
    # Ids that cannot be part of a stream name.
    ("deposit", {"id": "a b", "amount": 1}),
    ("withdraw", {"id": "", "amount": 1}),
    ("transfer", {"id": "t", "source": "a\n", "target": "b", "amount": 1}),
]

_TEXT = ["", "a1", "x" * 300, "²", "٣", "a b", "a.b", "\x00", "💸", "-1", "null", "{}"]
_NUMBERS = [0, -1, 1, 2**63, -(2**70), 1.5, float("1e308")]


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(7 if depth < 2 else 4)
    if kind == 0:
        return rng.choice(_TEXT)
    if kind == 1:
        return rng.choice(_NUMBERS)
    if kind == 2:
        return rng.choice([None, True, False])
    if kind == 3:
        return "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(8)))
    if kind == 4:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(3))]
    return {rng.choice(_TEXT): _value(rng, depth + 1) for _ in range(rng.randrange(3))}


def _payload(rng: random.Random, fields: list[str]) -> Any:
    """Mostly objects with the endpoint's own field names, holding anything."""
    if rng.random() < 0.15:
        return _value(rng)
    keys = rng.sample(fields, k=rng.randrange(len(fields) + 1)) if fields else []
    payload = {key: _value(rng) for key in keys}
    if rng.random() < 0.2:
        payload[rng.choice(_TEXT)] = _value(rng)
    return payload


def _headers(rng: random.Random, token: str) -> dict[str, str]:
    headers = {h.META: orjson.dumps({"token": token}).decode()} if rng.random() < 0.7 else {}
    if rng.random() < 0.15:
        headers[rng.choice([h.META, h.DEADLINE, h.HOPS, h.MIN_POSITION])] = rng.choice(
            ["²", "-5", "1_0", "{", "[]", "9" * 30, "", "nan"]
        )
    return headers


@pytest.fixture
def bank(micro_settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Micro:
    environment = {
        "NATS_URL": micro_settings.nats_url or "",
        "MICRO_NAMESPACE": micro_settings.namespace,
        "MICRO_EMBEDDED": "false",
        "MICRO_AUTH_SECRET": SECRET,
        "MICRO_DATA_DIR": str(tmp_path),
        **{f"MICRO_{key.upper()}": str(value) for key, value in FAST_HASHING.items()},
    }
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    micro: Micro = runpy.run_path(str(BANK), run_name="bank_sample")["micro"]
    micro.commander.store = MemoryEventStore()
    return micro


async def test_random_requests_to_every_bank_endpoint_never_get_a_5xx(
    bank: Micro, micro_settings: Settings
) -> None:
    seed = random.randrange(2**32) if os.environ.get("MICRO_FUZZ_EXPLORE") else 20261203
    print(f"fuzz seed {seed}")
    rng = random.Random(seed)
    async with bank, Micro(micro_settings, service="client") as client:
        await sign_up(client)
        token = await log_in(client)
        await client.act("open account", {"id": "a1", "owner": "ann"}, meta={"token": token})
        connection = await nats.connect(micro_settings.nats_url)
        try:
            requests: list[tuple[str, Any, dict[str, str]]] = [
                (name, payload, {h.META: orjson.dumps({"token": token}).decode()})
                for name, payload in KNOWN
            ]
            for name, endpoint in sorted(bank.endpoints.items()):
                schema = endpoint.request_schema() or {}
                fields = sorted(schema.get("properties", {}))
                requests += [
                    (name, _payload(rng, fields), _headers(rng, token)) for _ in range(PER_ENDPOINT)
                ]
            failures = []
            for name, payload, headers in requests:
                body = json.dumps(payload).encode() if rng.random() < 0.95 else b"\xff{not json"
                reply = await connection.request(
                    command_subject(micro_settings.namespace, name), body, 10, headers=headers
                )
                status = (reply.headers or {}).get(h.SERVICE_ERROR_CODE, "200")
                if not status.isascii() or not status.isdigit() or int(status) >= 500:
                    failures.append((name, payload, headers, status, reply.data[:300]))
        finally:
            await connection.close()
    assert len(requests) > 400
    assert failures == []


async def test_the_bank_views_publish_their_query_schemas_in_discovery(
    bank: Micro, micro_settings: Settings
) -> None:
    async with bank, Micro(micro_settings, service="client") as client:
        [record] = await client.discover(wait_for=["bank"], timeout=10)
    schemas = {endpoint.name: endpoint.request_schema for endpoint in record.endpoints}
    for view in ("account balance", "transfer status"):
        assert schemas[view] is not None
        assert schemas[view]["required"] == ["id"]
        assert schemas[view]["properties"]["id"]["pattern"] == "^[A-Za-z0-9_-]+$"
    assert schemas["accounts"] == {"properties": {}, "title": "NoQuery", "type": "object"}
