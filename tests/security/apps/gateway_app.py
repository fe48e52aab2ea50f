"""The REST portal's gateway alone, in front of the bank and auth services."""

import asyncio
import runpy
import signal
from pathlib import Path

from micro import Micro
from micro.eventstore import open_event_store
from micro.gateway import Gateway, GatewaySettings

PORTAL = runpy.run_path(
    str(Path(__file__).resolve().parents[3] / "samples" / "rest_portal" / "app.py"),
    run_name="portal",
)


async def main() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    front = Micro(service="gateway")
    await front.open()
    store = open_event_store(front.settings, front.client)
    await store.start()
    gateway = Gateway(
        front,
        GatewaySettings(
            required_services=["auth", "bank"],
            verify_command="auth whoami",
            exclude=["rebuild *"],
        ),
        routes=PORTAL["ROUTES"],
        schemas=PORTAL["SCHEMAS"],
        event_store=store,
        title="micro REST portal",
    )
    await gateway.start()
    print(f"REST portal: {gateway.url}", flush=True)
    try:
        await stop.wait()
    finally:
        await gateway.stop()
        await store.close()
        await front.close()


if __name__ == "__main__":
    asyncio.run(main())
