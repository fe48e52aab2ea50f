"""What the command layer remembers of commands sent with an idempotency key.

A retried command finds its key here and gets the first answer again: the reply (from the
events its first run stored) or, when its rule refused it, the same refusal. The keys are
kept from the events themselves, as the projector applies them (``SeenCommands`` is the
projector's ``Ledger``), so every instance knows every key, and a snapshot keeps them with
the models.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from micro.errors import RuleViolation
from micro.eventstore.base import RecordedEvent
from micro.readmodel.event import Event

__all__ = ["REFUSALS_STREAM", "CommandRefused", "SeenCommand", "SeenCommands"]

_KEYS_REMEMBERED = 100_000

_WITH_REFUSALS = 3
"""The snapshot format from which each row carries the refusal (2: keys only)."""


REFUSALS_STREAM = "micro-refusals"
"""Where the refusals of commands sent with an idempotency key are stored."""


class CommandRefused(Event):
    """A command sent with an idempotency key was refused by its rule.

    Stored so that a retry under the same key, on any instance and after any restart, gets
    the same refusal instead of a new decision that may go the other way. Its event id is the
    one the command's first event would have had, so the store keeps only one of the two.
    Reducers and event handlers see it only if they ask for it by name.
    """

    command: str
    error: dict[str, Any]
    """The refusal as errors travel on the wire: ``code``, ``message``, ``details``."""

    @classmethod
    def type_name(cls) -> str:
        # A name no event class of an application can have (class names hold no dot): an
        # app's own ``CommandRefused`` must never be handed these.
        return "micro.CommandRefused"


_REFUSED = CommandRefused.type_name()


@dataclass(frozen=True, slots=True)
class SeenCommand:
    """What the projector knows of a command that carried an idempotency key."""

    stream: str
    position: int
    """Position of the command's last event (the one its reply carried)."""
    command: str
    version: int = 0
    """Version of the command's first event in its stream."""
    count: int = 1
    """How many events the command appended."""
    refusal: dict[str, Any] | None = None
    """The wire form of the error that refused the command; ``None`` when it succeeded."""


class SeenCommands(OrderedDict[str, SeenCommand]):
    """Idempotency key -> what its command did, oldest first (the projector's ledger)."""

    def see(self, event: RecordedEvent) -> None:
        """Note the command an event with an idempotency key came from."""
        key = event.metadata.get("idempotency_key")
        if not isinstance(key, str):
            return
        seen = self.get(key)
        refused = event.type == _REFUSED and event.stream == REFUSALS_STREAM
        if seen is not None and (refused or seen.refusal is not None):
            # A key has one outcome, the first stored. The store normally refuses the second
            # (same event id), but not every store can: ids unique per stream only, or a
            # duplicate window that has passed.
            return
        if (
            seen is not None
            and seen.stream == event.stream
            and seen.version + seen.count == event.version
        ):
            # the next event of the same command: one append stores them all in a row
            self[key] = SeenCommand(
                seen.stream, event.position, seen.command, seen.version, seen.count + 1
            )
            return
        refusal = None
        if refused:
            error = event.data.get("error")
            # Whatever its data, a refusal must never read as a success.
            refusal = error if isinstance(error, dict) else {"code": RuleViolation.code}
        self[key] = SeenCommand(
            event.stream,
            event.position,
            str(event.metadata.get("command", "")),
            event.version,
            refusal=refusal,
        )
        if len(self) > _KEYS_REMEMBERED:
            self.popitem(last=False)

    def dump(self) -> list[Any]:
        return [
            [
                key,
                seen.stream,
                seen.position,
                seen.command,
                seen.version,
                seen.count,
                seen.refusal,
            ]
            for key, seen in self.items()
        ]

    def load(self, rows: list[Any], *, snapshot_format: int) -> None:
        with_refusals = snapshot_format >= _WITH_REFUSALS
        for row in rows:
            if not isinstance(row, list) or len(row) != (7 if with_refusals else 6):
                raise ValueError("snapshot has a malformed idempotency key")
            key, stream, seen_position, command, version, count = row[:6]
            refusal = row[6] if with_refusals else None
            if refusal is not None and not isinstance(refusal, dict):
                raise ValueError("snapshot has a malformed refusal")
            if not with_refusals and stream == REFUSALS_STREAM:
                # An instance that kept no refusals saw one: only a replay says what it was.
                raise ValueError("snapshot lost why a command was refused")
            self[str(key)] = SeenCommand(
                str(stream), int(seen_position), str(command), int(version), int(count), refusal
            )
