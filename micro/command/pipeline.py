"""The command cycle: validate, decide, append, apply, reply.

    payload -> Request schema           -> ValidationError (each bad field)
            -> pre_validation(request)  -> ValidationError / RuleViolation
            -> validation(request, models)                 -> RuleViolation
            -> events(request, models) -> append(expected_version = version the models saw)
                 on ConcurrencyError: catch up, validate again, retry (bounded)
            -> wait until the local models applied the appended position (deadline)
            -> respond(request, models, events) -> reply carrying the position

The events a command appended are applied from the append's answer when the models are
right behind them (the subscription's copy is then skipped); otherwise, when other writers'
events are still on their way, the reply waits for the subscription to bring them all.

Commands on one stream are serialised within an instance (a lock per stream, held until
the models applied the events, so the next command decides on the new state); across
instances optimistic concurrency decides. A success reply is only sent once the event is
durably stored, so it is stored exactly once: retries carrying the same idempotency key
derive the same event ids and append nothing new. A keyed command its rule refused is
remembered as well (a ``micro.CommandRefused`` event): its retries get the same refusal, so an
answer once given never turns into its opposite. A command sent with ``min_position``
is decided once the local models applied that position (read-your-writes across instances:
a login right after a sign-up served elsewhere finds the user).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pydantic
import structlog

from micro._ids import random_uuid
from micro._keyed_locks import KeyedLocks
from micro._models import dump_json, validate
from micro.command.idempotency import REFUSALS_STREAM, CommandRefused, SeenCommand, SeenCommands
from micro.command.sheets import RuleSheet
from micro.context import Context
from micro.errors import (
    ConcurrencyError,
    ConfigError,
    ConflictError,
    ForbiddenError,
    InternalError,
    MicroError,
    NotFoundError,
    RuleViolation,
    TimeoutError,
    ValidationError,
)
from micro.eventstore.base import ANY, NO_STREAM, EventStore, ExpectedVersion, NewEvent
from micro.eventstore.base import validate_stream_name as _check_stream
from micro.readmodel.event import Event
from micro.readmodel.projector import Projector
from micro.telemetry import metrics, tracing

__all__ = ["CommandPipeline", "Guard", "event_id"]

_log = structlog.get_logger("micro.pipeline")

_REFUSALS = (RuleViolation, NotFoundError, ForbiddenError)
"""What a rule decides against the current state, remembered for a keyed command's retries.
(Not ``ConflictError``: the store raises it too, and schema errors do not depend on state.)"""

_ID_NAMESPACE = uuid.UUID("6f1b7d1e-3c1a-4d4e-9a59-7a1c0e2b5d10")
_REPLIES_REMEMBERED = 10_000

Guard = Callable[[RuleSheet, Context], Awaitable[None]]
"""Checks a command may run (authentication); raises to refuse."""


def event_id(idempotency_key: str, command: str, index: int) -> uuid.UUID:
    """The id of the ``index``-th event of a keyed command: the same on every retry."""
    return uuid.uuid5(_ID_NAMESPACE, f"{command}\x1f{idempotency_key}\x1f{index}")


class CommandPipeline:
    """Runs commands of one service against its store and models."""

    def __init__(
        self,
        store: EventStore,
        projector: Projector,
        *,
        max_retries: int = 3,
        reply_timeout: float = 5.0,
        guards: list[Guard] | None = None,
    ) -> None:
        if not isinstance(projector.ledger, SeenCommands):
            raise ConfigError(
                "a command pipeline needs its projector to keep the idempotency keys: "
                "Projector(..., ledger=SeenCommands())"
            )
        self.store = store
        self.projector = projector
        self.seen: SeenCommands = projector.ledger
        self.max_retries = max_retries
        self.reply_timeout = reply_timeout
        self.guards = guards if guards is not None else []
        self._locks = KeyedLocks()
        self._replies: OrderedDict[str, _Reply] = OrderedDict()

    def _parse(self, rule: RuleSheet, payload: Any) -> Any:
        try:
            return validate(rule.request, payload if payload is not None else {})
        except pydantic.ValidationError as error:
            what = f"payload for {rule.command!r}"
            raise ValidationError.from_pydantic(error, what=what) from None

    async def run(self, rule: RuleSheet, payload: Any, ctx: Context) -> Any:
        if ctx.min_position is not None:
            # Read-your-writes for commands too: a caller that saw position p (its sign-up,
            # its login) is checked and decided for on models that applied p, on any instance.
            await self.projector.wait_for(ctx.min_position, ctx.remaining or self.reply_timeout)
        for guard in self.guards:
            await guard(rule, ctx)
        request = self._parse(rule, payload)
        if rule.pre_validation is not None:
            try:
                await _maybe(rule.pre_validation(request))
            except (ValueError, AssertionError) as error:
                if isinstance(error, MicroError):
                    raise
                raise ValidationError(
                    f"invalid payload for {rule.command!r}: {error}",
                    details={"fields": [{"field": "payload", "reason": str(error)}]},
                ) from None
            except _REFUSALS as refusal:
                if ctx.idempotency_key is None:
                    raise
                return await self._repeat(
                    rule, request, await self._refuse(rule, refusal, ctx), ctx
                )
        stream = rule.stream(request)
        if not isinstance(stream, str):
            raise InternalError(f"the rule of {rule.command!r} named a stream that is not a string")
        try:
            _check_stream(stream)
        except ValidationError as error:
            # Streams are named from request fields (``account-{id}``): a name the store
            # refuses comes from the caller's input, so it is the caller's error to fix.
            reason = error.fields[0]["reason"] if error.fields else str(error)
            raise ValidationError(
                f"invalid payload for {rule.command!r}: the stream it names, "
                f"{stream[:80]!r}, {reason}",
                details={"fields": [{"field": "payload", "reason": f"stream name {reason}"}]},
            ) from None
        key = ctx.idempotency_key
        if key is not None:
            done = self._done(rule, key)
            if done is None:
                # Another instance (or this one before a restart) may have done it: the
                # events carry the key, and the projector knows every key it applied.
                await self.projector.catch_up(ctx.remaining or self.reply_timeout)
                done = self._done(rule, key)
            if done is not None:
                return await self._repeat(rule, request, done, ctx)
        async with self._locks.hold(stream):
            appended = None
            # A twin of this request may have run while this one waited for the lock.
            if key is None or self._done(rule, key) is None:
                try:
                    appended = await self._decide_and_append(rule, request, stream, ctx)
                except _REFUSALS as refusal:
                    if key is None:
                        raise
                    await self._refuse(rule, refusal, ctx)  # returns if done meanwhile
                if appended is not None:
                    await self._wait_applied(rule, appended[1], ctx)
        if appended is None:
            done = self._done(rule, key) if key is not None else None
            if done is None:  # pragma: no cover - only a keyed command is found done
                raise InternalError(f"{rule.command!r} was neither done nor appended")
            return await self._repeat(rule, request, done, ctx)
        produced, position = appended
        ctx.position = position
        reply = await self._respond(rule, request, produced, stream, position)
        if key is not None:
            self._replies[key] = _Reply(rule.command, reply, position)
            if len(self._replies) > _REPLIES_REMEMBERED:
                self._replies.popitem(last=False)
        return reply

    def _done(self, rule: RuleSheet, key: str) -> _Reply | SeenCommand | None:
        """What is known of a command already done under ``key``, if it was."""
        done: _Reply | SeenCommand | None = self._replies.get(key)
        if done is None:
            done = self.seen.get(key)
        if done is not None and done.command and done.command != rule.command:
            raise ValidationError(
                f"idempotency key {key!r} was already used for {done.command!r}",
                details={"fields": [{"field": "idempotency_key", "reason": "reused"}]},
            )
        return done

    async def _repeat(
        self, rule: RuleSheet, request: Any, done: _Reply | SeenCommand, ctx: Context
    ) -> Any:
        """The reply to a command already done: remembered, or made again from its events."""
        if isinstance(done, SeenCommand) and done.refusal is not None:
            raise MicroError.from_wire({"error": done.refusal})
        ctx.position = done.position
        if isinstance(done, _Reply):
            return done.reply
        stored = await self.store.read(done.stream, done.version, done.count)
        types = self.projector.types
        produced = [
            decoded
            for event in stored
            if isinstance(decoded := types.decode(event.type, event.data, event.metadata), Event)
        ]
        return await self._respond(rule, request, produced, done.stream, done.position)

    async def _decide_and_append(
        self, rule: RuleSheet, request: Any, stream: str, ctx: Context
    ) -> tuple[list[Event], int] | None:
        """Decide and append; ``None`` when the keyed command turns out to be done already."""
        models = self.projector.models
        key = ctx.idempotency_key
        for attempt in range(self.max_retries + 1):
            if self.projector.failure is not None:
                await self.projector.wait_for(self.projector.position + 1, 0)  # raises
            version = self.projector.versions.get(stream)
            expected: ExpectedVersion = NO_STREAM if version is None else version
            with tracing.span("validate", **{"micro.command": rule.command}):
                if rule.validation is not None:
                    await _maybe(rule.validation(request, models))
                produced = await _maybe(rule.events(request, models))
            new_events = self._new_events(rule, produced, ctx)
            if not new_events:
                raise RuleViolation(f"{rule.command!r} decided that nothing happens")
            if ctx.deadline is not None and ctx.deadline <= time.time():
                # The caller gave up on this attempt and may be retrying the key elsewhere,
                # where the rule can decide otherwise (a refusal): appending now could store
                # a command whose last answer said it was refused.
                raise TimeoutError(
                    f"{rule.command!r} passed its deadline before it was stored; nothing was "
                    "stored",
                    details={"stored": False},
                )
            try:
                with tracing.span("append", **{"micro.stream": stream}):
                    started = time.perf_counter()
                    result = await self.store.append(stream, new_events, expected)
                if (measures := metrics.instruments()) is not None:
                    measures.append_duration.record(time.perf_counter() - started)
                    measures.append_batch.record(len(new_events))
            except ConcurrencyError:
                if attempt == self.max_retries:
                    raise
                # Someone else wrote the stream first: learn what they wrote, decide again,
                # unless it was this very command (a retry served by another instance).
                await self.projector.catch_up(ctx.remaining or self.reply_timeout)
                if key is not None and key in self.seen:
                    return None
                continue
            except ConflictError:
                if key is None:
                    raise
                # The key's event id is stored already, in another stream: the refusal of
                # this very command, by an instance that decided on other state.
                await self.projector.catch_up(ctx.remaining or self.reply_timeout)
                if key in self.seen:
                    return None
                raise
            self.projector.apply_appended(result.events)
            return list(produced), result.position
        raise AssertionError("unreachable")  # pragma: no cover

    async def _refuse(
        self, rule: RuleSheet, refusal: MicroError, ctx: Context
    ) -> _Reply | SeenCommand:
        """Store the refusal of a keyed command, then raise it.

        Retries of the key get this refusal from then on, on every instance: deciding again
        could accept what was refused, and a caller that acted on the refusal (a process
        manager that compensated) would see both. Returns instead of raising when the key
        turns out to be done already: the first outcome stands, and the caller answers with it.
        """
        key = ctx.idempotency_key
        assert key is not None
        done = self._done(rule, key)
        if done is not None:
            return done
        wire = refusal.to_wire()["error"]
        marker = CommandRefused(
            command=rule.command,
            error={"code": wire["code"], "message": wire["message"], "details": wire["details"]},
        )
        try:
            # The id of the command's first event (event_id(key, command, 0)): a success of
            # the same key on another instance and this refusal cannot both be stored.
            await self.store.append(REFUSALS_STREAM, self._new_events(rule, [marker], ctx), ANY)
        except Exception as error:
            if isinstance(error, ConflictError):  # that id is stored: the success came first
                with contextlib.suppress(MicroError):
                    await self.projector.catch_up(ctx.remaining or self.reply_timeout)
                done = self._done(rule, key)
                if done is not None:
                    return done
            # Nothing of the command was stored, so nothing is lost: a retry decides again.
            _log.warning(
                "refusal of a keyed command not stored",
                command=rule.command,
                idempotency_key=key,
                reason=str(error),
            )
        # Not kept among this instance's replies: a twin refused elsewhere at the same time
        # may have been stored first, and retries must get the refusal the models hold.
        raise refusal

    def _new_events(self, rule: RuleSheet, produced: Any, ctx: Context) -> list[NewEvent]:
        if isinstance(produced, Event):
            produced = [produced]
        if not isinstance(produced, list | tuple):
            raise InternalError(
                f"the rule of {rule.command!r} must return a list of events, "
                f"not {type(produced).__name__}"
            )
        metadata: dict[str, Any] = {
            "command": rule.command,
            "correlation_id": ctx.trace_id,
            "causation_id": ctx.span_id,
        }
        if ctx.user is not None:
            metadata["user"] = getattr(ctx.user, "id", str(ctx.user))
        if ctx.idempotency_key is not None:
            metadata["idempotency_key"] = ctx.idempotency_key
        tracing.inject(metadata)  # on_event handlers link their spans to this command's
        new_events = []
        for index, event in enumerate(produced):
            if not isinstance(event, Event):
                raise InternalError(
                    f"the rule of {rule.command!r} produced {type(event).__name__}, not an Event"
                )
            event_metadata = dict(metadata)
            if type(event).schema_version != 1:
                event_metadata["schema_version"] = type(event).schema_version
            new_events.append(
                NewEvent(
                    type=type(event).type_name(),
                    data=dump_json(event),
                    metadata=event_metadata,
                    id=event_id(ctx.idempotency_key, rule.command, index)
                    if ctx.idempotency_key is not None
                    else random_uuid(),
                )
            )
        return new_events

    async def _wait_applied(self, rule: RuleSheet, position: int, ctx: Context) -> None:
        wait = ctx.remaining if ctx.remaining is not None else self.reply_timeout
        try:
            with tracing.span("apply", **{"micro.position": position}):
                await self.projector.wait_for(position, max(wait - 0.05, 0.01))
        except TimeoutError:
            raise TimeoutError(
                f"{rule.command!r} WAS stored (position {position}) but the models did not "
                "apply it before the deadline; retry with the same idempotency key, "
                "not without one",
                details={"stored": True, "position": position},
            ) from None

    async def _respond(
        self, rule: RuleSheet, request: Any, produced: list[Event], stream: str, position: int
    ) -> Any:
        if rule.respond is None:
            return {
                "stream": stream,
                "position": position,
                "events": [type(event).type_name() for event in produced],
            }
        return await _maybe(rule.respond(request, self.projector.models, produced))


@dataclass(frozen=True, slots=True)
class _Reply:
    """A reply this instance sent for a keyed command, to send again on a retry."""

    command: str
    reply: Any
    position: int


async def _maybe(value: Any) -> Any:
    if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
        return await value
    return value
