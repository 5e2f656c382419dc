"""Recall.ai simulator: Create Bot (`POST /api/v1/bot/`), as the region API answers it.

It validates what our launcher relies on, the way Recall's API does: `Authorization: Token
<key>` (401 `{"detail": "Invalid token."}` otherwise), a JSON body with an http(s)
`meeting_url`, a `bot_name` of 1-100 characters, `output_media.camera` of kind `webpage` with a
`config.url`, and a `variant` for `microsoft_teams` from Recall's list. Field problems come back
400 in Django REST framework's shape (`{"field": ["message"]}`), as Recall sends them. A test
can script the next answers (`script()`) and reads the bots it accepted (`bots`).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

VARIANTS = ("web", "web_4_core", "web_gpu")

Behaviour = Literal["ok", "http_400_meeting", "http_429", "http_500", "echo_auth"]


@dataclass(frozen=True)
class Bot:
    id: str
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class RecallSimulator:
    """The ASGI app is `self.app`; serve it with `simulators.server.serve`."""

    api_key: str = "recall-test-key"
    bots: list[Bot] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    _script: list[Behaviour] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.app = Starlette(routes=[Route("/api/v1/bot/", self._create, methods=["POST"])])

    def script(self, *behaviours: Behaviour) -> None:
        """The next valid requests are answered like this, in order; then "ok" again.
        `echo_auth` is a misbehaving error that quotes the request's Authorization header."""
        self._script.extend(behaviours)

    async def _create(self, request: Request) -> Response:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme != "Token" or key != self.api_key:
            return self._reject(401, {"detail": "Invalid token."})
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return self._reject(415, {"detail": "Unsupported media type in request."})
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self._reject(400, {"detail": "JSON parse error."})
        problems = _check(body)
        if problems:
            return self._reject(400, problems)
        behaviour = self._script.pop(0) if self._script else "ok"
        if behaviour == "http_400_meeting":
            return self._reject(400, {"meeting_url": ["The meeting has already ended."]})
        if behaviour == "http_429":
            return self._reject(429, {"detail": "Request was throttled."})
        if behaviour == "http_500":
            return self._reject(500, {"detail": "A server error occurred."})
        if behaviour == "echo_auth":
            header = request.headers.get("authorization", "")
            return self._reject(400, {"detail": f"Could not validate {header}"})
        bot = Bot(id=str(uuid.uuid4()), body=body, headers=dict(request.headers))
        self.bots.append(bot)
        return JSONResponse(_bot_resource(bot), status_code=201)

    def _reject(self, status: int, body: dict[str, Any]) -> Response:
        self.rejected.append(json.dumps(body))
        return JSONResponse(body, status_code=status)


def _check(body: Any) -> dict[str, list[str]]:
    if not isinstance(body, dict):
        return {"non_field_errors": ["Invalid data. Expected a dictionary."]}
    problems: dict[str, list[str]] = {}
    meeting_url = body.get("meeting_url")
    parts = urlsplit(meeting_url) if isinstance(meeting_url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        problems["meeting_url"] = ["Enter a valid URL."]
    name = body.get("bot_name")
    if not isinstance(name, str) or not 1 <= len(name) <= 100:
        problems["bot_name"] = ["Ensure this field has between 1 and 100 characters."]
    camera = (body.get("output_media") or {}).get("camera")
    if not isinstance(camera, dict) or camera.get("kind") != "webpage":
        problems["output_media"] = ['camera.kind must be "webpage".']
    else:
        url = (camera.get("config") or {}).get("url")
        page = urlsplit(url) if isinstance(url, str) else None
        if page is None or page.scheme not in ("http", "https") or not page.netloc:
            problems["output_media"] = ["camera.config.url must be a valid URL."]
    variant = body.get("variant")
    if not isinstance(variant, dict) or variant.get("microsoft_teams") not in VARIANTS:
        problems["variant"] = [f"microsoft_teams must be one of {', '.join(VARIANTS)}."]
    elif any(v not in VARIANTS for v in variant.values()):
        problems["variant"] = [f"every variant must be one of {', '.join(VARIANTS)}."]
    metadata = body.get("metadata", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        problems["metadata"] = ["metadata values must be strings."]
    return problems


def _bot_resource(bot: Bot) -> dict[str, Any]:
    return {
        "id": bot.id,
        "meeting_url": bot.body["meeting_url"],
        "bot_name": bot.body["bot_name"],
        "join_at": None,
        "output_media": bot.body["output_media"],
        "variant": bot.body["variant"],
        "metadata": bot.body.get("metadata", {}),
        "status_changes": [],
    }
