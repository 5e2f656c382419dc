"""The n8n tool executor shared by both modes.

`execute()` never raises for anything the outside world does: every failure becomes a
`ToolResult` whose `output` the model can speak about. Cancelling it is safe (the HTTP request
is abandoned; n8n's idempotency key makes a later retry of the same call harmless).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict

from .messages import ToolStatus
from .metrics import TOOL_CALLS, TOOL_LATENCY, to_ms
from .tools import TOOLS_BY_NAME, ToolArgumentError, ToolSpec

log = logging.getLogger("voicegw.tools")

_MAX_OUTPUT_CHARS = 4000
_CONNECT_RETRIES = 2
_RETRY_BACKOFF_S = 0.1


def idempotency_key(session_id: str, call_id: str) -> str:
    """The `Idempotency-Key` of one tool call (DESIGN.md): `<session_id>:<call_id>`, the
    model's own call id, so a retry of the same call is the same key."""
    return f"{session_id}:{call_id}"


class ToolResult(BaseModel):
    """What a tool call came to. `output` is the text handed back to the model."""

    model_config = ConfigDict(frozen=True)

    call_id: str
    name: str
    status: ToolStatus
    output: str
    duration_ms: float


class N8nExecutor:
    """Runs catalogue tools as n8n webhooks: POST `<base_url>/<webhook_path>`."""

    def __init__(
        self,
        base_url: str | None,
        *,
        client: httpx.AsyncClient | None = None,
        tools: Mapping[str, ToolSpec] = TOOLS_BY_NAME,
        timeout_s: float | None = None,
    ) -> None:
        """`base_url` is N8N_WEBHOOK_BASE_URL (None: tools answer "not configured").
        `client` is injectable so tests point it at a simulator; `timeout_s` overrides each
        tool's own bound."""
        self._base_url = base_url.rstrip("/") if base_url else None
        self._client = client
        self._owns_client = client is None
        self._tools = tools
        self._timeout_s = timeout_s

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def execute(
        self, *, session_id: str, call_id: str, name: str, arguments: str | Mapping[str, Any]
    ) -> ToolResult:
        started = time.perf_counter()
        status, output = await self._run(session_id, call_id, name, arguments)
        elapsed_s = time.perf_counter() - started
        result = ToolResult(
            call_id=call_id,
            name=name,
            status=status,
            output=output,
            duration_ms=to_ms(elapsed_s),
        )
        # Unknown names share one label so a model inventing tools cannot grow the series.
        metric_name = name if name in self._tools else "unknown"
        TOOL_CALLS.labels(name=metric_name, status=status).inc()
        TOOL_LATENCY.labels(name=metric_name).observe(elapsed_s)
        log.info(
            "tool call finished",
            extra={
                "session_id": session_id,
                "call_id": call_id,
                "tool": name,
                "status": status,
                "duration_ms": result.duration_ms,
            },
        )
        return result

    async def _run(
        self, session_id: str, call_id: str, name: str, arguments: str | Mapping[str, Any]
    ) -> tuple[ToolStatus, str]:
        tool = self._tools.get(name)
        if tool is None:
            return "error", _failure(name, "there is no tool with that name")
        try:
            args = tool.validate_arguments(arguments)
        except ToolArgumentError as exc:
            return "error", f"{exc}. Ask the user for what is missing and try again."
        if self._base_url is None:
            return "error", _failure(name, "tools are not configured on this server")
        timeout = self._timeout_s if self._timeout_s is not None else tool.timeout_s
        try:
            response = await self._post(
                f"{self._base_url}/{tool.webhook_path}",
                body={"session_id": session_id, "call_id": call_id, **args},
                headers={"Idempotency-Key": idempotency_key(session_id, call_id)},
                timeout_s=timeout,
            )
        except httpx.TimeoutException:
            return "error", _failure(
                name, f"the workflow service did not answer within {timeout:g} seconds"
            )
        except httpx.HTTPError:
            return "error", _failure(name, "the workflow service could not be reached")
        return _interpret(name, response)

    async def _post(
        self, url: str, *, body: dict[str, Any], headers: dict[str, str], timeout_s: float
    ) -> httpx.Response:
        if self._client is None:
            self._client = httpx.AsyncClient()
        for attempt in range(_CONNECT_RETRIES + 1):
            try:
                return await self._client.post(url, json=body, headers=headers, timeout=timeout_s)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                # Nothing reached n8n, so nothing can have happened: safe to try again.
                if attempt == _CONNECT_RETRIES:
                    raise
                await asyncio.sleep(_RETRY_BACKOFF_S * (attempt + 1))
        raise AssertionError("unreachable")


def _interpret(name: str, response: httpx.Response) -> tuple[ToolStatus, str]:
    code = response.status_code
    try:
        body: Any = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if code >= 500:
        return "error", _failure(name, f"the workflow service had an internal error (HTTP {code})")
    if code >= 400:
        detail = _message_of(body)
        reason = f"the workflow service refused the request (HTTP {code})"
        return "error", _failure(name, f"{reason}: {detail}" if detail else reason)
    if body is None:
        return "error", _failure(name, "the workflow service sent an answer that is not JSON")
    if isinstance(body, dict) and str(body.get("status", "")).upper() == "FAILED":
        detail = _message_of(body) or "no reason was given"
        return "error", _failure(name, f"the workflow reported a failure: {detail}")
    return "ok", _clip(json.dumps(body, ensure_ascii=False, separators=(",", ":")))


def _message_of(body: Any) -> str:
    if isinstance(body, dict):
        for key in ("error", "message", "detail"):
            value = body.get(key)
            if isinstance(value, dict):
                value = value.get("message")
            if isinstance(value, str) and value.strip():
                return _clip(value.strip(), 200)
    return ""


def _failure(name: str, why: str) -> str:
    return f"The {name} tool did not work: {why}. Tell the user briefly and offer to try again."


def _clip(text: str, limit: int = _MAX_OUTPUT_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
