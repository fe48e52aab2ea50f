import subprocess
import sys

HEAVY = ("tinydb", "starlette", "uvicorn", "esdbclient", "grpc", "argon2", "jwt", "jsonschema")


def test_import_micro_loads_no_storage_auth_http_or_esdb_code() -> None:
    # A fresh interpreter: this test process has imported everything already.
    script = (
        "import sys, micro\n"
        f"heavy = {HEAVY!r}\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & set(heavy))\n"
        "ours = sorted(m for m in sys.modules if m.startswith(('micro.modules.auth',"
        " 'micro.command', 'micro.readmodel', 'micro.gateway', 'micro.eventstore.esdb')))\n"
        "print(loaded, ours)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[] []"


def test_an_error_from_the_wire_is_rebuilt_without_importing_its_module() -> None:
    script = (
        "import micro\n"
        "from micro.errors import MicroError\n"
        "for code in ('fatal', 'locked_out', 'too_many_requests'):\n"
        "    print(type(MicroError.from_wire({'error': {'code': code}})).__name__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.split() == ["FatalError", "LockedOutError", "TooManyRequestsError"]
