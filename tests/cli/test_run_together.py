"""``micro run A B ...``: several apps in one process, sharing one connection and store."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from micro import Micro, Settings
from micro.cli._together import load_together

ROOT = Path(__file__).resolve().parents[2]

APP = """
import os
from micro import Micro

micro = Micro(service="{name}")
micro.add("{name} where", lambda: {{"pid": os.getpid(), "client": id(micro.client)}})

if __name__ == "__main__":
    raise SystemExit("run together, an app must not serve itself alone")
"""


def write_app(folder: Path, name: str) -> Path:
    folder.mkdir()
    (folder / "app.py").write_text(textwrap.dedent(APP.format(name=name)))
    return folder


async def test_two_apps_run_in_one_process_on_one_connection(
    tmp_path: Path, micro_settings: Settings
) -> None:
    first = write_app(tmp_path / "first", "first")
    second = write_app(tmp_path / "second", "second")
    env = {
        **os.environ,
        "NATS_URL": micro_settings.nats_url or "",
        "MICRO_NAMESPACE": micro_settings.namespace,
        "MICRO_EMBEDDED": "false",
        "MICRO_LOG_FORMAT": "json",
        "PYTHONPATH": str(ROOT),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "micro.cli",
        "run",
        str(first),
        str(second),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with Micro(micro_settings, service="client") as client:
            await client.discover(wait_for=["first", "second"], timeout=20)
            one = await client.act("first where")
            two = await client.act("second where")
        assert one["pid"] == two["pid"] == process.pid
        # Each app's Micro holds the same client object: one connection for the process.
        assert one["client"] == two["client"]
    finally:
        process.send_signal(signal.SIGTERM)
        _, errors = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, errors.decode()[-2000:]


def test_an_app_named_by_the_portal_and_on_the_command_line_is_loaded_once(
    tmp_path: Path,
) -> None:
    bank = write_app(tmp_path / "bank", "bank")
    portal = tmp_path / "portal"
    portal.mkdir()
    (portal / "app.py").write_text(
        "from pathlib import Path\n"
        "from micro.gateway import Portal\n"
        f"portal = Portal(title='test', apps=[Path({str(bank)!r})])\n"
    )

    together = load_together([bank, portal])

    assert [app.settings.service for app in together.apps] == ["bank"]
    assert together.portal is not None
    assert together.portal.title == "test"


def test_a_second_portal_is_refused(tmp_path: Path) -> None:
    import typer

    for name in ("one", "two"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "app.py").write_text(
            f"from micro.gateway import Portal\nportal = Portal(title={name!r})\n"
        )
    with pytest.raises(typer.Exit):
        load_together([tmp_path / "one", tmp_path / "two"])
