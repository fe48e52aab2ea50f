"""Starting the portal a second time: one line, exit 1, and no second instance ever serving."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import nats
import orjson

from micro.bus.services import NAMESPACE_KEY
from tests.e2e.support import ROOT, Portal


async def ping(client: nats.NATS, namespace: str, window: float = 0.3) -> set[tuple[str, str]]:
    """(service, instance id) of every service of ``namespace`` answering ``$SRV.PING``."""
    seen: set[tuple[str, str]] = set()
    inbox = client.new_inbox()
    subscription = await client.subscribe(inbox)
    await client.publish("$SRV.PING", b"", reply=inbox)
    deadline = time.monotonic() + window
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = await subscription.next_msg(timeout=left)
        except nats.errors.TimeoutError:
            break
        body = orjson.loads(message.data)
        if (body.get("metadata") or {}).get(NAMESPACE_KEY) == namespace:
            seen.add((body["name"], body["id"]))
    await subscription.unsubscribe()
    return seen


async def watch_second_start(portal: Portal, tmp_path: Path) -> tuple[int, str, list[set]]:
    environment = portal.environment
    namespace = environment["MICRO_NAMESPACE"]
    client = await nats.connect(environment["NATS_URL"])
    try:
        running = await ping(client, namespace)
        second = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "micro.cli",
            "run",
            str(ROOT / "samples" / "rest_portal"),
            env={
                **os.environ,
                **environment,
                "MICRO_GATEWAY_PORT": str(urlsplit(portal.url).port),
                "MICRO_DATA_DIR": str(tmp_path),
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=tmp_path,
        )
        output = asyncio.ensure_future(second.communicate())
        # Every look while the second process lives, and one after it ended.
        looks = [running]
        deadline = time.monotonic() + 60
        while not output.done() and time.monotonic() < deadline:
            looks.append(await ping(client, namespace, window=0.1))
        stdout, stderr = await asyncio.wait_for(output, timeout=30)
        looks.append(await ping(client, namespace))
        return second.returncode, (stdout + stderr).decode(), looks
    finally:
        await client.close()


def test_a_second_portal_on_a_taken_port_says_so_in_one_line_and_never_serves(
    portal: Portal, tmp_path: Path
) -> None:
    code, output, looks = asyncio.run(watch_second_start(portal, tmp_path))
    port = urlsplit(portal.url).port
    assert code == 1
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert f"127.0.0.1:{port} is already in use" in lines[0]
    assert "MICRO_GATEWAY_PORT" in lines[0]
    assert "MICRO_GATEWAY_HOST" in lines[0]
    assert "Traceback" not in output
    running = looks[0]
    assert "bank" in {name for name, _ in running}
    assert len(looks) >= 3  # the second process was watched while it lived
    for look in looks:
        assert look <= running, look - running
    assert looks[-1] == running
    assert portal.process.poll() is None
