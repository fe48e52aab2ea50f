"""``GET /asyncapi.json``: the AsyncAPI 3.0 document of what the gateway sees in discovery."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from micro.asyncapi import build_asyncapi
from micro.gateway.metrics import ROUTE_KEY

if TYPE_CHECKING:
    from micro.gateway.gateway import Gateway

__all__ = ["asyncapi_route"]


def asyncapi_route(gateway: Gateway) -> Route:
    """``GET /asyncapi.json`` on ``gateway``: the document of its current discovery."""

    async def endpoint(request: Request) -> Response:
        request.scope[ROUTE_KEY] = "/asyncapi.json"
        if not gateway.records:
            await gateway.refresh_on_miss()
        micro = gateway.micro
        document = build_asyncapi(
            gateway.records,
            title=gateway.title,
            version=micro.settings.version,
            namespace=micro.settings.namespace,
            nats_url=micro.client.connected_url.geturl()
            if micro.client is not None and micro.client.connected_url is not None
            else micro.settings.nats_url,
        )
        return Response(orjson.dumps(document), media_type="application/json")

    return Route("/asyncapi.json", endpoint, methods=["GET"])
