"""The message body of one event, written and read back as fast as replay needs.

Body: ``{"id", "type", "version", "data", "metadata"}`` as JSON; the stream is the subject's
last token and the global position the JetStream stream sequence.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import orjson

from micro.eventstore.base import RecordedEvent

__all__ = ["build_event", "decode_event", "encode_envelope", "parse_uuid"]


def encode_envelope(
    event_id: str, event_type: str, version: int, data: bytes, metadata: bytes
) -> bytes:
    # The data and metadata were encoded (and checked) once; only the version changes
    # between attempts, so the body is assembled from bytes.
    return b"".join(
        (
            b'{"id":"',
            event_id.encode(),
            b'","type":',
            orjson.dumps(event_type),
            b',"version":',
            str(version).encode(),
            b',"data":',
            data,
            b',"metadata":',
            metadata,
            b"}",
        )
    )


def _uuid_parser() -> Callable[[str], uuid.UUID]:
    """``uuid.UUID(text)`` for the ids this store wrote, at half the cost.

    Replay is bound by per-event CPU; the full constructor accepts many spellings we never
    write. Falls back to it should ``uuid.UUID`` ever change its slots.
    """
    if set(getattr(uuid.UUID, "__slots__", ())) < {"int", "is_safe"}:
        return uuid.UUID
    new, assign, unknown, cls = object.__new__, object.__setattr__, uuid.SafeUUID.unknown, uuid.UUID

    def parse(text: str) -> uuid.UUID:
        if len(text) != 36:
            return cls(text)  # not one of ours: let the real parser judge it
        value = new(cls)
        assign(value, "int", int(text.replace("-", ""), 16))
        assign(value, "is_safe", unknown)
        return value

    return parse


def _event_builder() -> Callable[..., RecordedEvent]:
    """``RecordedEvent(...)`` without the frozen dataclass ``__init__``, for replay.

    A frozen dataclass sets each field through ``object.__setattr__``; the slot descriptors
    do the same job in half the time. Falls back to the class if its fields change.
    """
    order = ("id", "type", "stream", "version", "position", "data", "metadata")
    slots: list[Any] = [RecordedEvent.__dict__.get(field.name) for field in fields(RecordedEvent)]
    if tuple(field.name for field in fields(RecordedEvent)) != order or not all(
        hasattr(slot, "__set__") for slot in slots
    ):
        return RecordedEvent
    set_id, set_type, set_stream, set_version, set_position, set_data, set_metadata = (
        slot.__set__ for slot in slots
    )
    new = object.__new__

    def build(
        id: uuid.UUID,
        type: str,
        stream: str,
        version: int,
        position: int,
        data: dict[str, Any],
        metadata: dict[str, Any],
    ) -> RecordedEvent:
        event: RecordedEvent = new(RecordedEvent)
        set_id(event, id)
        set_type(event, type)
        set_stream(event, stream)
        set_version(event, version)
        set_position(event, position)
        set_data(event, data)
        set_metadata(event, metadata)
        return event

    return build


parse_uuid = _uuid_parser()
build_event = _event_builder()


def decode_event(stream: str, position: int, body: bytes) -> RecordedEvent:
    """One stored message as a ``RecordedEvent``."""
    envelope = orjson.loads(body)
    return RecordedEvent(
        id=uuid.UUID(envelope["id"]),
        type=envelope["type"],
        stream=stream,
        version=envelope["version"],
        position=position,
        data=envelope["data"],
        metadata=envelope["metadata"],
    )
