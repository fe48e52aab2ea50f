"""Interop: the official KurrentDB Node client and micro's esdb store, on one (fake) server.

A second witness of the protocol, written by others: what micro appended, the Node client reads
with the same type, data, metadata, revision and position; what the Node client appended (with
every kind of expected revision), micro reads and a service's reducer applies. Each answer is
checked against what the client's own types say a server returns (``AppendResult``,
``RecordedEvent``, ``WrongExpectedVersionError``, ``StreamNotFoundError``).

The npm package is installed once per test session into a temporary folder. The test is
skipped, with the reason, only when node or npm is missing.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from micro import Micro, Settings
from micro.eventstore.esdb import EsdbEventStore
from micro.testing.esdb_fake import FakeEventStoreDB
from tests.support import npm_install

HERE = Path(__file__).parent
TALLY = HERE.parent / "command" / "apps" / "tally"
PACKAGES = {"@kurrent/kurrentdb-client": "1.3.1"}


@pytest.fixture(scope="session")
def kurrentdb_js(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the KurrentDB Node client installed, and the client script."""
    folder = tmp_path_factory.mktemp("kurrentdb-js")
    npm_install(folder, PACKAGES, purpose="interop with the KurrentDB Node client")
    # ES modules resolve packages next to the script, so the script lives beside them
    shutil.copy(HERE / "kurrentdb_node_client.mjs", folder / "kurrentdb_node_client.mjs")
    return folder


@pytest.fixture(params=[True, False], ids=["batch-append", "append"])
def fake(request: pytest.FixtureRequest) -> Iterator[FakeEventStoreDB]:
    """A fake that lists its methods (the Node client then appends through BatchAppend, as
    the Python clients do), and one that does not, as servers before 21.10 (Append)."""
    with FakeEventStoreDB(server_features=request.param) as server:
        server.write_system_events()  # what a fresh node holds: readers must skip it
        yield server


def tally_service(settings: Settings, store: EsdbEventStore) -> Micro:
    """The tally test app (reducer: ``Added`` adds ``amount`` to tally ``id``) on ``store``."""
    micro = Micro(settings, service="tally", app_dir=TALLY)
    micro.commander.add_command("add")
    micro.add_view("tally", lambda query, models: models.tally.require(query["id"]).model_dump())
    micro.commander.store = store
    return micro


async def run_node(folder: Path, url: str, *streams: str) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        "node",
        str(folder / "kurrentdb_node_client.mjs"),
        url,
        *streams,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(90):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()[-3000:]
    seen: dict[str, Any] = json.loads(out)
    return seen


