"""The ``auth`` module: event-sourced users and sessions, tokens, and the guard.

Loading it (``micro.modules.get("auth")`` while declaring the service, plus
``micro.modules.want(["auth"])``) adds the auth commands from the package's own sheets and
installs a guard on every command of the service: a rule declaring ``auth = "required"`` or
``roles = [...]`` runs only for a caller whose token (``meta={"token": ...}``) is valid, whose
session is still open and who holds one of the roles. Handlers and rules see the caller in
``ctx.user`` (``current_user()`` in a sheet). Calls made while serving carry the meta, hence
the token, along.

Services that only check tokens set ``auth_commands=False``: they follow the auth models
from the shared event store (so a logout or a revoked role reaches them as soon as their
projector applied it) but serve no auth command.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import structlog

from micro.command.sheets import RuleSheet, load_reducer_sheet, load_rule_sheet
from micro.context import Context, current_context
from micro.errors import (
    ConfigError,
    ConflictError,
    ForbiddenError,
    RuleViolation,
    UnauthorizedError,
    UnavailableError,
)
from micro.modules.auth.guards import Middleware, middleware, required
from micro.modules.auth.identity import SYSTEM, AuthUser, normalize_login, user_id_for
from micro.modules.auth.keys import load_keys
from micro.modules.auth.lockout import LoginLockout, bad_credentials
from micro.modules.auth.passwords import PasswordHasher
from micro.modules.auth.tokens import Tokens, refused

if TYPE_CHECKING:
    from micro.command.commander import Commander
    from micro.host import Host

__all__ = ["COMMANDS", "Auth", "current_auth", "sheets_dir"]

_log = structlog.get_logger("micro.auth")

COMMANDS = (
    "auth signup",
    "auth login",
    "auth logout",
    "auth refresh",
    "auth change password",
    "auth grant role",
    "auth revoke role",
)

Mode = Literal["required", "optional"] | None
ClaimsProvider = Callable[[Any], dict[str, Any]]

_current: contextvars.ContextVar[Auth | None] = contextvars.ContextVar("micro_auth", default=None)


_serving: dict[tuple[str, str], Auth] = {}
"""The Auth serving the auth commands, per (NATS URL, namespace), in this process."""


def current_auth() -> Auth:
    """The auth module of the service running the current command (for the auth sheets)."""
    auth = _current.get()
    if auth is None:
        raise RuntimeError("no auth module is running this command")
    return auth


def sheets_dir(package: Path | None = None) -> Path:
    """The folder holding the auth sheets: inside the installed wheel, or the repository.

    The wheel carries them as ``micro/_sheets/`` (hatch ``force-include``); a source
    checkout (or an editable install) has them in the repository's top-level folders.
    """
    # micro/modules/auth/module.py: three folders up is the micro package.
    package = package or Path(__file__).resolve().parents[2]
    for base in (package / "_sheets", package.parent):
        if (base / "rules" / "auth_login_rule.py").is_file():
            return base
    raise ConfigError(
        f"the auth sheets are missing: looked in {package / '_sheets'} and {package.parent}"
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Auth:
    """Users, sessions and tokens for one service (the ``auth`` module)."""

    def __init__(self, micro: Host, commander: Commander) -> None:
        self.micro = micro
        self.commander = commander
        self.settings = micro.settings
        self.base_dir = sheets_dir()
        self.passwords = PasswordHasher(self.settings)
        self.lockout = LoginLockout(self.settings, self.passwords)
        self._tokens: Tokens | None = None
        self._claims: list[tuple[ClaimsProvider, bool]] = []
        self._service_token: tuple[str, float] | None = None
        self.serves_commands = self.settings.auth_commands
        if self.serves_commands:
            for command in COMMANDS:
                commander.add_command(command, base_dir=self.base_dir)
            micro.add(
                "auth whoami",
                self.required(self._whoami),
                description="The logged-in caller: id, login, name, roles, session.",
            )
        else:
            self._follow_models()
        commander.guards.append(self.guard)

    def _follow_models(self) -> None:
        """Apply the auth events to local models without serving the commands."""
        self.commander.add_models(self.base_dir)
        for command in COMMANDS:
            for event_type in load_rule_sheet(self.base_dir, command).event_types:
                self.commander.types.add(event_type)
            for name, functions in load_reducer_sheet(self.base_dir, command).reducers.items():
                for function in functions:
                    self.commander.add_reducer(name, function)

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Load the keys (refusing to start without one in production), seed the admin."""
        self._tokens = Tokens(load_keys(self.settings), self.settings)
        if self.serves_commands:
            self._claim_commands()
        if self.serves_commands and self.settings.auth_admin_login:
            await self._seed_admin()

    async def stop(self) -> None:
        key = self._serving_key()
        if _serving.get(key) is self:
            del _serving[key]

    def _serving_key(self) -> tuple[str, str]:
        return (self.settings.nats_url or "", self.settings.namespace)

    def _claim_commands(self) -> None:
        """Serve the auth commands unless another Micro of this process already does.

        Two services serving them would both handle each request (each in its own queue
        group): two sessions per login, the caller holding the one the other replaced.
        Within one process (several services beside a gateway) the first one started
        keeps them and the others only check tokens; across processes, set
        ``auth_commands=False`` on every service but one.
        """
        key = self._serving_key()
        owner = _serving.get(key)
        if owner is None or owner is self:
            _serving[key] = self
            return
        self.serves_commands = False
        for name in (*COMMANDS, "auth whoami"):
            self.micro.endpoints.pop(name, None)  # not subscribed yet: serving starts later
        _log.warning(
            "auth: the auth commands are already served in this process; "
            "this service only checks tokens",
            service=self.settings.service,
            served_by=owner.settings.service,
        )

    @property
    def tokens(self) -> Tokens:
        if self._tokens is None:
            raise UnavailableError("the auth module has not started")
        return self._tokens

    # -- checking callers ---------------------------------------------------------------

    async def guard(self, rule: RuleSheet, ctx: Context) -> None:
        """The commander's guard: authenticate, then check the rule's ``auth`` and ``roles``."""
        _current.set(self)  # the auth sheets reach their module through current_auth()
        mode: Mode = "required" if rule.auth == "required" else rule.auth  # type: ignore[assignment]
        await self.authenticate(ctx, mode=mode, roles=rule.roles)

    async def authenticate(
        self, ctx: Context, *, mode: Mode = "required", roles: list[str] | tuple[str, ...] = ()
    ) -> AuthUser | None:
        """Check the token in ``ctx.meta`` and set ``ctx.user``.

        ``mode="required"`` (or any ``roles``) refuses a request without a valid token;
        ``"optional"`` accepts one without a token but refuses an invalid one; ``None``
        only notes the caller when the token is valid.
        """
        in_process = ctx.user is SYSTEM  # set in process only (seeding): never from the wire
        if in_process:
            return SYSTEM
        needed = mode == "required" or bool(roles)
        token = ctx.meta.get("token") if isinstance(ctx.meta, dict) else None
        if token is None:
            if needed:
                raise refused("missing", f"{ctx.command!r} needs a token in the meta")
            return None
        try:
            user = await self.verify(token, ctx)
        except UnauthorizedError:
            if mode is None and not roles:
                return None
            raise
        if roles and not user.has_role(*roles):
            raise ForbiddenError(
                f"{ctx.command!r} needs the role {' or '.join(roles)}",
                details={"roles": list(roles)},
            )
        ctx.user = user
        if self.settings.auth_sliding_sessions and user.kind == "user":
            ctx.token = self._slide(user)
        return user

    def _slide(self, user: AuthUser) -> str | None:
        """A fresh token for ``user``'s session once the one it came with is past half its
        lifetime; never beyond the session's own expiry (revocation was checked by verify)."""
        claims = user.claims
        issued, expires = claims.get("iat"), claims.get("exp")
        if not isinstance(issued, int) or not isinstance(expires, int):
            return None
        now = time.time()
        if now < issued + (expires - issued) / 2 or self.tokens.keys.signing_key is None:
            return None
        record, session = self._lookup(user.id, user.session or "")
        if record is None or session is None:
            return None
        left = session.expires_at.timestamp() - now
        if left <= 0:
            return None
        issued_claims = self.session_token(record, session.id, ttl=min(self.tokens.ttl, left))
        token: str = issued_claims["token"]
        return token

    async def verify(self, token: object, ctx: Context | None = None) -> AuthUser:
        """The user a token stands for; ``UnauthorizedError`` (with a reason) otherwise."""
        tokens = self.tokens
        claims = tokens.decode(token)
        kind = claims.get("typ")
        if kind == "service":
            subject = str(claims["sub"])
            return AuthUser(
                id=subject,
                login=subject,
                name=subject,
                roles=frozenset({"service"}),
                kind="service",
                claims=claims,
            )
        if kind != "access":
            raise refused("claims", f"unknown token type {kind!r}")
        session_id = claims.get("sid")
        if not isinstance(session_id, str):
            raise refused("claims", "no session id")
        user, session = self._lookup(claims["sub"], session_id)
        if user is None or session is None:
            # A login on another service may not have reached our models yet: catch up once.
            await self._catch_up(ctx)
            user, session = self._lookup(claims["sub"], session_id)
        if user is None:
            raise refused("unknown_user", "unknown user")
        if session is None:
            raise refused("revoked", "the session has ended")
        if session.expires_at <= _now():
            raise refused("expired", "the session has expired")
        return AuthUser(
            id=user.id,
            login=user.login,
            name=user.name,
            roles=frozenset(user.roles),
            session=session_id,
            kind="user",
            claims=claims,
            secrets=tokens.open(claims),
        )

    def _lookup(self, user_id: Any, session_id: str) -> tuple[Any, Any]:
        models = self.commander.models
        user = models.auth_user.get(user_id)
        session = models.auth_session.get(session_id)
        if session is not None and session.user_id != user_id:
            session = None
        return user, session

    async def _catch_up(self, ctx: Context | None) -> None:
        projector = self.commander.projector
        if projector is None:
            return
        wait = ctx.remaining if ctx is not None and ctx.remaining is not None else 2.0
        try:
            await projector.catch_up(max(0.05, min(wait, 2.0)))
        except Exception as error:  # the store is slow or away: decide on what we know
            _log.warning("auth: catching the models up failed", error=str(error))

    # -- helpers for plain handlers -----------------------------------------------------

    def required(
        self,
        handler: Callable[..., Any] | None = None,
        *,
        roles: list[str] | tuple[str, ...] = (),
    ) -> Any:
        """Wrap a plain ``micro.add`` handler so it runs only for an authenticated caller.

        Usage::

            micro.add("profile", auth.required(lambda req, ctx: ctx.user.login))
            micro.add("purge", auth.required(purge, roles=["admin"]))
        """
        return required(self.authenticate, handler, roles=roles)

    def middleware(self, *, roles: list[str] | tuple[str, ...] = ()) -> Middleware:
        """Middleware refusing unauthenticated callers: ``micro.use(name, auth.middleware())``."""
        return middleware(self.authenticate, roles=roles)

    def protect(self, name: str, *, roles: list[str] | tuple[str, ...] = ()) -> None:
        """Require a token for an endpoint already added (a view, a plain command)."""
        self.micro.use(name, self.middleware(roles=roles))

    async def _whoami(self, payload: Any, ctx: Context) -> dict[str, Any]:
        user: AuthUser = ctx.user
        return user.public()

    # -- tokens -------------------------------------------------------------------------

    def add_claims(self, provider: ClaimsProvider, *, secret: bool = False) -> None:
        """Add claims to every token issued: ``provider(user_record) -> dict``.

        Secret claims are encrypted so only services can read them (``ctx.user.secrets``).
        """
        if not callable(provider):
            raise TypeError("add_claims takes a function of the user record")
        self._claims.append((provider, secret))

    def session_token(
        self, user: Any, session_id: str, *, ttl: float | None = None
    ) -> dict[str, Any]:
        """A new token for an open session of ``user`` (a user record), as a reply."""
        claims: dict[str, Any] = {}
        secrets: dict[str, Any] = {}
        for provider, secret in self._claims:
            (secrets if secret else claims).update(provider(user))
        claims.update(login=user.login, name=user.name, roles=sorted(user.roles))
        token, body = self.tokens.issue(
            subject=user.id, session=session_id, ttl=ttl, claims=claims, secrets=secrets or None
        )
        return {
            "token": token,
            "token_type": "Bearer",
            "expires_at": body["exp"],
            "session": session_id,
            "user": {
                "id": user.id,
                "login": user.login,
                "name": user.name,
                "roles": sorted(user.roles),
            },
        }

    def service_token(self) -> str:
        """A short-lived token for this service acting as itself (role ``service``).

        Processes that act without a user (event handlers) send it:
        ``await micro.act("withdraw", {...}, meta=auth.service_meta())``.
        """
        now = time.time()
        if self._service_token is not None and self._service_token[1] > now:
            return self._service_token[0]
        ttl = self.settings.auth_service_token_ttl
        token, _ = self.tokens.issue(
            subject=f"service:{self.settings.service}",
            kind="service",
            ttl=ttl,
            claims={"roles": ["service"]},
        )
        self._service_token = (token, now + ttl / 2)  # renewed well before it expires
        return token

    def service_meta(self) -> dict[str, Any]:
        """``{"token": service_token()}``, to pass as ``meta=``."""
        return {"token": self.service_token()}

    # -- login failures and lockout (the login sheet calls these) -------------------------

    def lockout_after(self, failures: int, lockouts: int) -> tuple[int, int, dt.datetime | None]:
        """(failures, lockouts, locked_until) after one more failure."""
        return self.lockout.after(failures, lockouts)

    def check_lockout(self, locked_until: dt.datetime | None) -> None:
        """Raise ``LockedOutError`` while ``locked_until`` is in the future."""
        self.lockout.check(locked_until)

    def bad_credentials(self) -> UnauthorizedError:
        """The one error of a wrong password and of an unknown login."""
        return bad_credentials()

    async def refuse_unknown_login(self, login: str, password: str) -> None:
        """Answer an unknown login exactly as a wrong password: as slowly, with lockouts."""
        await self.lockout.refuse_unknown(login, password)

    # -- the first admin ----------------------------------------------------------------

    async def _seed_admin(self) -> None:
        login = self.settings.auth_admin_login or ""
        password = self.settings.auth_admin_password
        if password is None:
            raise ConfigError("auth_admin_login is set but auth_admin_password is not")
        user_id = user_id_for(login)
        models = self.commander.models
        if models.auth_user.get(user_id) is None:
            secret = password.get_secret_value()
            payload = {
                "name": "Administrator",
                "login": login,
                "password": secret,
                "password_confirmation": secret,
            }
            with contextlib.suppress(ConflictError):  # another instance seeded it first
                await self.run_as_system("auth signup", payload, key=f"seed-admin-{user_id}")
        user = models.auth_user.get(user_id)
        if user is not None and "admin" not in user.roles:
            with contextlib.suppress(RuleViolation):  # granted meanwhile
                await self.run_as_system(
                    "auth grant role",
                    {"login": login, "role": "admin"},
                    key=f"seed-admin-role-{user_id}",
                )
        _log.info("auth: first admin ready", login=normalize_login(login))

    async def run_as_system(self, command: str, payload: Any, *, key: str | None = None) -> Any:
        """Run an auth command in process as the system user (never reachable from the bus)."""
        pipeline = self.commander.pipeline
        if pipeline is None:
            raise UnavailableError("the commander has not started")
        ctx = self.micro.new_context(command, user=SYSTEM, idempotency_key=key)
        reset = current_context.set(ctx)
        auth_reset = _current.set(self)
        try:
            return await pipeline.run(self.commander.rules[command], payload, ctx)
        finally:
            _current.reset(auth_reset)
            current_context.reset(reset)
