"""What the auth tests share: fast argon2 costs, the test secret, signing up and logging in."""

from __future__ import annotations

from typing import Any

from micro import Micro

__all__ = ["FAST_HASHING", "PASSWORD", "SECRET", "log_in", "sign_up"]

FAST_HASHING = {
    # Test-only costs: the production defaults (3 passes, 64 MiB) take ~100 ms a hash.
    "auth_hash_time_cost": 1,
    "auth_hash_memory_kib": 8,
    "auth_hash_parallelism": 1,
}
SECRET = "s3cret-shared-by-every-test-service-0123456789"
PASSWORD = "Correct-Horse-42-battery"


async def sign_up(client: Micro, login: str = "ann", password: str = PASSWORD) -> dict[str, Any]:
    reply: dict[str, Any] = await client.act(
        "auth signup",
        {"name": "Ann", "login": login, "password": password, "password_confirmation": password},
    )
    return reply


async def log_in(
    client: Micro, login: str = "ann", password: str = PASSWORD, device: str = "laptop"
) -> str:
    reply = await client.act("auth login", {"login": login, "password": password, "device": device})
    token: str = reply["token"]
    return token
