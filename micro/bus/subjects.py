"""Every NATS subject micro uses is built here, and nowhere else.

Command names are what users type ("open account", "math.add"), so they are encoded into one
subject token: letters, digits and ``-`` stay as they are, a space becomes ``_``, and every
other character becomes ``~`` plus the hex of its UTF-8 bytes. The encoding is injective and
reversible (``decode_name(encode_name(n)) == n``) and keeps common names readable.
"""

from __future__ import annotations

__all__ = [
    "MAX_NAME_LENGTH",
    "check_name",
    "command_subject",
    "decode_name",
    "encode_name",
    "event_subject",
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


def event_subject(namespace: str, name: str) -> str:
    """``<namespace>.emit.<token>``: where fire-and-forget events of that name go."""
    return f"{namespace}.emit.{encode_name(name)}"
