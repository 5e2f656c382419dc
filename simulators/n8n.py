"""n8n webhook simulator: the tool webhooks of the catalogue, as n8n answers them.

It validates every request the way our workflows rely on it (POST, JSON body with
`session_id` and `call_id` plus the tool's arguments, an `Idempotency-Key` of
`<session_id>:<call_id>`) and answers 400 with n8n's error shape when one is off. Like our
workflows, it does the work once per `Idempotency-Key`: a repeat is answered "already done"
without doing it again (`executed` lists the keys it acted on). A test scripts how each
webhook behaves next (`script()`), and reads what arrived (`received`).

Behaviours beyond the plain answers: `slow` (answers after `slow_seconds`), `trickle` (a 200
whose body comes one byte every `trickle_seconds` and never ends in a test's time), `huge` (a
200 with a JSON body of `huge_bytes`, sent as fast as the client reads; `huge_sent` counts
what it got out) and `hang_up` (the connection drops in the middle of the answer).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from pipelines.contracts.tools import TOOLS_BY_NAME, ToolArgumentError, ToolSpec

Behaviour = Literal[
    "ok", "failed", "http_500", "http_404", "not_json", "slow", "trickle", "huge", "hang_up"
]


@dataclass(frozen=True)
class Received:
    path: str
    headers: Mapping[str, str]
    body: dict[str, Any]


@dataclass
class N8nSimulator:
    """The ASGI app is `self.app`; serve it with `simulators.server.serve`."""

    tools: Mapping[str, ToolSpec] = field(default_factory=lambda: TOOLS_BY_NAME)
    slow_seconds: float = 30.0
    trickle_seconds: float = 0.1
    huge_bytes: int = 50 * 1024 * 1024
    received: list[Received] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)  # Idempotency-Keys acted on, in order
    huge_sent: int = 0
    _scripts: dict[str, list[Behaviour]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_path = {tool.webhook_path: tool for tool in self.tools.values()}
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST", "GET"])])

    def script(self, webhook_path: str, *behaviours: Behaviour) -> None:
        """The next requests to `webhook_path` behave like this, in order; then "ok" again."""
        self._scripts.setdefault(webhook_path, []).extend(behaviours)

    async def _handle(self, request: Request) -> Response:
        path = request.path_params["path"]
        tool = self._by_path.get(path)
        if tool is None:
            return self._reject(404, f"webhook {path!r} is not registered", code=404)
        if request.method != "POST":
            return self._reject(405, f"webhook {path!r} only accepts POST", code=404)
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self._reject(400, "the body is not JSON")
        problem = _check(tool, request, body)
        if problem:
            return self._reject(400, problem)
        self.received.append(Received(path, dict(request.headers), body))
        key = request.headers["idempotency-key"]
        if key in self.executed:
            return JSONResponse(
                {"status": "COMPLETED", "message": "(simulated) already done", "duplicate": True}
            )
        self.executed.append(key)
        behaviour = self._scripts.get(path, []).pop(0) if self._scripts.get(path) else "ok"
        if behaviour in ("trickle", "huge", "hang_up"):
            return StreamingResponse(self._stream(behaviour), media_type="application/json")
        return await _answer(behaviour, tool, body, self.slow_seconds)

    async def _stream(self, behaviour: Behaviour) -> AsyncIterator[bytes]:
        if behaviour == "trickle":
            for byte in b'{"status":"COMPLETED","message":"' + b"." * 100_000:
                yield bytes((byte,))
                await asyncio.sleep(self.trickle_seconds)
        elif behaviour == "huge":
            chunk = b'"' + b"x" * 65_534 + b'",'
            yield b'{"status":"COMPLETED","rows":['
            while self.huge_sent < self.huge_bytes:
                yield chunk
                self.huge_sent += len(chunk)
            yield b'"end"]}'
        else:  # hang_up: the connection drops mid-answer
            yield b'{"status":'
            raise ConnectionResetError("simulated hang-up")

    def _reject(self, status: int, message: str, code: int = 400) -> Response:
        self.rejected.append(message)
        return JSONResponse({"code": code, "message": message}, status_code=status)


def _check(tool: ToolSpec, request: Request, body: Any) -> str | None:
    if request.headers.get("content-type", "").split(";")[0] != "application/json":
        return "content-type must be application/json"
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    session_id, call_id = body.get("session_id"), body.get("call_id")
    if not isinstance(session_id, str) or not session_id:
        return "session_id is missing"
    if not isinstance(call_id, str) or not call_id:
        return "call_id is missing"
    if request.headers.get("idempotency-key") != f"{session_id}:{call_id}":
        return "Idempotency-Key must be <session_id>:<call_id>"
    arguments = {k: v for k, v in body.items() if k not in ("session_id", "call_id")}
    try:
        tool.validate_arguments(arguments)
    except ToolArgumentError as exc:
        return str(exc)
    return None


async def _answer(
    behaviour: Behaviour, tool: ToolSpec, body: dict[str, Any], slow_s: float
) -> Response:
    if behaviour == "ok":
        return JSONResponse(_success(tool, body))
    if behaviour == "failed":
        return JSONResponse({"status": "FAILED", "error": "Gmail quota exceeded"})
    if behaviour == "http_500":
        return JSONResponse({"code": 0, "message": "Workflow could not be started!"}, 500)
    if behaviour == "http_404":
        return JSONResponse(
            {"code": 404, "message": "The requested webhook is not registered."}, 404
        )
    if behaviour == "not_json":
        return PlainTextResponse("<html>Bad gateway</html>", 200)
    await asyncio.sleep(slow_s)  # "slow": longer than any tool timeout
    return JSONResponse(_success(tool, body))


def _success(tool: ToolSpec, body: dict[str, Any]) -> dict[str, Any]:
    if tool.name == "send_email":
        return {"status": "COMPLETED", "message": f"(simulated) Email sent to {body['to']}"}
    if tool.name == "query_database":
        return {
            "status": "COMPLETED",
            "results": [{"text": f"(simulated) Top passage about {body['query']}", "score": 0.92}],
        }
    return {"status": "COMPLETED"}