@pytest.mark.timeout(300)
async def test_the_node_client_and_micro_read_each_others_events(
    kurrentdb_js: Path, fake: FakeEventStoreDB, micro_settings: Settings
) -> None:
    store = EsdbEventStore(fake.url)
    async with tally_service(micro_settings, store), Micro(micro_settings) as client:
        # micro writes through a command, with the metadata it gives its events
        await client.act("add", {"id": "m", "amount": 5}, idempotency_key="k-1")
        await client.act("add", {"id": "m", "amount": 7})
        written = await store.read("tally-m")

        seen = await run_node(
            kurrentdb_js, f"kurrentdb://127.0.0.1:{fake.port}?tls=false", "tally-m", "tally-n"
        )

        # 1. What micro appended, the Node client reads exactly so.
        def as_node_reads(event: Any) -> dict[str, Any]:
            commit = str(event.position - 1)  # micro's position is the commit position + 1
            # micro stores no recorded_at of its own: a read takes the server's record time
            metadata = {k: v for k, v in event.metadata.items() if k != "recorded_at"}
            return {
                "streamId": event.stream,
                "id": str(event.id),
                "type": event.type,
                "revision": str(event.version),
                "isJson": True,
                "data": event.data,
                "metadata": metadata,
                "position": {"commit": commit, "prepare": commit},
            }

        def without_created(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{k: v for k, v in event.items() if k != "created"} for event in events]

        expected = [as_node_reads(event) for event in written]
        assert expected[0]["metadata"]["idempotency_key"] == "k-1"
        assert without_created(seen["microForwards"]) == expected
        assert without_created(seen["microBackwards"]) == expected[::-1][:1]
        assert without_created(seen["microFromRevision"]) == expected[1:]
        assert without_created(seen["allBefore"]) == expected  # system events filtered out
        unfiltered = seen["allUnfiltered"]
        assert [e["streamId"] for e in unfiltered if not e["streamId"].startswith("$")] == [
            "tally-m",
            "tally-m",
        ]
        # An unfiltered read of $all has the server's own events too (four, written first).
        assert [e["streamId"].startswith("$") for e in unfiltered] == [True] * 4 + [False] * 2
        for event, read in zip(written, seen["microForwards"], strict=True):
            created = datetime.fromisoformat(read["created"].replace("Z", "+00:00"))
            recorded_at = datetime.fromisoformat(event.metadata["recorded_at"])
            assert abs((created - recorded_at).total_seconds()) < 1  # the Node client keeps seconds

        # 2. Appends with each kind of expected revision answer as AppendResult says. Batch
        # appends carry a deadline: micro's what is left of the request (act's 5 s), the
        # Node client's its default (10 s); without ServerFeatures it sends Append instead.
        deadlines = fake.append_deadlines
        assert all(d is not None and 0 < d <= 5 for d in deadlines[:2])
        node_batches = 4 + 3 if fake.server_features else 0  # appends, then refused ones
        assert len(deadlines) == 2 + node_batches
        assert all(d is not None and 0 < d <= 10 for d in deadlines[2:])
        appends = seen["appends"]
        assert [(a["kind"], a["success"], a["nextExpectedRevision"]) for a in appends] == [
            ("no_stream", True, "1"),
            ("revision", True, "2"),
            ("stream_exists", True, "3"),
            ("any", True, "4"),
        ]
        node_events = await store.read("tally-n")
        assert [event.version for event in node_events] == [0, 1, 2, 3, 4]
        by_revision = {str(event.version): event for event in node_events}
        for append in appends:
            last = by_revision[append["nextExpectedRevision"]]
            commit = str(last.position - 1)
            assert append["position"] == {"commit": commit, "prepare": commit}

        # 3. A wrong expected version, and a missing stream, are the errors the types name.
        assert seen["wrongNoStream"] | {"message": ""} == {
            "name": "WrongExpectedVersionError",
            "wrongExpectedVersion": True,
            "streamNotFound": False,
            "streamName": "tally-n",
            "expectedState": "no_stream",
            "actualState": "4",
            "message": "",
        }
        assert (seen["wrongRevision"]["expectedState"], seen["wrongRevision"]["actualState"]) == (
            "1",
            "4",
        )
        assert seen["wrongExists"]["wrongExpectedVersion"]
        assert (seen["wrongExists"]["expectedState"], seen["wrongExists"]["actualState"]) == (
            "stream_exists",
            "no_stream",
        )
        assert seen["notFound"]["streamNotFound"]
        assert [e.version for e in await store.read("tally-n")] == [0, 1, 2, 3, 4]
        assert await store.read("tally-never-written") == []

        # 4. Reads backwards, of a stream and of $all.
        assert [e["revision"] for e in seen["nodeBackwards"]] == ["4", "3"]
        assert [(e["streamId"], e["revision"]) for e in seen["allBackwards"]] == [
            ("tally-n", "4"),
            ("tally-n", "3"),
            ("tally-n", "2"),
        ]

        # 5. A catch-up subscription from a position starts after it, in $all's order.
        everything = [event async for event in store.read_all()]
        assert [(e["streamId"], e["revision"]) for e in seen["subscribed"]] == [
            (event.stream, str(event.version)) for event in everything[1:]
        ]

        # 6. What the Node client appended, micro reads and the tally's reducer applies.
        assert [(e.type, e.data, e.metadata["origin"]) for e in node_events] == [
            ("Added", {"id": "n", "amount": amount}, "node") for amount in (1, 2, 3, 4, 5)
        ]
        tally = await client.act("tally", {"id": "n"}, min_position=node_events[-1].position)
        assert tally == {"id": "n", "total": 15, "count": 5}
        mine = await client.act("tally", {"id": "m"})
        assert mine == {"id": "m", "total": 12, "count": 2}
