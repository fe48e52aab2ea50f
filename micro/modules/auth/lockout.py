"""Login failures and lockout: how many failures lock a login, and for how long.

Known logins keep their counters in the auth models (the login sheet updates them); logins
that do not exist are counted here, in memory, so that an unknown login is answered exactly
as a wrong password: as slowly (a password hash is wasted) and with the same lockouts.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import OrderedDict

from micro.errors import UnauthorizedError
from micro.modules.auth.errors import LockedOutError
from micro.modules.auth.identity import normalize_login
from micro.modules.auth.passwords import PasswordHasher
from micro.settings import Settings

__all__ = ["LoginLockout", "bad_credentials"]

_UNKNOWN_REMEMBERED = 10_000


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def bad_credentials() -> UnauthorizedError:
    """The one error of a wrong password and of an unknown login."""
    return UnauthorizedError("wrong login or password", details={"reason": "credentials"})


class LoginLockout:
    """The lockout policy of ``settings`` (``auth_lockout_*``)."""

    def __init__(self, settings: Settings, passwords: PasswordHasher) -> None:
        self.settings = settings
        self.passwords = passwords
        self._unknown: OrderedDict[str, tuple[int, int, float]] = OrderedDict()

    def after(self, failures: int, lockouts: int) -> tuple[int, int, dt.datetime | None]:
        """(failures, lockouts, locked_until) after one more failure."""
        settings = self.settings
        failures += 1
        if failures < settings.auth_lockout_attempts:
            return failures, lockouts, None
        seconds = min(
            settings.auth_lockout_max_seconds,
            settings.auth_lockout_seconds * settings.auth_lockout_factor**lockouts,
        )
        return 0, lockouts + 1, _now() + dt.timedelta(seconds=seconds)

    def check(self, locked_until: dt.datetime | None) -> None:
        """Raise ``LockedOutError`` while ``locked_until`` is in the future."""
        if locked_until is None:
            return
        left = (locked_until - _now()).total_seconds()
        if left > 0:
            raise LockedOutError(
                f"too many failed logins: this login is locked for {int(left) + 1} more seconds",
                details={"retry_after": int(left) + 1, "locked_until": locked_until.isoformat()},
            )

    async def refuse_unknown(self, login: str, password: str) -> None:
        """Answer an unknown login exactly as a wrong password: as slowly, with lockouts."""
        key = normalize_login(login)
        failures, lockouts, until = self._unknown.get(key, (0, 0, 0.0))
        if until > time.time():
            self.check(dt.datetime.fromtimestamp(until, dt.UTC))
        await self.passwords.waste(password)
        failures, lockouts, locked_until = self.after(failures, lockouts)
        self._unknown[key] = (
            failures,
            lockouts,
            locked_until.timestamp() if locked_until is not None else 0.0,
        )
        self._unknown.move_to_end(key)
        while len(self._unknown) > _UNKNOWN_REMEMBERED:
            self._unknown.popitem(last=False)
        raise bad_credentials()
