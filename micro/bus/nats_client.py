"""Every NATS connection micro opens goes through here, with the same security settings.

``ConnectOptions.from_settings`` reads ``MICRO_NATS_USER``/``_PASSWORD``, ``_TOKEN``,
``_CREDS``, ``_NKEY_SEED``, ``_TLS_CA``/``_CERT``/``_KEY``/``_HANDSHAKE_FIRST`` and the inbox
prefix, checks every file it names at once (a ``ConfigError`` names the setting and the path),
and ``open_client`` connects with them: services, callers, the event store's own connection,
the config client, the gateway, the CLI and the test clusters all call it.

What may reach a log line or an error from here: the servers without their user info, the
setting names and the file paths. Never a password, token, seed or JWT.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nats.errors import AuthorizationError
from pydantic import SecretStr

from micro._direct import DirectClient
from micro.bus.subjects import inbox_prefix
from micro.errors import ConfigError, UnavailableError
from micro.log import redact_text
from micro.settings import Settings

__all__ = ["ConnectOptions", "open_client", "shown_url"]

_JWT_BLOCK = "-----BEGIN NATS USER JWT-----"
_SEED_BLOCK = "-----BEGIN USER NKEY SEED-----"
_PENDING_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    """How to authenticate and encrypt a NATS connection (nothing set: a plain one)."""

    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    creds: Path | None = None
    nkey_seed: Path | None = None
    tls: ssl.SSLContext | None = None
    tls_handshake_first: bool = False
    inbox_prefix: str = "_INBOX"

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectOptions:
        """The options ``settings`` ask for, every file checked; ``ConfigError`` if not."""
        if (settings.nats_user is None) != (settings.nats_password is None):
            raise ConfigError(
                "MICRO_NATS_USER and MICRO_NATS_PASSWORD go together: set both or neither",
                details={"setting": "nats_password" if settings.nats_user else "nats_user"},
            )
        if settings.nats_creds is not None and settings.nats_nkey_seed is not None:
            raise ConfigError(
                "set MICRO_NATS_CREDS or MICRO_NATS_NKEY_SEED, not both (a .creds file holds "
                "its own seed)",
                details={"setting": "nats_nkey_seed"},
            )
        if settings.nats_creds is not None:
            _check_creds(settings.nats_creds)
        if settings.nats_nkey_seed is not None:
            seed = _read("nats_nkey_seed", settings.nats_nkey_seed).strip()
            _check_seed(seed, "nats_nkey_seed", settings.nats_nkey_seed)
        return cls(
            user=settings.nats_user,
            password=settings.nats_password,
            token=settings.nats_token,
            creds=settings.nats_creds,
            nkey_seed=settings.nats_nkey_seed,
            tls=_tls_context(settings),
            tls_handshake_first=settings.nats_tls_handshake_first,
            inbox_prefix=settings.nats_inbox_prefix or inbox_prefix(settings.service),
        )

    @property
    def has_tls(self) -> bool:
        return self.tls is not None

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of nats-py's ``connect`` for these options."""
        options: dict[str, Any] = {"inbox_prefix": self.inbox_prefix}
        if self.user is not None and self.password is not None:
            options["user"] = self.user
            options["password"] = self.password.get_secret_value()
        if self.token is not None:
            options["token"] = self.token.get_secret_value()
        if self.creds is not None:
            options["user_credentials"] = str(self.creds)
        if self.nkey_seed is not None:
            options["nkeys_seed"] = str(self.nkey_seed)
        if self.tls is not None:
            options["tls"] = self.tls
            options["tls_handshake_first"] = self.tls_handshake_first
        return options


