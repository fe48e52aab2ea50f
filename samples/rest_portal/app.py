"""The REST portal: the bank and the HTTP gateway with its web console, in one process.

Run it with ``micro run samples/rest_portal`` (no NATS_URL needed: the embedded broker
starts), then open the URL it prints. ``MICRO_GATEWAY_PORT`` changes the port (8080),
``MICRO_GATEWAY_HOST`` the address (127.0.0.1).

The portal is declared, not coded: its routes, its console, its title and the apps it
hosts. ``micro run`` serves them together on one event loop, sharing one NATS connection
and one event store, and stops them in order on Ctrl-C. The bank is the bank sample as it
is; it serves sign-up and login itself (it loads the auth module).
"""

from pathlib import Path

from micro.gateway import Portal, Route

HERE = Path(__file__).resolve().parent

portal = Portal(
    title="REST portal",
    console=HERE / "static",
    apps=[HERE.parent / "bank"],
    exclude=["rebuild *"],  # operators rebuild models from the CLI, not the web
    routes=[
        Route("POST", "/auth/signup", "auth signup", "Create a user"),
        Route("POST", "/auth/login", "auth login", "Log in: returns a token"),
        Route("POST", "/auth/logout", "auth logout", "Log out of this session"),
        Route("GET", "/auth/me", "auth whoami", "Who the token belongs to"),
        Route("GET", "/accounts", "accounts", "Every account"),
        Route("POST", "/accounts", "open account", "Open an account"),
        Route("GET", "/accounts/{id}", "account balance", "One account's balance"),
        Route("POST", "/accounts/{id}/deposit", "deposit", "Put money in"),
        Route("POST", "/accounts/{id}/withdraw", "withdraw", "Take money out"),
        Route("POST", "/transfers", "transfer", "Move money between accounts"),
        Route("GET", "/transfers/{id}", "transfer status", "How a transfer went"),
    ],
)
