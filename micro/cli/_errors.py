"""How ``micro run`` reports a service that could not start: one line, the rest on request."""

from __future__ import annotations

import traceback
from typing import NoReturn

from micro.cli._common import fail
from micro.errors import MicroError

__all__ = ["fail_to_start"]


def fail_to_start(error: BaseException, *, verbose: bool) -> NoReturn:
    """Print why the service stopped as one line (the traceback and details with ``--verbose``)."""
    details = None
    if isinstance(error, MicroError):
        message = f"{error.code}: {error.message}"
        details = error.to_wire()["error"]
    else:
        # Not one of micro's own errors: its type is part of the news (OSError, ImportError).
        message = f"{type(error).__name__}: {error}"
    if verbose:
        traceback.print_exception(error)
    else:
        message += " (--verbose shows the traceback)"
    fail(message, details=details, verbose=verbose)
