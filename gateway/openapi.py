"""The OpenAPI 3.1 document of the HTTP API, built from the same models the handlers use."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel

from pipelines.contracts import MODES, SessionConfig

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
    for model in (SessionConfig, LaunchRequest, LaunchResponse, FallbackRequest, AdminRouting):
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
