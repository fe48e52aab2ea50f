"""The bank sample as it is, with snapshots of its models (auth served by the auth service)."""

import runpy
from pathlib import Path

BANK = Path(__file__).resolve().parents[3] / "samples" / "bank" / "app.py"

micro = runpy.run_path(str(BANK), run_name="bank_app")["micro"]
micro.modules.want(["snapshooter"])

if __name__ == "__main__":
    micro.start()
