"""The HTTP gateway: routes from discovery, OpenAPI, SSE, metrics (see ``gateway.py``), and
the declarative ``Portal`` that ``micro run`` serves beside its apps (``portal.py``)."""

from __future__ import annotations

from micro.gateway.fanout import FanOut
from micro.gateway.gateway import Gateway, http_status
from micro.gateway.portal import Portal, serve_portal
from micro.gateway.routes import Operation, Route, RouteTable
from micro.gateway.settings import GatewaySettings

__all__ = [
    "FanOut",
    "Gateway",
    "GatewaySettings",
    "Operation",
    "Portal",
    "Route",
    "RouteTable",
    "http_status",
    "serve_portal",
]
