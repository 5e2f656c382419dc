"""Response headers that keep the page to what it needs (issue 17.15).

The Content-Security-Policy allows the page's own modules and styles (livekit-client is
served from /static/vendor), the gateway's own origin for fetch and the relay's WebSocket,
and the LiveKit server (its signalling WebSocket and the HTTP endpoints livekit-client
validates with; on LiveKit Cloud, any of the project's regional hosts). Nothing inline,
nothing from elsewhere, and no framing: Recall.ai's bot loads the page as its top-level
document, so no one needs to frame it. WebRTC media is not governed by CSP.

`SecurityHeaders` adds the headers to every HTTP response (the page is also reachable as
/static/index.html; on JSON they are harmless).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipelines.contracts import Settings


def page_headers(settings: Settings) -> dict[str, str]:
    connect = ["'self'", *_origins(settings.gateway_public_url)]
    if settings.livekit_url:
        connect += _origins(settings.livekit_url)
    policy = {
        "default-src": "'none'",
        "script-src": "'self'",
        "style-src": "'self'",
        "img-src": "'self' data:",
        "media-src": "'self' blob: mediastream:",
        "connect-src": " ".join(dict.fromkeys(connect)),
        "base-uri": "'none'",
        "form-action": "'none'",
        "object-src": "'none'",
        "frame-ancestors": "'none'",
    }
    return {
        "Content-Security-Policy": "; ".join(f"{k} {v}" for k, v in policy.items()),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


def _origins(url: str) -> list[str]:
    """The ws(s) and http(s) origins of `url` (a LiveKit URL may be given either way), and the
    wildcard of LiveKit Cloud's regional hosts."""
    parts = urlsplit(url)
    if not parts.netloc:
        return []
    secure = parts.scheme in ("wss", "https")
    ws, web = ("wss", "https") if secure else ("ws", "http")
    host = parts.netloc.rsplit("@", 1)[-1]
    origins = [f"{ws}://{host}", f"{web}://{host}"]
    if parts.hostname and parts.hostname.endswith(".livekit.cloud"):
        origins += [f"{ws}://*.livekit.cloud", f"{web}://*.livekit.cloud"]
    return origins


class SecurityHeaders:
    """ASGI middleware: `headers` on every HTTP response."""

    def __init__(self, app: ASGIApp, *, headers: dict[str, str]) -> None:
        self.app = app
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
