"""The HTTP gateway: routes from discovery, OpenAPI, SSE, metrics (see ``gateway.py``)."""

from __future__ import annotations

from micro.gateway.gateway import Gateway, http_status
from micro.gateway.routes import Operation, Route, RouteTable
from micro.gateway.settings import GatewaySettings

__all__ = ["Gateway", "GatewaySettings", "Operation", "Route", "RouteTable", "http_status"]