def _read(setting: str, path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else "unreadable"
        raise ConfigError(
            f"MICRO_{setting.upper()}: cannot read {path}: {reason}",
            details={"setting": setting, "path": str(path)},
        ) from None


def _check_seed(seed: str, setting: str, path: Path) -> None:
    # Imported here: only credentials need it, and it loads libsodium.
    import nkeys

    # Never quote the content: it is the secret.
    try:
        nkeys.from_seed(seed.encode())
    except Exception:
        raise ConfigError(
            f"MICRO_{setting.upper()}: {path} does not hold an NKey seed",
            details={"setting": setting, "path": str(path)},
        ) from None


def _check_creds(path: Path) -> None:
    text = _read("nats_creds", path)
    jwt = _block(text, _JWT_BLOCK)
    seed = _block(text, _SEED_BLOCK)
    if jwt is None or seed is None or jwt.count(".") != 2:
        raise ConfigError(
            f"MICRO_NATS_CREDS: {path} is not a .creds file (a user JWT and an NKey seed "
            "between their BEGIN/END lines)",
            details={"setting": "nats_creds", "path": str(path)},
        )
    _check_seed(seed, "nats_creds", path)


def _block(text: str, begin: str) -> str | None:
    """The first non-empty line after ``begin`` (the layout nats-py reads), or None."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.strip().startswith(begin):
            for following in lines[index + 1 :]:
                if following.strip():
                    return None if following.startswith("-----") else following.strip()
    return None


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    ca, cert, key = settings.nats_tls_ca, settings.nats_tls_cert, settings.nats_tls_key
    if (cert is None) != (key is None):
        raise ConfigError(
            "MICRO_NATS_TLS_CERT and MICRO_NATS_TLS_KEY go together: set both or neither",
            details={"setting": "nats_tls_key" if cert is not None else "nats_tls_cert"},
        )
    if ca is None and cert is None and not settings.nats_tls_handshake_first:
        return None
    for setting, path in (("nats_tls_ca", ca), ("nats_tls_cert", cert), ("nats_tls_key", key)):
        if path is not None:
            _read(setting, path)  # missing or unreadable: named here, not deep inside ssl
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca is not None:
        try:
            context.load_verify_locations(cafile=str(ca))
        except ssl.SSLError:
            raise ConfigError(
                f"MICRO_NATS_TLS_CA: {ca} holds no PEM certificate",
                details={"setting": "nats_tls_ca", "path": str(ca)},
            ) from None
    if cert is not None and key is not None:
        try:
            context.load_cert_chain(str(cert), str(key))
        except ssl.SSLError:
            raise ConfigError(
                f"MICRO_NATS_TLS_CERT/MICRO_NATS_TLS_KEY: {cert} and {key} are not a PEM "
                "certificate and its private key",
                details={"setting": "nats_tls_cert", "path": str(cert)},
            ) from None
    return context


def shown_url(url: str) -> str:
    """The URL(s) without user info, for error messages and logs."""
    parts = []
    for one in url.split(","):
        split = urlsplit(one.strip() if "://" in one else f"nats://{one.strip()}")
        host = split.hostname or "?"
        try:
            port = f":{split.port}" if split.port else ""
        except ValueError:  # not a number: shown as nothing rather than failing here
            port = ""
        parts.append(f"{split.scheme}://{host}{port}")
    return ",".join(parts)


async def _probe(servers: list[str], timeout: float) -> OSError | None:
    """None when some server accepts TCP connections, else why the last one did not.

    nats-py keeps retrying an initial connection that fails; probing first turns a wrong
    URL into one clear error at once instead of a wait until the timeout.
    """
    refused: OSError = ConnectionRefusedError("no server given")
    for server in servers:
        split = urlsplit(server if "://" in server else f"nats://{server}")
        host, port = split.hostname or "127.0.0.1", split.port or 4222
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (TimeoutError, OSError) as error:
            refused = error if str(error) else TimeoutError(f"no answer within {timeout}s")
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return None
    return refused


def _refusal(error: BaseException, options: ConnectOptions, url: str) -> str | None:
    """Why the server refused us, when ``error`` is a refusal that retrying cannot change."""
    text = str(error)
    if isinstance(error, AuthorizationError) or "authorization violation" in text.lower():
        return "authorization violation (check the user, password, token, creds or NKey)"
    if "authentication" in text.lower():  # an expired or revoked user JWT, in the server's words
        return f"refused: {redact_text(text)}"
    if isinstance(error, ssl.SSLError) or "ssl" in type(error).__name__.lower():
        reason = getattr(error, "reason", None) or type(error).__name__
        if not options.has_tls and not url.startswith("tls://"):
            return (
                f"the server demands TLS and no TLS is configured (set MICRO_NATS_TLS_CA, "
                f"and MICRO_NATS_TLS_CERT/KEY if it verifies clients): {reason}"
            )
        return f"TLS handshake failed: {reason}"
    return None


async def open_client(
    url: str,
    options: ConnectOptions,
    *,
    name: str,
    connect_timeout: float,
    unavailable: type[UnavailableError] = UnavailableError,
    on_error: Callable[[Exception], Awaitable[None]] | None = None,
    ping_interval: float | None = None,
) -> DirectClient:
    """A connected nats-py client, or ``unavailable`` naming the server (never a secret).

    A refusal (bad credentials, a TLS failure) ends the attempt at once with one error that
    says what was refused; a server that does not answer fails after ``connect_timeout``.
    """
    shown = shown_url(url)
    servers = [part.strip() for part in url.split(",") if part.strip()]
    unreachable = await _probe(servers, connect_timeout)
    if unreachable is not None:
        raise unavailable(
            f"cannot connect to NATS at {shown}: {unreachable}", details={"url": shown}
        ) from unreachable
    refused: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    connected = False
    last_error: list[str] = []

    async def error_cb(error: Exception) -> None:
        if connected:
            if on_error is not None:
                await on_error(error)
            return
        reason = _refusal(error, options, url)
        last_error[:] = [type(error).__name__]
        if reason is not None and not refused.done():
            refused.set_result(reason)

    settings: dict[str, Any] = {
        "servers": servers,
        "name": name,
        "connect_timeout": max(1, round(connect_timeout)),
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "error_cb": error_cb,
        "pending_size": _PENDING_BYTES,
        **options.kwargs(),
    }
    if ping_interval is not None:
        # Two unanswered PINGs end the connection: a partitioned server is left (and another
        # tried) within about twice the interval, instead of nats-py's default minutes.
        settings.update(ping_interval=ping_interval, max_outstanding_pings=2)
    client = DirectClient()
    connecting: asyncio.Future[None] = asyncio.ensure_future(client.connect(**settings))
    waiting: set[asyncio.Future[Any]] = {connecting, refused}
    try:
        done, _ = await asyncio.wait(
            waiting,
            timeout=connect_timeout + 1,
            return_when=asyncio.FIRST_COMPLETED,
        )
    except BaseException:
        connecting.cancel()
        raise
    if connecting in done and connecting.exception() is None:
        connected = True
        return client
    connecting.cancel()
    with contextlib.suppress(BaseException):
        await connecting
    with contextlib.suppress(BaseException):
        await client.close()
    cause: BaseException | None = None
    if connecting.done() and not connecting.cancelled():
        cause = connecting.exception()
    if refused.done():
        reason = refused.result()
    elif cause is not None:
        reason = _refusal(cause, options, url) or type(cause).__name__
    else:
        seen = f" (last error: {last_error[0]})" if last_error else ""
        reason = f"no connection within {connect_timeout}s{seen}"
    # The cause is kept for tracebacks; its text is nats-py's or ssl's, never a credential.
    raise unavailable(
        f"cannot connect to NATS at {shown}: {reason}", details={"url": shown}
    ) from cause
