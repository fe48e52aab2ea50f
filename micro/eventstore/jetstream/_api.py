"""JetStream API plumbing: the subjects the store uses, one request, the error codes.

The store speaks the JetStream API directly (``$JS.API.*`` requests with JSON bodies)
rather than through nats-py's JetStream context: it needs the atomic batch headers, batched
direct gets and pipelined pull requests, which that context does not offer.
"""

from __future__ import annotations

from typing import Any

import orjson
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError

from micro.errors import (
    EventStoreUnavailableError,
    InternalError,
    MicroError,
    PayloadTooLargeError,
)

__all__ = [
    "BATCH_DUPLICATE_ID",
    "DUPLICATE_IN_PROCESS",
    "NANOS",
    "NO_MESSAGE_FOUND",
    "PAYLOAD_TOO_LARGE",
    "STREAM_NAME_IN_USE",
    "STREAM_NOT_FOUND",
    "WRONG_LAST_SEQUENCE",
    "ApiError",
    "Subjects",
    "api_request",
    "translate",
    "unavailable",
]

NANOS = 1_000_000_000
"""JetStream durations are nanoseconds."""

# JetStream API error codes the store reacts to.
WRONG_LAST_SEQUENCE = {10071, 10164}
BATCH_DUPLICATE_ID = 10201
DUPLICATE_IN_PROCESS = 10158
STREAM_NOT_FOUND = 10059
STREAM_NAME_IN_USE = 10058
NO_MESSAGE_FOUND = 10037
PAYLOAD_TOO_LARGE = 10054


class Subjects:
    """Every subject and name the store uses, built in this one place."""

    def __init__(self, namespace: str) -> None:
        self.stream = f"{namespace.upper()}_EVENTS"
        self.prefix = f"{namespace}.ev."
        self.filter = f"{namespace}.ev.>"
        api = "$JS.API"
        self.stream_info = f"{api}.STREAM.INFO.{self.stream}"
        self.stream_create = f"{api}.STREAM.CREATE.{self.stream}"
        self.message_get = f"{api}.STREAM.MSG.GET.{self.stream}"
        self.direct_get = f"{api}.DIRECT.GET.{self.stream}"
        self._consumer = f"{api}.CONSUMER"

    def event(self, stream: str) -> str:
        return self.prefix + stream

    def consumer_create(self, name: str) -> str:
        return f"{self._consumer}.CREATE.{self.stream}.{name}"

    def consumer_delete(self, name: str) -> str:
        return f"{self._consumer}.DELETE.{self.stream}.{name}"

    def consumer_next(self, name: str) -> str:
        return f"{self._consumer}.MSG.NEXT.{self.stream}.{name}"


class ApiError(Exception):
    """A JetStream API error reply, before translation into a ``MicroError``."""

    def __init__(self, error: dict[str, Any]) -> None:
        self.code = int(error.get("code") or 0)
        self.err_code = int(error.get("err_code") or 0)
        self.description = str(error.get("description") or "JetStream error")
        super().__init__(f"{self.description} (err_code {self.err_code})")


def unavailable(what: str, error: BaseException) -> EventStoreUnavailableError:
    reason = str(error) or type(error).__name__
    return EventStoreUnavailableError(f"event store unavailable: {what}: {reason}")


def translate(what: str, error: ApiError) -> MicroError:
    if error.code == 503:
        return unavailable(what, error)
    if error.err_code == PAYLOAD_TOO_LARGE:
        return PayloadTooLargeError(f"{what}: {error.description}")
    return InternalError(f"{what}: JetStream refused: {error}", details={"err": error.err_code})


async def api_request(
    client: Client, subject: str, payload: bytes, timeout: float
) -> dict[str, Any]:
    """One JetStream API request; ``ApiError`` for an error reply."""
    try:
        reply = await client.request(subject, payload, timeout=timeout)
    except NoRespondersError as error:
        raise EventStoreUnavailableError(
            "event store unavailable: JetStream does not answer (is it enabled?)"
        ) from error
    except (TimeoutError, NatsError, OSError) as error:
        raise unavailable(subject, error) from error
    response: dict[str, Any] = orjson.loads(reply.data)
    if isinstance(response.get("error"), dict):
        raise ApiError(response["error"])
    return response
