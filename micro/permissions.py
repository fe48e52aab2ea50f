"""Least-privilege NATS permissions, computed from an app (``micro permissions APP``).

Each block is a nats-server ``permissions`` block that pastes into a server config as it is
(``authorization { users: [ {user: bank, password: ..., permissions: <block>} ] }``) or into
a user JWT (``nsc edit user --allow-pub ... --allow-sub ...``). Three profiles:

- the **service** the app defines: it serves its own command subjects (queue group), answers
  ``$SRV`` for its own name, subscribes only to its own inbox, appends only to its own event
  subjects (``<namespace>.ev.<service>.>``), and reaches the JetStream API only for the
  streams, consumers, key-value buckets and object stores it uses, each named;
- a pure **caller** (a script, ``micro act``): it sends commands and reads its own replies;
- the **gateway**: a caller that also follows the event stream for its live feed.

What stays broad, and why: any profile may send any command of the namespace
(``<namespace>.cmd.>``), since who may do what is decided by the services' rules and the
tokens in the request, not by the bus; and the event stream's consumers are ephemeral, so
their names are ``*``. Every service reads the whole event log of its namespace: read
models and processes follow other services' events.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from micro.bus.subjects import (
    announce_subject,
    command_subject,
    event_subject,
    fallback_subject,
    inbox_prefix,
    service_subscriptions,
)
from micro.eventstore.jetstream._api import Subjects

if TYPE_CHECKING:
    from micro.app import Micro
    from micro.settings import Settings

__all__ = [
    "caller_permissions",
    "gateway_permissions",
    "process_permissions",
    "profiles",
    "service_permissions",
]

_JS = "$JS.API"
RESPONSES: dict[str, Any] = {"max": 100_000, "expires": "10m"}
"""Replies a user may send to one request's inbox, and for how long (streams send many)."""


def _event_reading(settings: Settings) -> list[str]:
    """Reading the event stream: its state, single and batched gets, ephemeral consumers.

    Spelled by the store's own ``Subjects``, so the two cannot drift apart.
    """
    subjects = Subjects(settings.namespace)
    return [
        subjects.stream_info,
        subjects.message_get,
        subjects.direct_get,
        subjects.consumer_create("*"),
        subjects.consumer_next("*"),
        subjects.consumer_delete("*"),
    ]


def _consumers(stream: str) -> list[str]:
    """nats-py's watchers and ordered consumers on a bucket's stream (named or not)."""
    return [
        f"{_JS}.CONSUMER.CREATE.{stream}",
        f"{_JS}.CONSUMER.CREATE.{stream}.>",
        f"{_JS}.CONSUMER.DELETE.{stream}.>",
        f"{_JS}.CONSUMER.INFO.{stream}.>",
    ]


def _key_value(bucket: str) -> list[str]:
    stream = f"KV_{bucket}"
    return [
        f"{_JS}.STREAM.INFO.{stream}",
        f"{_JS}.STREAM.CREATE.{stream}",
        f"{_JS}.STREAM.MSG.GET.{stream}",
        f"{_JS}.DIRECT.GET.{stream}.>",
        *_consumers(stream),
        f"$KV.{bucket}.>",
    ]


def _object_store(bucket: str) -> list[str]:
    stream = f"OBJ_{bucket}"
    return [
        f"{_JS}.STREAM.INFO.{stream}",
        f"{_JS}.STREAM.CREATE.{stream}",
        # Replacing an object purges the chunks of the one it replaces.
        f"{_JS}.STREAM.PURGE.{stream}",
        f"{_JS}.STREAM.MSG.GET.{stream}",
        f"{_JS}.DIRECT.GET.{stream}.>",
        *_consumers(stream),
        f"$JS.FC.{stream}.>",
        f"$O.{bucket}.>",
        # nats-py finds the stream of an object's chunks by asking for stream names (a
        # read-only list of names; nothing in them).
        f"{_JS}.STREAM.NAMES",
    ]


def _block(publish: list[str], subscribe: list[str]) -> dict[str, Any]:
    return {
        "publish": {"allow": sorted(set(publish))},
        "subscribe": {"allow": sorted(set(subscribe))},
        "allow_responses": dict(RESPONSES),
    }


