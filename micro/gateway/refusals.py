"""A rule's refusal as an answer, for a page that asks: ``Prefer: refusal=answer``.

Browsers log every fetch answered with an error status as a console error, while to a web
console a refused withdrawal is an answer like any other (it shows the reason beside the
form). A request carrying the preference gets a refusal (422) as a 200 with the same JSON
body and ``Preference-Applied: refusal=answer`` (RFC 7240); every other request, and every
other status, is answered as the API always answers.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["PREFERENCE", "RefusalsAsAnswers"]

PREFERENCE = "refusal=answer"
_REFUSED = 422


def _prefers(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"prefer":
            preferences = value.decode("latin-1").split(",")
            if any(item.strip().lower() == PREFERENCE for item in preferences):
                return True
    return False


class RefusalsAsAnswers:
    """ASGI middleware: answers a refusal with 200 to a request that prefers it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _prefers(scope):
            await self.app(scope, receive, send)
            return

        async def send_refusal_as_answer(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == _REFUSED:
                headers = [
                    *message.get("headers", []),
                    (b"preference-applied", PREFERENCE.encode()),
                    (b"vary", b"Prefer"),
                ]
                message = {**message, "status": 200, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_refusal_as_answer)
