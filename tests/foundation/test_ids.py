"""Hot-path ids: valid version-4 UUIDs, never repeated by an application's random seed."""

from __future__ import annotations

import os
import random
import uuid

from micro._ids import random_hex64, random_uuid


def test_random_uuids_are_version_4_and_round_trip() -> None:
    for _ in range(1000):
        value = random_uuid()
        assert value.version == 4
        assert value.variant == uuid.RFC_4122
        assert uuid.UUID(str(value)) == value
        assert hash(uuid.UUID(str(value))) == hash(value)


def test_seeding_the_random_module_does_not_repeat_ids() -> None:
    random.seed(42)
    first = [random_uuid() for _ in range(3)], [random_hex64() for _ in range(3)]
    random.seed(42)
    second = [random_uuid() for _ in range(3)], [random_hex64() for _ in range(3)]
    assert first[0] != second[0]
    assert first[1] != second[1]


def test_a_forked_child_draws_ids_of_its_own() -> None:
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's side
        os.write(writer, str(random_uuid()).encode())
        os._exit(0)
    os.close(writer)
    theirs = os.read(reader, 64).decode()
    os.close(reader)
    os.waitpid(child, 0)
    assert theirs
    assert theirs != str(random_uuid())  # without the reseed, both would draw the same
