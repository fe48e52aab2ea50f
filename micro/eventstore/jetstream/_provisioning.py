"""Stream provisioning: create the event stream, or check that the one found is safe.

micro creates its stream with the settings event sourcing needs (file storage, no limits,
atomic batches, direct gets, delete and purge denied) and never changes an existing one:
a stream that could lose, reorder or mix up events is refused with a ``ConfigError`` that
says how to fix it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import structlog
from nats.aio.client import Client
from nats.errors import NoRespondersError

from micro.errors import ConfigError, EventStoreUnavailableError
from micro.eventstore.jetstream._api import (
    NANOS,
    STREAM_NAME_IN_USE,
    STREAM_NOT_FOUND,
    ApiError,
    Subjects,
    api_request,
    translate,
)

__all__ = ["StreamProvisioning"]

_log = structlog.get_logger("micro.eventstore")


class StreamProvisioning:
    """The event stream's wanted configuration, and the requests that make it so."""

    def __init__(self, subjects: Subjects, *, replicas: int, duplicate_window: float) -> None:
        self._subjects = subjects
        self._replicas = replicas
        self._duplicate_window = duplicate_window

    def config(self) -> dict[str, Any]:
        return {
            "name": self._subjects.stream,
            "description": "micro events",
            "subjects": [self._subjects.filter],
            "retention": "limits",
            "storage": "file",
            "num_replicas": self._replicas,
            "discard": "old",
            "max_msgs": -1,
            "max_bytes": -1,
            "max_age": 0,
            "max_msgs_per_subject": -1,
            "max_msg_size": -1,
            "duplicate_window": int(self._duplicate_window * NANOS),
            "allow_atomic": True,
            "allow_direct": True,
            # Events are history: nothing may remove them one by one or in bulk.
            "deny_delete": True,
            "deny_purge": True,
        }

    async def ensure_in_time(self, client: Client, timeout: float, start_timeout: float) -> None:
        """``ensure``, asked again while JetStream is only slow to answer.

        A cluster that is still electing its leaders (just started, or a node just came
        back) lets stream requests time out for a few seconds; a service starting then
        waits for it, up to ``start_timeout``, instead of dying. A server without
        JetStream (no responders) or a refusal is an answer, and fails at once.
        """
        deadline = time.monotonic() + start_timeout
        delay = 0.1
        while True:
            try:
                await self.ensure(client, timeout)
                return
            except EventStoreUnavailableError as error:
                if isinstance(error.__cause__, NoRespondersError):
                    raise
                if time.monotonic() + delay > deadline:
                    raise
                _log.warning(
                    "JetStream is not answering yet; asking again",
                    stream=self._subjects.stream,
                    reason=str(error),
                    retry_in=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def ensure(self, client: Client, timeout: float) -> None:
        what = f"stream {self._subjects.stream}"
        try:
            info = await api_request(client, self._subjects.stream_info, b"", timeout)
        except ApiError as error:
            if error.err_code != STREAM_NOT_FOUND:
                raise translate(what, error) from error
            try:
                info = await api_request(
                    client, self._subjects.stream_create, orjson.dumps(self.config()), timeout
                )
            except ApiError as create_error:
                if create_error.err_code != STREAM_NAME_IN_USE:
                    raise translate(f"creating {what}", create_error) from create_error
                # Another process created it first: check what it made.
                info = await self.info(client, timeout)
            else:
                _log.info("created event stream", stream=self._subjects.stream)
        self.check(info.get("config") or {})

    def check(self, found: dict[str, Any]) -> None:
        """Refuse a stream whose configuration could lose, reorder or mix up events."""
        wanted = self.config()
        problems = []

        def differs(key: str, ok: bool) -> None:
            if not ok:
                problems.append(f"{key} is {found.get(key)!r}, needs {wanted[key]!r}")

        differs("subjects", found.get("subjects") == wanted["subjects"])
        differs("storage", found.get("storage") == "file")
        differs("retention", found.get("retention") == "limits")
        differs("num_replicas", int(found.get("num_replicas") or 1) == self._replicas)
        differs("allow_atomic", bool(found.get("allow_atomic")))
        differs("allow_direct", bool(found.get("allow_direct")))
        differs("duplicate_window", found.get("duplicate_window") == wanted["duplicate_window"])
        for limit in ("max_msgs", "max_bytes", "max_msgs_per_subject"):
            differs(limit, int(found.get(limit) or -1) <= 0)
        differs("max_age", not found.get("max_age"))
        if found.get("sealed"):
            problems.append("the stream is sealed")
        if problems:
            raise ConfigError(
                f"JetStream stream {self._subjects.stream} exists with an incompatible "
                f"configuration: {'; '.join(problems)}. Fix it with `nats stream edit`, "
                "or use another namespace; micro never changes an existing stream itself.",
                details={"stream": self._subjects.stream, "problems": problems},
            )

    # -- low-level requests ----------------------------------------------------------------

    async def info(self, client: Client, timeout: float) -> dict[str, Any]:
        """The state of a stream known to exist, asked again while a replica says "not found".

        Until a new replicated stream has elected its leader, every replica answers info
        requests from its local copy, and one that has not made that copy yet answers "not
        found" at once, ahead of the others: a service starting beside the one that created
        the stream can get that answer. Only an answer that persists to the timeout counts.
        """
        deadline = time.monotonic() + timeout
        pause = 0.02
        while True:
            try:
                return await api_request(client, self._subjects.stream_info, b"", timeout)
            except ApiError as error:
                left = deadline - time.monotonic()
                if error.err_code != STREAM_NOT_FOUND or left <= 0:
                    raise
                await asyncio.sleep(min(pause, left))
                pause = min(pause * 2, 0.5)
