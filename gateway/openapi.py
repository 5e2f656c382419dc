"""The OpenAPI 3.1 document of the HTTP API, built from the same models the handlers use."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel

from history import Comparison, SessionDetail, SessionPage
from pipelines.contracts import MODES, SessionConfig
from pipelines.contracts.session_config import REASONS

from .admin import AdminRouting
from .issuer import (
    MAX_USER_LENGTH,
    SESSION_ID_PATTERN,
    FallbackRequest,
    LaunchRequest,
    LaunchResponse,
)

_REF = "#/components/schemas/{model}"


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    }


def _errors(*codes: int) -> dict[str, Any]:
    return {
        str(code): {
            "description": "error",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for code in codes
    }


def _ok(model: type[BaseModel], status: int = 200) -> dict[str, Any]:
    return {
        str(status): {
            "description": "success",
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


@cache
def openapi_document() -> dict[str, Any]:
    components: dict[str, Any] = {"Error": _error_schema()}
    models: tuple[type[BaseModel], ...] = (
        SessionConfig,
        LaunchRequest,
        LaunchResponse,
        FallbackRequest,
        AdminRouting,
        SessionPage,
        SessionDetail,
        Comparison,
    )
    for model in models:
        schema = model.model_json_schema(ref_template=_REF)
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema

    def body(model: type[BaseModel]) -> dict[str, Any]:
        ref = {"$ref": f"#/components/schemas/{model.__name__}"}
        return {"required": True, "content": {"application/json": {"schema": ref}}}

    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "voice-gateway", "version": "1"},
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/v1/session": {
                "get": {
                    "summary": "Resolve the mode and issue a session config",
                    "parameters": [
                        _query("launch", {"type": "string"}, "signed launch token"),
                        _query(
                            "mode",
                            {"type": "string", "enum": list(MODES)},
                            "requested mode (honoured when overrides are allowed)",
                        ),
                        _query(
                            "session_id",
                            {"type": "string", "pattern": SESSION_ID_PATTERN},
                            "dev only: session id (generated when absent)",
                        ),
                        _query(
                            "user",
                            {"type": "string", "minLength": 1, "maxLength": MAX_USER_LENGTH},
                            "dev only: user id or e-mail",
                        ),
                    ],
                    "responses": {**_ok(SessionConfig), **_errors(400, 401, 403, 429, 503)},
                }
            },
            "/v1/session/fallback": {
                "post": {
                    "summary": "Report a failed livekit session and get an openai session",
                    "security": [{"bearer": []}, {}],
                    "requestBody": body(FallbackRequest),
                    "responses": {
                        **_ok(SessionConfig),
                        **_errors(400, 401, 403, 413, 415, 429, 503),
                    },
                }
            },
            "/v1/launch": {
                "post": {
                    "summary": "Create a session, the page URL, and (given meeting_url) the "
                    "Recall.ai bot that loads it",
                    "security": bearer,
                    "requestBody": body(LaunchRequest),
                    "responses": {
                        **_ok(LaunchResponse, 201),
                        **_errors(400, 401, 413, 415, 502, 503),
                    },
                }
            },
            "/v1/admin/routing": {
                "get": {
                    "summary": "Routing rules, rollback breaker and session counts (every "
                    "replica's with Redis)",
                    "security": bearer,
                    "responses": {**_ok(AdminRouting), **_errors(401, 503)},
                }
            },
            **_history_paths(bearer),
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "text exposition format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/healthz": {
                "get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness per mode",
                    "responses": {
                        "200": {
                            "description": "every selectable mode is configured (status "
                            "'degraded' when Redis or a mode's service cannot be reached)"
                        },
                        "503": {"description": "a selectable mode is missing configuration"},
                    },
                }
            },
        },
    }


_EXPORTS = {
    "application/x-ndjson": {"schema": {"type": "string"}},
    "text/csv": {"schema": {"type": "string"}},
}


def _history_filters() -> list[dict[str, Any]]:
    when = {"type": "string"}
    flag = {"type": "boolean"}
    return [
        _query("since", when, "started at or after: ISO 8601, or an age (7d, 24h, 30m)"),
        _query("until", when, "started before: ISO 8601, or an age"),
        _query("mode", {"type": "string", "enum": list(MODES)}, "the mode first issued"),
        _query("reason", {"type": "string", "enum": list(REASONS)}, "the rule that chose it"),
        _query("user", {"type": "string"}, "the user (case-insensitive)"),
        _query("fell_back", flag, "fell back to openai, or not"),
        _query("tool_error", flag, "had a tool call that failed, or not"),
    ]


def _history_paths(bearer: list[dict[str, list[str]]]) -> dict[str, Any]:
    """The session history's routes (gateway/history_api.py)."""
    fmt = _query(
        "format",
        {"type": "string", "enum": ["json", "jsonl", "csv"]},
        "json (default), or an export: JSON Lines or CSV (also chosen by Accept)",
    )
    def ok(model: type[BaseModel], exports: bool) -> dict[str, Any]:
        answer = _ok(model)
        if exports:
            answer["200"]["content"].update(_EXPORTS)
        return answer

    return {
        "/v1/admin/sessions": {
            "get": {
                "summary": "Sessions in the history, newest first, a page at a time (JSON) or "
                "every matching one (JSON Lines, CSV)",
                "security": bearer,
                "parameters": [
                    *_history_filters(),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "page"),
                    _query("cursor", {"type": "string"}, "next_cursor of the previous page"),
                    fmt,
                ],
                "responses": {**ok(SessionPage, True), **_errors(400, 401, 503)},
            }
        },
        "/v1/admin/sessions/{session_id}": {
            "get": {
                "summary": "One session: its routing, and every half's turns, tool calls, "
                "latencies and errors (JSON; JSON Lines or CSV: one line per turn)",
                "security": bearer,
                "parameters": [
                    {
                        "name": "session_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": SESSION_ID_PATTERN},
                    },
                    fmt,
                ],
                "responses": {**ok(SessionDetail, True), **_errors(400, 401, 404, 503)},
            }
        },
        "/v1/admin/compare": {
            "get": {
                "summary": "Per mode: sessions, fallback rate, tool error rate, voice-to-voice "
                "p50/p95, over the same filters",
                "security": bearer,
                "parameters": _history_filters(),
                "responses": {**ok(Comparison, False), **_errors(400, 401, 503)},
            }
        },
    }
