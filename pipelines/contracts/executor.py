"""The n8n tool executor shared by both modes.

`execute()` never raises for anything the outside world does: every failure becomes a
`ToolResult` whose `output` the model can speak about. Cancelling it is safe (the HTTP request
is abandoned; n8n's idempotency key makes a later retry of the same call harmless).

Each call has one deadline for all of it (connecting, sending, the whole answer), and the
answer is read up to `MAX_ANSWER_BYTES`: past that it is not parsed, only its start is kept.
A call that timed out or lost its connection once the request was on its way has an unknown
outcome (n8n may have done it): the model is told so, not that it failed, and when it asks
for the same request again (same tool, same arguments) in the same session the retry carries
the first call's `Idempotency-Key` (`<session_id>:<first call_id>`), so n8n can tell it is a
repeat. The key keeps DESIGN's shape with the model's own call id; only a retry of an
unknown outcome reuses an earlier one (a deliberate repeat after a known outcome gets its own).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict

from .messages import ToolStatus
from .metrics import TOOL_CALLS, TOOL_LATENCY, to_ms
from .tools import TOOLS_BY_NAME, ToolArgumentError, ToolSpec

log = logging.getLogger("voicegw.tools")

_MAX_OUTPUT_CHARS = 4000
MAX_ANSWER_BYTES = 64 * 1024  # more than the model is ever given (_MAX_OUTPUT_CHARS)
_CONNECT_RETRIES = 2
_RETRY_BACKOFF_S = 0.1
_REMEMBERED_UNKNOWN = 64  # requests of unknown outcome remembered per executor


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
    # The Idempotency-Key n8n was sent (a repeat of a call of unknown outcome reuses the first
    # call's); None when no request went out.
    idempotency_key: str | None = None


class N8nExecutor:
    """Runs catalogue tools as n8n webhooks: POST `<base_url>/<webhook_path>`. One per
    session (it remembers requests of unknown outcome, for their retries)."""

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
        tool's own bound (for the whole call)."""
        self._base_url = base_url.rstrip("/") if base_url else None
        self._client = client
        self._owns_client = client is None
        self._tools = tools
        self._timeout_s = timeout_s
        # (session, tool, arguments) digest -> the call id of a request whose outcome is unknown
        self._unknown: OrderedDict[str, str] = OrderedDict()

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def execute(
        self, *, session_id: str, call_id: str, name: str, arguments: str | Mapping[str, Any]
    ) -> ToolResult:
        started = time.perf_counter()
        sent_as: list[str] = []
        status, output = await self._run(session_id, call_id, name, arguments, sent_as)
        elapsed_s = time.perf_counter() - started
        result = ToolResult(
            call_id=call_id,
            name=name,
            status=status,
            output=output,
            duration_ms=to_ms(elapsed_s),
            idempotency_key=sent_as[0] if sent_as else None,
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
        self,
        session_id: str,
        call_id: str,
        name: str,
        arguments: str | Mapping[str, Any],
        sent_as: list[str],
    ) -> tuple[ToolStatus, str]:
        """The call's outcome; `sent_as` gets the Idempotency-Key of the request, if one is
        made."""
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
        request = _digest(session_id, name, args)
        request_id = self._unknown.pop(request, call_id)
        if request_id != call_id:
            log.info(
                "tool call repeats one of unknown outcome",
                extra={"session_id": session_id, "call_id": call_id, "first_call_id": request_id},
            )
        sent = False
        key = idempotency_key(session_id, request_id)
        sent_as.append(key)

        async def trace(event: str, info: dict[str, Any]) -> None:
            nonlocal sent
            if event.endswith("send_request_headers.started"):
                sent = True  # from here on n8n may have the request

        try:
            async with asyncio.timeout(timeout):
                code, body, clipped = await self._post(
                    f"{self._base_url}/{tool.webhook_path}",
                    body={"session_id": session_id, "call_id": request_id, **args},
                    headers={"Idempotency-Key": key},
                    trace=trace,
                )
        except (TimeoutError, httpx.TimeoutException):
            if not sent:
                return "error", _failure(name, "the workflow service could not be reached")
            return self._unknown_outcome(
                request, request_id, name, f"it did not answer within {timeout:g} seconds"
            )
        except httpx.HTTPError:
            if not sent:
                return "error", _failure(name, "the workflow service could not be reached")
            return self._unknown_outcome(
                request, request_id, name, "the connection was lost before it answered"
            )
        return _interpret(name, code, body, clipped)

    def _unknown_outcome(
        self, request: str, request_id: str, name: str, why: str
    ) -> tuple[ToolStatus, str]:
        self._unknown[request] = request_id
        while len(self._unknown) > _REMEMBERED_UNKNOWN:
            self._unknown.popitem(last=False)
        return "error", (
            f"The {name} request reached the workflow service, but {why}, so it may or may "
            "not have been done. Do not tell the user it failed: say it may have gone through. "
            "If they want it tried again, call the tool again with exactly the same arguments "
            "(the workflow service recognises the repeat and does not do it twice)."
        )

    async def _post(
        self, url: str, *, body: dict[str, Any], headers: dict[str, str], trace: Any
    ) -> tuple[int, bytes, bool]:
        """The status, the answer (at most MAX_ANSWER_BYTES of it) and whether it was cut."""
        if self._client is None:
            self._client = httpx.AsyncClient()
        for attempt in range(_CONNECT_RETRIES + 1):
            try:
                async with self._client.stream(
                    "POST",
                    url,
                    json=body,
                    # identity: a compressed answer could inflate past the cap in one read
                    headers={**headers, "Accept-Encoding": "identity"},
                    extensions={"trace": trace},
                ) as response:
                    received = bytearray()
                    async for chunk in response.aiter_raw():
                        received += chunk
                        if len(received) > MAX_ANSWER_BYTES:
                            return response.status_code, bytes(received[:MAX_ANSWER_BYTES]), True
                    return response.status_code, bytes(received), False
            except (httpx.ConnectError, httpx.ConnectTimeout):
                # Nothing reached n8n, so nothing can have happened: safe to try again.
                if attempt == _CONNECT_RETRIES:
                    raise
                await asyncio.sleep(_RETRY_BACKOFF_S * (attempt + 1))
        raise AssertionError("unreachable")


def _digest(session_id: str, name: str, args: dict[str, Any]) -> str:
    canonical = json.dumps([session_id, name, args], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _interpret(name: str, code: int, raw: bytes, clipped: bool) -> tuple[ToolStatus, str]:
    body: Any = None
    if not clipped:  # a clipped answer is not JSON; a whole one is small enough to parse
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            body = None
    if code >= 500:
        return "error", _failure(name, f"the workflow service had an internal error (HTTP {code})")
    if code >= 400:
        detail = _message_of(body)
        reason = f"the workflow service refused the request (HTTP {code})"
        return "error", _failure(name, f"{reason}: {detail}" if detail else reason)
    if clipped:
        start = raw.decode("utf-8", "replace")
        return "ok", _clip(f"(the answer was longer than {MAX_ANSWER_BYTES} bytes; its start) "
                           + start)  # fmt: skip
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
