"""The gateway's listening socket, bound before anything else starts.

A portal started twice must fail before its services join their queue groups (a second
bank instance would take requests and then die): binding first turns a taken port into one
clear error while nothing has been started yet.
"""

from __future__ import annotations

import errno
import socket

from micro.errors import ConfigError

__all__ = ["bind_listener"]


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening, non-blocking TCP socket on ``host:port`` (port 0: a free one).

    Raises:
        ConfigError: the address is taken or cannot be bound; the message names it and the
            settings that change it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    # IPPROTO_TCP named explicitly: asyncio turns Nagle off (TCP_NODELAY) only on sockets
    # that say they are TCP, and with Nagle on, keep-alive replies wait 40 ms for an ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        # Lets a restart reuse a port whose old connections linger in TIME_WAIT; Linux still
        # refuses a port some socket listens on.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            reason = "is already in use (is the gateway running already?)"
        else:
            reason = f"cannot be bound: {error.strerror or error}"
        raise ConfigError(
            f"the gateway's address {shown} {reason}; "
            "set MICRO_GATEWAY_PORT or MICRO_GATEWAY_HOST to listen elsewhere"
        ) from error
    return sock
