"""The route table: which HTTP method and path calls which command.

Routes come from two places. Discovery generates one per endpoint: every command is
``POST <prefix>/<service>/<slug>``, every view ``GET <prefix>/<service>/<slug>`` (the slug
is the command name with its service's name dropped from the front and anything but
letters, digits, ``.``, ``_``, ``~`` and ``-`` turned into ``-``). An explicit table adds
routes with path parameters, ``Route("POST", "/accounts/{id}/deposit", "deposit")``, whose
values join the payload under their names.

A table is rebuilt from each look at discovery and swapped in whole, so a request always
sees one consistent table.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from micro.discovery import ServiceRecord

__all__ = ["MethodNotAllowed", "Operation", "Route", "RouteTable", "slug"]

_log = structlog.get_logger("micro.gateway")

_PARAMETER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._~-]+")
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})


def slug(name: str, service: str = "") -> str:
    """The path segment of a command: ``("auth login", "auth") -> "login"``."""
    for separator in (" ", ".", "_", "-"):
        if service and name.startswith(service + separator) and len(name) > len(service) + 1:
            name = name[len(service) + 1 :]
            break
    return _UNSAFE.sub("-", name).strip("-") or "command"


@dataclass(frozen=True, slots=True)
class Route:
    """An explicit route: ``method`` and ``path`` (with ``{parameters}``) call ``command``."""

    method: str
    path: str
    command: str
    summary: str = ""
    """One line shown in the API docs."""
    request_schema: dict[str, Any] | None = None
    """Used instead of the schema published in discovery (for services that publish none)."""

    def __post_init__(self) -> None:
        if self.method.upper() not in _METHODS:
            raise ValueError(
                f"route {self.path!r}: method {self.method!r} is not one of {_METHODS}"
            )
        if not self.path.startswith("/"):
            raise ValueError(f"route path {self.path!r} must start with '/'")
        object.__setattr__(self, "method", self.method.upper())


@dataclass(frozen=True, slots=True)
class Operation:
    """One callable route as the gateway serves it."""

    method: str
    path: str
    """The path template, e.g. ``/accounts/{id}``: also the metrics label."""
    command: str
    kind: str
    """``command`` or ``view``."""
    service: str
    request_schema: dict[str, Any] | None
    reply_schema: dict[str, Any] | None
    description: str = ""
    parameters: tuple[str, ...] = ()
    generated: bool = True
    pattern: re.Pattern[str] = field(default=re.compile(""), compare=False, repr=False)

    @property
    def operation_id(self) -> str:
        return f"{self.method.lower()}{_UNSAFE.sub('_', self.path.replace('/', '_'))}"


class MethodNotAllowed:
    """A path that exists, asked with a method it does not take."""

    def __init__(self, allowed: list[str]) -> None:
        self.allowed = allowed


def _compile(path: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    parameters = tuple(_PARAMETER.findall(path))
    if len(set(parameters)) != len(parameters):
        raise ValueError(f"route path {path!r} names a parameter twice")
    regex = "".join(
        f"(?P<{part[1:-1]}>[^/]+)" if _PARAMETER.fullmatch(part) else re.escape(part)
        for part in re.split(r"(\{[A-Za-z_][A-Za-z0-9_]*\})", path)
        if part
    )
    return re.compile(f"^{regex}$"), parameters


class RouteTable:
    """Operations by path, rebuilt from discovery plus the explicit routes."""

    def __init__(self, operations: Iterable[Operation] = ()) -> None:
        self.operations = list(operations)
        self._exact: dict[str, dict[str, Operation]] = {}
        self._templated: list[Operation] = []
        for operation in self.operations:
            if operation.parameters:
                self._templated.append(operation)
            else:
                self._exact.setdefault(operation.path, {})[operation.method] = operation
        self.commands = frozenset(operation.command for operation in self.operations)

    @classmethod
    def build(
        cls,
        records: Iterable[ServiceRecord],
        *,
        prefix: str,
        routes: Iterable[Route] = (),
        schemas: Mapping[str, dict[str, Any]] | None = None,
        exclude: Iterable[str] = (),
    ) -> RouteTable:
        """The table for the services in ``records`` (several instances of one service count
        once) and the explicit ``routes`` whose command is served by one of them."""
        schemas = schemas or {}
        hidden = list(exclude)
        endpoints: dict[str, tuple[str, Any]] = {}
        for record in sorted(records, key=lambda record: (record.service, record.id)):
            for endpoint in record.endpoints:
                if endpoint.kind == "fallback":
                    continue  # answers commands nobody serves: it has no route of its own
                if not any(fnmatch.fnmatchcase(endpoint.name, pattern) for pattern in hidden):
                    endpoints.setdefault(endpoint.name, (record.service, endpoint))
        operations: list[Operation] = []
        taken: set[tuple[str, str]] = set()

        def add(operation: Operation) -> None:
            key = (operation.method, operation.path)
            if key in taken:
                _log.warning("route taken twice; first kept", path=operation.path)
                return
            taken.add(key)
            operations.append(operation)

        for route in routes:
            found = endpoints.get(route.command)
            if found is None:
                continue  # not served right now: the route comes back with its service
            service, endpoint = found
            pattern, parameters = _compile(route.path)
            add(
                Operation(
                    method=route.method,
                    path=route.path,
                    command=route.command,
                    kind=endpoint.kind,
                    service=service,
                    request_schema=route.request_schema
                    or schemas.get(route.command)
                    or endpoint.request_schema,
                    reply_schema=endpoint.reply_schema,
                    description=route.summary or endpoint.metadata.get("micro.description", ""),
                    parameters=parameters,
                    generated=False,
                    pattern=pattern,
                )
            )
        for name, (service, endpoint) in sorted(endpoints.items()):
            path = f"{prefix}/{_UNSAFE.sub('-', service)}/{slug(name, service)}"
            add(
                Operation(
                    method="GET" if endpoint.kind == "view" else "POST",
                    path=path,
                    command=name,
                    kind=endpoint.kind,
                    service=service,
                    request_schema=schemas.get(name) or endpoint.request_schema,
                    reply_schema=endpoint.reply_schema,
                    description=endpoint.metadata.get("micro.description", ""),
                )
            )
        return cls(operations)

    def match(
        self, method: str, path: str
    ) -> tuple[Operation, dict[str, str]] | MethodNotAllowed | None:
        """The operation for a request with its path parameters, or why there is none."""
        allowed: list[str] = []
        exact = self._exact.get(path)
        if exact is not None:
            operation = exact.get(method)
            if operation is not None:
                return operation, {}
            allowed.extend(exact)
        for operation in self._templated:
            matched = operation.pattern.match(path)
            if matched is None:
                continue
            if operation.method == method:
                return operation, matched.groupdict()
            allowed.append(operation.method)
        if allowed:
            return MethodNotAllowed(sorted(set(allowed)))
        return None

    def by_command(self, command: str) -> list[Operation]:
        return [operation for operation in self.operations if operation.command == command]
