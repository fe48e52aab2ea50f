"""The REST portal's gateway alone (no hosted app), in front of the bank and auth services."""

import runpy
from pathlib import Path

from micro.gateway import GatewaySettings, Portal

REST_PORTAL = Path(__file__).resolve().parents[3] / "samples" / "rest_portal" / "app.py"
sample = runpy.run_path(str(REST_PORTAL), run_name="rest_portal")["portal"]

portal = Portal(
    title=sample.title,
    routes=sample.routes,
    exclude=sample.exclude,
    settings=GatewaySettings(required_services=["auth", "bank"], verify_command="auth whoami"),
)
