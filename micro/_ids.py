"""Random ids for the hot path: event ids and trace ids without a system call each.

``uuid.uuid4()`` reads ``os.urandom`` and runs ``UUID.__init__`` on every event (about 2 µs);
ids here come from a generator of micro's own, seeded from ``os.urandom`` and seeded again in
a forked child, and the UUID is built straight from its 128 bits. Its own generator, not the
``random`` module's: an application that seeds ``random`` (a test, a simulation) must not
make two processes write the same event ids, which the store would take for retries.
"""

from __future__ import annotations

import os
import random
import uuid

__all__ = ["random_hex64", "random_uuid"]

_random = random.Random(os.urandom(32))
_bits = _random.getrandbits
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(32)))

_VERSION_4 = (4 << 76) | (0x8000 << 48)
_KEEP = ~((0xF000 << 64) | (0xC000 << 48))
_new = object.__new__
_assign = object.__setattr__
_UNKNOWN = uuid.SafeUUID.unknown


def random_uuid() -> uuid.UUID:
    """A random (version 4) UUID."""
    value = _new(uuid.UUID)
    _assign(value, "int", (_bits(128) & _KEEP) | _VERSION_4)
    _assign(value, "is_safe", _UNKNOWN)
    return value


def random_hex64() -> str:
    """A random 64-bit id in hex, as trace and span ids are."""
    return f"{_bits(64):016x}"
