"""Groq simulator: OpenAI-compatible streaming chat completions on 127.0.0.1.

The client's `base_url` is `<url>/openai/v1` (what livekit-plugins-groq takes). It validates
each request the way the real API would reject it (bearer key, model, message roles, tool
shapes, sampling bounds, `stream: true`) and streams Server-Sent Events: content deltas one
token at a time (`tokens`: pieces of about the size Llama 3's tokenizer makes, ~1.3 a word),
`tokens_per_s` after the first, or tool-call deltas, then a usage chunk and `[DONE]`. Usage
counts the prompt at about 4 characters a token; `prompt_tokens` and `completion_tokens` add
up what every request was sent and streamed, cancelled ones included (what Groq bills).

Answers are a function of the conversation, not a queue, so speculative (preemptive) requests
that the pipeline cancels do not shift what later requests get:
- last message is a tool result → "(simulated) Done. <first words of the result>"
- last user message contains a rule's `contains` and no tool ran since → that rule's tool call
- otherwise → "(simulated) You said: <the user's words>" and `reply_tail` (empty unless a
  latency profile asks for replies as long as real ones)
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
_PIECE = re.compile(r"\s*(?:[A-Za-z]+|\d{1,3}|[^\sA-Za-z\d])|\s+")
_CHARS_PER_TOKEN = 4


def tokens(text: str) -> list[str]:
    """`text` in token-sized pieces that join back into it: short words whole (with the space
    before them), longer ones in pieces of 4 letters, each digit group and punctuation mark
    apart, as a BPE tokenizer roughly cuts English."""
    pieces: list[str] = []
    for match in _PIECE.finditer(text):
        piece = match.group()
        word = piece.lstrip()
        if word.isalpha() and len(word) > 6:
            lead = piece[: len(piece) - len(word)]
            parts = [word[i : i + 4] for i in range(0, len(word), 4)]
            pieces += [lead + parts[0], *parts[1:]]
        else:
            pieces.append(piece)
    return pieces


@dataclass(frozen=True)
class ToolRule:
    """When the last user message contains `contains`, call `name` with `arguments`."""

    contains: str
    name: str
    arguments: dict[str, Any]


@dataclass
class GroqSimulator:
    """The ASGI app is `self.app`."""

    api_key: str = "sim-groq-key"
    models: frozenset[str] = frozenset({"llama-3.1-8b-instant", "llama-3.3-70b-versatile"})
    rules: list[ToolRule] = field(default_factory=list)
    ttft_s: float = 0.0
    tokens_per_s: float = 0.0  # after the first token; 0: all tokens at once
    reply_tail: str = ""  # more of a plain answer, after what the user said
    received: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __post_init__(self) -> None:
        self.app = Starlette(
            routes=[
                Route("/openai/v1/chat/completions", self._handle, methods=["POST"]),
                # OpenAI-compatible clients list the models to open a connection early
                # (livekit-plugins-openai's LLM.prewarm), token-free.
                Route("/openai/v1/models", self._models, methods=["GET"]),
            ]
        )

    async def _models(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return self._error(401, "Invalid API Key", "invalid_api_key")
        data = [
            {
                "id": model,
                "object": "model",
                "created": 1_700_000_000,
                "owned_by": "Meta",
                "active": True,
                "context_window": 131_072,
            }
            for model in sorted(self.models)
        ]
        return JSONResponse({"object": "list", "data": data})

    async def _handle(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return self._error(401, "Invalid API Key", "invalid_api_key")
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self._error(400, "request body is not valid JSON", "invalid_request_error")
        problem = self._check(body)
        if problem:
            return self._error(400, problem, "invalid_request_error")
        self.received.append(body)
        self.prompt_tokens += _prompt_tokens(body)
        return StreamingResponse(self._stream(body), media_type="text/event-stream")

    def _error(self, status: int, message: str, code: str) -> Response:
        self.rejected.append(message)
        return JSONResponse(
            {"error": {"message": message, "type": "invalid_request_error", "code": code}},
            status_code=status,
        )

    def _check(self, body: Any) -> str | None:
        if not isinstance(body, dict):
            return "the body must be a JSON object"
        if body.get("model") not in self.models:
            return f"The model `{body.get('model')}` does not exist"
        if body.get("stream") is not True:
            return "this simulator only serves stream: true"
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "messages must be a non-empty array"
        for message in messages:
            if not isinstance(message, dict) or message.get("role") not in _ROLES:
                return "every message needs a valid role"
            if message["role"] == "tool" and not message.get("tool_call_id"):
                return "a tool message needs tool_call_id"
        temperature = body.get("temperature", 1)
        if not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
            return "temperature must be between 0 and 2"
        limit = body.get("max_completion_tokens", body.get("max_tokens", 1))
        if not isinstance(limit, int) or limit < 1:
            return "max_completion_tokens must be a positive integer"
        for tool in body.get("tools", []):
            function = tool.get("function") if isinstance(tool, dict) else None
            if (
                tool.get("type") != "function"
                or not isinstance(function, dict)
                or not function.get("name")
                or not isinstance(function.get("parameters"), dict)
                or function["parameters"].get("type") != "object"
            ):
                return "each tool must be {type: function, function: {name, parameters}}"
        return None

    def _answer(self, body: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        messages: list[dict[str, Any]] = body["messages"]
        last = messages[-1]
        if last["role"] == "tool":
            result = str(last.get("content", ""))
            return f"(simulated) Done. {' '.join(result.split()[:12])}", None
        user = next((m for m in reversed(messages) if m["role"] == "user"), None)
        text = _text_of(user) if user else ""
        tool_names = {t["function"]["name"] for t in body.get("tools", [])}
        for rule in self.rules:
            if rule.contains.lower() in text.lower() and rule.name in tool_names:
                return "", {"name": rule.name, "arguments": rule.arguments}
        return f"(simulated) You said: {text} {self.reply_tail}".rstrip(), None

    async def _stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        text, call = self._answer(body)
        chunk_id = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        created = int(time.time())

        def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
            payload = {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": body["model"],
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(payload)}\n\n".encode()

        if self.ttft_s:
            await asyncio.sleep(self.ttft_s)
        yield event({"role": "assistant", "content": ""})
        completion_tokens = 0
        if call is not None:
            yield event(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": f"call_{uuid.uuid4().hex[:16]}",
                            "type": "function",
                            "function": {
                                "name": call["name"],
                                "arguments": json.dumps(call["arguments"]),
                            },
                        }
                    ]
                }
            )
            completion_tokens = 20
            self.completion_tokens += completion_tokens
            yield event({}, "tool_calls")
        else:
            for index, piece in enumerate(tokens(text)):
                if index and self.tokens_per_s:
                    await asyncio.sleep(1 / self.tokens_per_s)
                yield event({"content": piece})
                completion_tokens += 1
                self.completion_tokens += 1
            yield event({}, "stop")
        usage = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": body["model"],
            "choices": [],
            "usage": {
                "prompt_tokens": _prompt_tokens(body),
                "completion_tokens": completion_tokens,
                "total_tokens": _prompt_tokens(body) + completion_tokens,
            },
        }
        yield f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode()


def _prompt_tokens(body: dict[str, Any]) -> int:
    sent = json.dumps(body["messages"]) + json.dumps(body.get("tools", []))
    return -(-len(sent) // _CHARS_PER_TOKEN)


def _text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict)).strip()
    return ""
