"""A handler made callable the one way the responder needs, with its schemas.

Handlers come in many shapes: sync or async, taking nothing, the payload, or the payload and
a ``Context``; typed with a pydantic model or plain hints, or not typed at all. All of that is
worked out once, when the handler is added, so serving a request costs no introspection.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pydantic
from pydantic import BaseModel, TypeAdapter

from micro.bus.hooks import check_middleware
from micro.bus.subjects import check_name
from micro.context import Context
from micro.errors import ValidationError

__all__ = ["Endpoint", "Middleware", "field_errors"]

Handler = Callable[..., Any]
CallNext = Callable[[Any, Context], Awaitable[Any]]


class Middleware(Protocol):
    """``async def middleware(payload, ctx, call_next) -> reply``, wrapping one endpoint.

    Usage::

        async def timed(payload, ctx, call_next):
            started = time.monotonic()
            try:
                return await call_next(payload, ctx)
            finally:
                log.info("took", seconds=time.monotonic() - started)

        micro.use("deposit", timed)
    """

    def __call__(self, payload: Any, ctx: Context, call_next: CallNext, /) -> Awaitable[Any]: ...


def field_errors(error: pydantic.ValidationError) -> list[dict[str, Any]]:
    """One entry per bad field: its dotted path, the reason, and pydantic's error type."""
    return ValidationError.from_pydantic(error).fields


@dataclass(slots=True)
class Endpoint:
    """One command or view served by this process."""

    name: str
    handler: Handler
    kind: str = "command"
    description: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    middleware: list[Middleware] = field(default_factory=list)
    takes_payload: bool = True
    takes_context: bool = False
    is_async: bool = False
    request_adapter: TypeAdapter[Any] | None = None
    reply_adapter: TypeAdapter[Any] | None = None
    idempotent: bool = False
    declared_request_schema: dict[str, Any] | None = None
    """A schema validated elsewhere (a command's rule) but published in discovery."""
    declared_reply_schema: dict[str, Any] | None = None

    @classmethod
    def build(
        cls, name: str, handler: Handler, *, kind: str = "command", **options: Any
    ) -> Endpoint:
        check_name(name, f"{kind} name")
        if not callable(handler):
            raise TypeError(f"the handler of {name!r} is not callable: {handler!r}")
        for key in options.get("metadata") or {}:
            if isinstance(key, str) and key.startswith("micro."):
                raise ValueError(
                    f"metadata key {key!r} of {name!r}: keys starting with 'micro.' are reserved"
                )
        for middleware in options.get("middleware") or []:
            check_middleware(name, middleware)
        endpoint = cls(name=name, handler=handler, kind=kind, **options)
        endpoint._inspect()
        return endpoint

    def _inspect(self) -> None:
        handler = self.handler
        target = handler.__call__ if not inspect.isroutine(handler) else handler  # type: ignore[operator]
        self.is_async = inspect.iscoroutinefunction(target)
        try:
            signature = inspect.signature(handler)
        except (TypeError, ValueError):  # some builtins have no signature: payload only
            return
        try:
            hints = typing.get_type_hints(handler)
        except Exception:
            hints = {}
        positional = [
            parameter
            for parameter in signature.parameters.values()
            if parameter.kind
            in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        ]
        has_var_positional = any(
            parameter.kind is inspect.Parameter.VAR_POSITIONAL
            for parameter in signature.parameters.values()
        )
        if len(positional) > 2:
            required = [p for p in positional[2:] if p.default is inspect.Parameter.empty]
            if required:
                raise TypeError(
                    f"the handler of {self.name!r} takes too many arguments: a handler takes "
                    "(payload) or (payload, ctx)"
                )
        payload_parameter = None
        if not positional and not has_var_positional:
            self.takes_payload = False
        elif positional and hints.get(positional[0].name) is Context:
            # ``def handler(ctx: Context)``: no payload wanted.
            self.takes_payload = False
            self.takes_context = True
        else:
            payload_parameter = positional[0] if positional else None
            self.takes_context = len(positional) >= 2 or has_var_positional
        if payload_parameter is not None:
            annotation = hints.get(payload_parameter.name)
            if annotation is not None and annotation is not Any:
                self.request_adapter = TypeAdapter(annotation)
        returned = hints.get("return")
        if returned is not None and returned is not Any and returned is not type(None):
            if inspect.iscoroutinefunction(target) and typing.get_origin(returned) is Awaitable:
                returned = typing.get_args(returned)[0]
            try:
                self.reply_adapter = TypeAdapter(returned)
            except pydantic.PydanticSchemaGenerationError:
                self.reply_adapter = None

    def parse(self, payload: Any, command: str | None = None) -> Any:
        """The payload as the handler wants it; ``ValidationError`` listing each bad field.

        ``command`` names the command asked for when it is not this endpoint's own (a
        fallback answering for a command nobody serves)."""
        if self.request_adapter is None:
            return payload
        try:
            return self.request_adapter.validate_python(payload)
        except pydantic.ValidationError as error:
            what = f"payload for {command or self.name!r}"
            raise ValidationError.from_pydantic(error, what=what) from None

    def request_schema(self) -> dict[str, Any] | None:
        if self.declared_request_schema is not None:
            return self.declared_request_schema
        return _schema(self.request_adapter)

    def reply_schema(self) -> dict[str, Any] | None:
        if self.declared_reply_schema is not None:
            return self.declared_reply_schema
        return _schema(self.reply_adapter)

    def dump(self, reply: Any) -> Any:
        """A pydantic reply as plain JSON data; anything else as it is."""
        if isinstance(reply, BaseModel):
            return reply.model_dump(mode="json")
        return reply


def _schema(adapter: TypeAdapter[Any] | None) -> dict[str, Any] | None:
    if adapter is None:
        return None
    try:
        return adapter.json_schema()
    except pydantic.PydanticInvalidForJsonSchema:
        return None
