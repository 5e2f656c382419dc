"""Request bodies are bounded before they are read (issue 17.2).

`BodyLimit` refuses a request whose `Content-Length` is over the cap without reading a byte of
it, and stops one whose streamed body (chunked, or longer than it said) passes the cap as soon
as it does, on every route. The 413 closes the connection, so what the client still sends is
never read either. The handlers authenticate before they read a body.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def too_large(max_bytes: int) -> HTTPException:
    return HTTPException(
        413, f"the body must be at most {max_bytes} bytes", headers={"Connection": "close"}
    )


class BodyLimit:
    """ASGI middleware: no HTTP request body over `max_bytes` is read."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            refusal = too_large(self.max_bytes)
            response = JSONResponse(
                {"error": {"code": "body_too_large", "message": refusal.detail}},
                status_code=413,
                headers=refusal.headers,
            )
            await response(scope, receive, send)
            return
        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise too_large(self.max_bytes)  # answered by the app's 413 handler
            return message

        await self.app(scope, bounded_receive, send)


def _content_length(scope: Scope) -> int | None:
    """The declared length; an unreadable one counts as too large (the server's parser
    refuses those before we see them, but a proxy might not)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else 1 << 62
    return None
