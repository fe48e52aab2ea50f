"""Fixtures: a service with typed commands and views, and a gateway in front of it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import BaseModel, Field

from micro import Context, Micro, NotFoundError, RuleViolation, Settings, UnauthorizedError
from micro.eventstore.memory import MemoryEventStore
from micro.gateway import Gateway, GatewaySettings, Route
from tests.gateway.support import Stack


class Greeting(BaseModel):
    name: str = Field(min_length=1, max_length=50)
    times: int = Field(default=1, ge=1, le=5)


class Lookup(BaseModel):
    id: int = Field(ge=0)
    verbose: bool = False


class Nested(BaseModel):
    city: str


class Person(BaseModel):
    name: str
    address: Nested


def build_service(settings: Settings, release: asyncio.Event) -> Micro:
    micro = Micro(settings, service="demo")

    def greet(request: Greeting, ctx: Context) -> dict:
        return {
            "greeting": " ".join([f"hello {request.name}"] * request.times),
            "meta": ctx.meta,
            "min_position": ctx.min_position,
        }

    def lookup(query: Lookup) -> dict:
        if query.id == 404:
            raise NotFoundError(f"no thing {query.id}")
        return {"id": query.id, "verbose": query.verbose}

    def secret(request: dict, ctx: Context) -> str:
        if ctx.meta.get("token") != "good":
            raise UnauthorizedError("bad token")
        return "the secret"

    def explode(request: dict) -> None:
        raise RuntimeError("database password is hunter2")

    def refuse(request: dict) -> None:
        raise RuleViolation("not today")

    async def count(request: dict, ctx: Context) -> int:
        for number in range(3):
            await ctx.send({"step": number})
        return 3

    async def slow(request: dict) -> str:
        await asyncio.sleep(float(request.get("seconds", 1)))
        return "done"

    async def hold(request: dict) -> str:
        await release.wait()
        return "released"

    def register(person: Person) -> dict:
        return person.model_dump()

    micro.add("greet", greet, description="say hello")
    micro.add("lookup", lookup, kind="view")
    micro.add("demo secret", secret)
    micro.add("explode", explode)
    micro.add("refuse", refuse)
    micro.add("count", count)
    micro.add("register person", register)
    micro.add("slow", slow)
    micro.add("hold", hold)
    return micro


ROUTES = [
    Route("GET", "/things/{id}", "lookup"),
    Route("POST", "/greetings/{name}", "greet"),
]


@pytest.fixture
async def stack(micro_settings: Settings) -> AsyncIterator[Stack]:
    store = MemoryEventStore()
    release = asyncio.Event()
    service = build_service(micro_settings, release)
    await service.open()
    gateway = Gateway(
        Micro(micro_settings, service="gateway"),
        GatewaySettings(port=0, max_body=10_000, required_services=["demo"]),
        routes=ROUTES,
        event_store=store,
    )
    await gateway.start()
    client = httpx.AsyncClient(base_url=gateway.url, timeout=10)
    try:
        yield Stack(service, gateway, client, store, release)
    finally:
        release.set()
        await client.aclose()
        await gateway.stop()
        await gateway.micro.close()
        await service.close()