def _caller_subjects(
    settings: Settings, name: str, inbox: str | None = None
) -> tuple[list[str], list[str]]:
    namespace = settings.namespace
    # A call nobody serves goes on to the namespace's fallback, if one is served.
    publish = [f"{namespace}.cmd.>", fallback_subject(namespace), "$SRV.>"]
    subscribe = [
        f"{inbox or inbox_prefix(name)}.>",
        *service_subscriptions(name, "*"),
        # A directory (the gateway's, discover()) hears instances start and stop here.
        announce_subject(namespace, "*"),
    ]
    return publish, subscribe


def service_permissions(micro: Micro) -> dict[str, Any]:
    """What the service ``micro`` defines needs, and nothing more."""
    settings = micro.settings
    namespace, service = settings.namespace, settings.service
    publish, subscribe = _caller_subjects(settings, service, settings.nats_inbox_prefix)
    subscribe.extend(command_subject(namespace, name) for name in micro.endpoints)
    subscribe.extend(_emit_subjects(micro))
    if micro._fallback is not None:
        subscribe.append(fallback_subject(namespace))
    # Which names a handler emits is known only when it runs.
    publish.append(f"{namespace}.emit.>")
    publish.append(announce_subject(namespace, "*"))  # its instances' start and stop
    modules = set(micro.modules.order(list(micro.modules.wanted)))
    if "commander" in modules and settings.event_store == "jetstream":
        events = Subjects(namespace, service)
        publish.extend(_event_reading(settings))
        publish.append(events.stream_create)
        publish.append(events.event(">"))
    if "app_stream" in modules:
        publish.extend(_key_value(f"{namespace}_checkpoints"))
    if "snapshooter" in modules:
        publish.extend(_object_store(f"{namespace}_snapshots"))
    if "config" in modules:
        publish.extend(_key_value(f"{namespace}_config"))
    return _block(publish, subscribe)


def _emit_subjects(micro: Micro) -> list[str]:
    """What the app's ``on(name, ...)`` listeners subscribe to."""
    namespace = micro.settings.namespace
    return [event_subject(namespace, listener.endpoint.name) for listener in micro._listeners]


def caller_permissions(settings: Settings, name: str = "cli") -> dict[str, Any]:
    """A pure caller (a script, ``micro act``) running with ``MICRO_SERVICE=name``."""
    publish, subscribe = _caller_subjects(settings, name)
    return _block(publish, subscribe)


def gateway_permissions(settings: Settings, name: str = "gateway") -> dict[str, Any]:
    """The gateway: a caller that also follows the event stream (its live feed)."""
    publish, subscribe = _caller_subjects(settings, name)
    publish.extend(_event_reading(settings))
    return _block(publish, subscribe)


def process_permissions(apps: Sequence[Micro], connection: str, *, feed: bool) -> dict[str, Any]:
    """Several apps served by one process on one shared connection (``micro run`` of a
    portal or of several apps): what each needs, under the one identity ``connection``
    (the service name of the Micro that opens the connection, and so of its inbox).

    ``feed``: the process also runs a gateway, whose live feed reads the event stream.
    """
    settings = apps[0].settings if apps else None
    if settings is None:
        from micro.settings import Settings

        settings = Settings()
    publish, subscribe = _caller_subjects(settings, connection, settings.nats_inbox_prefix)
    for app in apps:
        block = service_permissions(app)
        own_inbox = f"{app.settings.nats_inbox_prefix or inbox_prefix(app.settings.service)}.>"
        publish.extend(block["publish"]["allow"])
        subscribe.extend(s for s in block["subscribe"]["allow"] if s != own_inbox)
    if feed:
        publish.extend(_event_reading(settings))
    return _block(publish, subscribe)


def profiles(micro: Micro, *, caller: str = "cli", gateway: str = "gateway") -> dict[str, Any]:
    """``{"service", "permissions", "caller", "gateway"}``: every block for one app."""
    settings = micro.settings
    return {
        "service": settings.service,
        "permissions": service_permissions(micro),
        "caller": {"user": caller, "permissions": caller_permissions(settings, caller)},
        "gateway": {"user": gateway, "permissions": gateway_permissions(settings, gateway)},
    }
