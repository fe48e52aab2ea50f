"""Every NATS subject micro uses is built here, and nowhere else.

Command names are what users type ("open account", "math.add"), so they are encoded into one
subject token: letters, digits and ``-`` stay as they are, a space becomes ``_``, and every
other character becomes ``~`` plus the hex of its UTF-8 bytes. The encoding is injective and
reversible (``decode_name(encode_name(n)) == n``) and keeps common names readable.
"""

from __future__ import annotations

__all__ = [
    "MAX_NAME_LENGTH",
    "SERVICE_PREFIX",
    "SERVICE_VERBS",
    "check_name",
    "command_subject",
    "decode_name",
    "encode_name",
    "endpoint_name",
    "event_subject",
    "service_subject",
    "service_subscriptions",
]

MAX_NAME_LENGTH = 200
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


def check_name(name: object, what: str = "command name") -> str:
    """Return ``name`` if it can name a command, else raise ``ValueError`` saying why."""
    if not isinstance(name, str):
        raise ValueError(f"{what} must be a string, not {type(name).__name__}")
    if not name or not name.strip():
        raise ValueError(f"{what} must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"{what} is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}")
    for char in name:
        if ord(char) < 32 or ord(char) == 127 or (0x80 <= ord(char) < 0xA0):
            raise ValueError(f"{what} {name[:50]!r} contains a control character {char!r}")
    return name


def encode_name(name: str) -> str:
    """The subject token for a command name."""
    out: list[str] = []
    for char in name:
        if char in _PLAIN:
            out.append(char)
        elif char == " ":
            out.append("_")
        else:
            out.append("".join(f"~{byte:02X}" for byte in char.encode()))
    return "".join(out)


def decode_name(token: str) -> str:
    """The command name a subject token stands for (inverse of ``encode_name``)."""
    raw = bytearray()
    index = 0
    while index < len(token):
        char = token[index]
        if char == "~":
            raw.append(int(token[index + 1 : index + 3], 16))
            index += 3
            continue
        raw.extend(b" " if char == "_" else char.encode())
        index += 1
    return raw.decode()


def command_subject(namespace: str, name: str) -> str:
    """``<namespace>.cmd.<token>``: where requests for a command go."""
    return f"{namespace}.cmd.{encode_name(name)}"


def fallback_subject(namespace: str) -> str:
    """``<namespace>.fallback``: where a call goes when no service serves its command."""
    return f"{namespace}.fallback"


def event_subject(namespace: str, name: str) -> str:
    """``<namespace>.emit.<token>``: where fire-and-forget events of that name go."""
    return f"{namespace}.emit.{encode_name(name)}"


# -- the NATS Services API (ADR-32) ------------------------------------------------------
# These subjects are not namespaced: ADR-32 fixes them so that standard tooling finds every
# service. Namespaces are told apart by the ``micro.namespace`` metadata of each service.

SERVICE_PREFIX = "$SRV"
SERVICE_VERBS = ("PING", "INFO", "STATS")
_ENDPOINT_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def service_subject(verb: str, service: str | None = None, instance: str | None = None) -> str:
    """``$SRV.<VERB>[.<service>[.<id>]]``: where discovery requests go."""
    if verb not in SERVICE_VERBS:
        raise ValueError(f"unknown $SRV verb {verb!r}; verbs are {', '.join(SERVICE_VERBS)}")
    if instance is not None and service is None:
        raise ValueError("a $SRV subject names an instance only together with its service")
    parts = [SERVICE_PREFIX, verb]
    if service is not None:
        parts.append(service)
        if instance is not None:
            parts.append(instance)
    return ".".join(parts)


def service_subscriptions(service: str, instance: str) -> list[str]:
    """What one service instance subscribes to answer every verb at every level of detail.

    One wildcard per level instead of one subject per verb: three subscriptions, and an
    unknown verb reaches the service, which then simply does not answer it.
    """
    return [
        f"{SERVICE_PREFIX}.*",
        f"{SERVICE_PREFIX}.*.{service}",
        f"{SERVICE_PREFIX}.*.{service}.{instance}",
    ]


def endpoint_name(name: str) -> str:
    """A command name as an ADR-32 endpoint name (letters, digits, ``-`` and ``_`` only).

    Not reversible: discovery carries the real name in the ``micro.command`` metadata.
    """
    return "".join(char if char in _ENDPOINT_PLAIN else "_" for char in name) or "_"
