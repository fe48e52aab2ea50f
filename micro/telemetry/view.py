"""One view of the services from their ``$SRV.STATS``: what ``micro top`` and the console show.

Rates are differences of the cumulative counters between two samples; latency percentiles
come from each endpoint's ``data`` (the slowest instance's figure is shown, never an average
that would hide it). Used by the CLI and the gateway.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from micro.discovery import ServiceRecord

__all__ = ["snapshot"]


def snapshot(
    current: list[ServiceRecord],
    previous: list[ServiceRecord] | None = None,
    seconds: float | None = None,
) -> dict[str, Any]:
    """One view of the services: totals per command over instances, rates since ``previous``.

    Returns ``{"at", "services": [{"service", "instances", "lag", "commands": [...]}]}``,
    each command with ``requests``, ``errors``, ``errors_by_code``, ``rate`` (requests per
    second; ``None`` without a previous sample), ``p50_ms``, ``p90_ms`` and ``p99_ms``.
    """
    before: dict[tuple[str, str, str], int] = {}
    for record in previous or []:
        for endpoint in record.endpoints:
            if endpoint.stats is not None:
                before[record.service, record.id, endpoint.name] = endpoint.stats.requests
    services: dict[str, dict[str, Any]] = {}
    for record in sorted(current, key=lambda r: (r.service, r.id)):
        service = services.setdefault(
            record.service, {"service": record.service, "instances": 0, "lag": None, "ids": []}
        )
        service["instances"] += 1
        service["ids"].append(record.id)
        commands: dict[str, dict[str, Any]] = service.setdefault("_commands", {})
        for endpoint in record.endpoints:
            stats = endpoint.stats
            if stats is None:
                continue
            row = commands.setdefault(
                endpoint.name,
                {
                    "command": endpoint.name,
                    "kind": endpoint.kind,
                    "requests": 0,
                    "errors": 0,
                    "errors_by_code": {},
                    "rate": None if previous is None or not seconds else 0.0,
                    "p50_ms": 0.0,
                    "p90_ms": 0.0,
                    "p99_ms": 0.0,
                },
            )
            row["requests"] += stats.requests
            row["errors"] += stats.errors
            data = stats.data
            for code, count in dict(data.get("errors_by_code") or {}).items():
                row["errors_by_code"][code] = row["errors_by_code"].get(code, 0) + int(count)
            for key in ("p50_ms", "p90_ms", "p99_ms"):
                row[key] = max(row[key], float(data.get(key) or 0.0))
            if isinstance(data.get("lag"), int):
                service["lag"] = max(service["lag"] or 0, data["lag"])
            if row["rate"] is not None and seconds:
                earlier = before.get((record.service, record.id, endpoint.name), 0)
                row["rate"] = round(row["rate"] + max(0, stats.requests - earlier) / seconds, 2)
    listed = []
    for service in services.values():
        commands = service.pop("_commands", {})
        service["commands"] = [commands[name] for name in sorted(commands)]
        listed.append(service)
    return {"at": time.time(), "services": listed}
