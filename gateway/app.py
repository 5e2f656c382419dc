"""The gateway's HTTP surface (DESIGN.md "HTTP surface")."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from history import History
from pipelines.contracts import MODES, Mode, Settings
from pipelines.contracts.history import NO_HISTORY, HistoryRecorder
from pipelines.contracts.validation import describe_validation_error
from relay import RelayConfig, RelayEndpoint

from .admin import admin_view
from .body_limit import BodyLimit
from .dispatch import LiveKitProber, LiveKitServerApi
from .errors import (
    GatewayError,
    InvalidRequest,
    NotConfigured,
    RateLimited,
    Unavailable,
    UpstreamFailed,
)
from .history_api import HistoryApi
from .issuer import (
    FallbackRequest,
    LaunchRequest,
    SessionIssuer,
    check_session_id,
    check_user,
    new_session_id,
    parse_mode,
)
from .launcher import Launcher, RecallClient
from .openapi import openapi_document
from .page_policy import SecurityHeaders, page_headers
from .reachability import Reachability
from .redis_store import RedisStore
from .router import Router
from .store import MemoryStore, Store
from .tokens import LaunchClaims, LaunchTokenError, verify_launch_token

log = logging.getLogger("voicegw.gateway")

PAGE_DIR = Path(__file__).resolve().parents[1] / "client-config"
MAX_BODY_BYTES = 64 * 1024

_M = TypeVar("_M", bound=BaseModel)

# The one place a domain error becomes an HTTP status.
STATUS_OF: dict[type[GatewayError], int] = {
    InvalidRequest: 400,
    RateLimited: 429,
    NotConfigured: 503,
    Unavailable: 503,
    UpstreamFailed: 502,
}


class ApiError(Exception):
    """An error of the HTTP exchange itself (credentials, the body): its status and code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

class Gateway:
    """Per-process state of the gateway and its request handlers."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
        recall: RecallClient | None = None,
        history: History | None = None,
    ) -> None:
        """`store` defaults to Redis when REDIS_URL is set, else this process's memory;
        `clock` (epoch seconds) times the breaker: tests pass a fake one; `history` records
        every session (the gateway starts and closes it; None: nothing is recorded)."""
        self.settings = settings
        self.history = history
        self.recorder: HistoryRecorder = history.recorder if history is not None else NO_HISTORY
        self.issuer = SessionIssuer(settings)
        self.production = settings.voicegw_env == "production"
        self.started_at = datetime.now(UTC)
        self._owns_store = store is None
        self.store = store or store_from_settings(settings)
        self.router = Router.from_settings(settings, self.store, clock=clock)
        if recall is None and settings.recall_api_key is not None:
            recall = RecallClient(
                api_base=settings.recall_api_base,
                api_key=settings.recall_api_key.get_secret_value(),
                timeout_s=settings.recall_timeout_seconds,
            )
        self.launcher = Launcher(
            issuer=self.issuer,
            recall=recall,
            bot_name=settings.recall_bot_name,
            variant=settings.recall_variant,
            router=self.router,
        )
        self.relay = RelayEndpoint(
            RelayConfig.from_settings(settings), self.store, history=self.recorder
        )
        self.livekit_api: LiveKitServerApi | None = None
        if settings.livekit_url and settings.livekit_api_key and settings.livekit_api_secret:
            self.livekit_api = LiveKitServerApi(
                url=settings.livekit_url,
                api_key=settings.livekit_api_key.get_secret_value(),
                api_secret=settings.livekit_api_secret.get_secret_value(),
                agent_name=settings.livekit_agent_name,
            )
        self.dispatch_check = (
            settings.livekit_dispatch_check
            if settings.livekit_dispatch_check is not None
            else self.production
        )
        # What /readyz connects to for each mode: the LiveKit server, the relay's upstream.
        self.upstreams: dict[Mode, Reachability] = {
            "openai": Reachability(settings.openai_realtime_url)
        }
        if settings.livekit_url:
            self.upstreams["livekit"] = Reachability(settings.livekit_url)
        self.prober: LiveKitProber | None = None
        if self.livekit_api is not None and settings.livekit_probe_interval_seconds > 0:
            self.prober = LiveKitProber(
                self.livekit_api,
                self.router.probe_failed,
                interval_s=settings.livekit_probe_interval_seconds,
            )

    async def aclose(self) -> None:
        """Write the history's queue and close it, and close the store's connections if this
        gateway made the store (the served app does it on shutdown)."""
        if self.history is not None:
            await self.history.aclose()
        if self._owns_store:
            await self.store.aclose()

    # -- helpers ---------------------------------------------------------------------------

    def _launch_claims(self, token: str | None) -> LaunchClaims | None:
        if token is None:
            if self.production:
                raise ApiError(401, "launch_required", "a launch token is required")
            return None
        try:
            return verify_launch_token(self.issuer.secret, token)
        except LaunchTokenError as exc:
            raise ApiError(401, "invalid_launch", str(exc)) from None

    def _require_api_key(self, request: Request) -> None:
        key = self.settings.gateway_api_key
        if key is None:
            raise ApiError(503, "not_configured", "GATEWAY_API_KEY is not set on this gateway")
        given = _bearer(request) or ""
        if not hmac.compare_digest(given.encode(), key.get_secret_value().encode()):
            raise ApiError(401, "unauthorized", "a valid bearer API key is required")

    # -- handlers --------------------------------------------------------------------------

    async def session(self, request: Request) -> Response:
        q = request.query_params
        requested = parse_mode(q.get("mode"))
        claims = self._launch_claims(q.get("launch") or None)
        session_id = q.get("session_id")  # given empty, it is refused (not generated)
        if session_id is not None:
            check_session_id(session_id)
        if claims is not None:
            if session_id is not None and session_id != claims.session_id:
                raise ApiError(403, "wrong_session", "the launch token belongs to another session")
            session_id, user = claims.session_id, claims.user
            requested = requested or claims.mode
        else:
            user = check_user(q.get("user"))
            session_id = session_id or new_session_id()
        mode, reason = await self.router.route(
            session_id=session_id,
            user=user,
            requested=requested,
            caller=_caller(claims, session_id),
        )
        config = self.issuer.issue(
            session_id=session_id,
            user=user,
            mode=mode,
            reason=reason,
            launch=q.get("launch") or None,
        )
        await self.router.issued(session_id, mode, reason)
        self.recorder.session_issued(session_id=session_id, user=user, mode=mode, reason=reason)
        if mode == "livekit" and self.livekit_api and self.dispatch_check:
            await self.livekit_api.ensure_agent(session_id=session_id, user=user)
        log.info(
            "session issued",
            extra={"session_id": session_id, "mode": mode, "reason": reason},
        )
        return _json(config)

    async def fallback(self, request: Request) -> Response:
        claims = self._launch_claims(_bearer(request))  # before a byte of the body is read
        body = await _read_model(request, FallbackRequest)
        user = None
        if claims is not None:
            if claims.session_id != body.session_id:
                raise ApiError(403, "wrong_session", "the launch token belongs to another session")
            user = claims.user
        log.warning(
            "livekit fallback reported",
            extra={"session_id": body.session_id, "fallback_reason": body.reason},
        )
        await self.router.fallback(
            body.session_id, caller=_caller(claims, body.session_id), anonymous=claims is None
        )
        self.recorder.fallback_reported(session_id=body.session_id, reason=body.reason)
        config = self.issuer.issue(
            session_id=body.session_id, user=user, mode="openai", reason="fallback", launch=None
        )
        await self.router.issued(body.session_id, "openai", "fallback")
        self.recorder.session_issued(
            session_id=body.session_id, user=user, mode="openai", reason="fallback"
        )
        return _json(config)

    async def launch(self, request: Request) -> Response:
        self._require_api_key(request)
        body = await _read_model(request, LaunchRequest)
        result = await self.launcher.launch(body)
        log.info(
            "launch issued",
            extra={
                "session_id": result.session_id,
                "mode": result.mode,
                "reason": result.reason,
                "bot_id": result.bot_id,
            },
        )
        return _json(result, status=201)

    async def admin_routing(self, request: Request) -> Response:
        self._require_api_key(request)
        view = admin_view(
            policy=self.router.policy,
            overview=await self.router.overview(),
            store=await self.store.check(),
            started_at=self.started_at,
        )
        return _json(view)

    async def metrics(self, request: Request) -> Response:
        await self.router.breaker()  # brings the state gauge up to date with the clock
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        selectable = self.router.selectable_modes()
        modes: dict[str, dict[str, Any]] = {}
        for mode in MODES:
            missing = self.settings.missing_for(mode)
            modes[mode] = {
                "selectable": mode in selectable,
                "ready": not missing,
                "missing": missing,
            }
        ready = all(modes[m]["ready"] for m in selectable)
        unreachable = await self._unreachable(modes, selectable)
        breaker = await self.router.breaker()
        store = await self.store.check()
        # An open breaker does not make the gateway unready: it serves openai sessions. Nor
        # does an unreachable Redis or mode's service ("degraded"): the other mode and
        # livekit sessions still work, and taking every replica out of rotation at once
        # would end them all.
        modes["livekit"]["breaker"] = breaker.state
        # Nor does a history that cannot be written: sessions go on, their records are dropped.
        history = self._history_health()
        degraded = unreachable or store.state != "ok" or history["state"] == "degraded"
        status = "not_ready" if not ready else "degraded" if degraded else "ready"
        body: dict[str, Any] = {
            "status": status,
            "modes": modes,
            "breaker": breaker.as_dict(),
            "store": {"kind": store.kind, "state": store.state, "detail": store.detail},
            "history": history,
        }
        if self.prober is not None:
            body["livekit_probe"] = {"probes": self.prober.probes, "last_ok": self.prober.last_ok}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def _unreachable(
        self, modes: dict[str, dict[str, Any]], selectable: frozenset[Mode]
    ) -> bool:
        """Connects to the service of each selectable, configured mode (cached, bounded; see
        `Reachability`); one that cannot be reached is not ready and says why. The gateway
        itself stays ready ("degraded"): the outage of a service every replica shares would
        otherwise take them all out of rotation, and the page and the other mode with them."""
        checked = [m for m in MODES if m in selectable and modes[m]["ready"]]
        reaches = await asyncio.gather(*(self.upstreams[m].check() for m in checked))
        for mode, reach in zip(checked, reaches, strict=True):
            modes[mode]["reachable"] = reach.ok
            if not reach.ok:
                modes[mode].update(ready=False, unreachable=reach.problem)
        return not all(reach.ok for reach in reaches)

    def _history_health(self) -> dict[str, Any]:
        if self.history is None:
            return {"kind": None, "state": "off", "queued": 0, "dropped": 0, "detail": None}
        health = self.history.health()
        return {
            "kind": self.history.kind,
            "state": health.state,
            "queued": health.queued,
            "dropped": health.dropped,
            "detail": health.detail,
        }

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def page(self, request: Request) -> Response:
        index = PAGE_DIR / "index.html"
        if not index.is_file():
            raise HTTPException(404, "the page is not built")
        return FileResponse(index, headers={"Cache-Control": "no-store"})


def create_app(
    settings: Settings,
    *,
    extra_routes: Sequence[BaseRoute] = (),
    store: Store | None = None,
    clock: Callable[[], float] = time.time,
    history: History | None = None,
) -> Starlette:
    """The gateway app. `extra_routes` adds routes; `store` replaces the one built from
    settings and `clock` the breaker's (tests); `history` records sessions and serves the
    admin history (the composition root builds it from settings)."""
    gw = Gateway(settings, store=store, clock=clock, history=history)
    history_api = HistoryApi(
        history, require_api_key=gw._require_api_key, page=PAGE_DIR / "admin" / "index.html"
    )
    routes: list[BaseRoute] = [
        Route("/", gw.page, methods=["GET"]),
        Route("/healthz", gw.healthz, methods=["GET"]),
        Route("/readyz", gw.readyz, methods=["GET"]),
        Route("/openapi.json", gw.openapi, methods=["GET"]),
        Route("/v1/session", gw.session, methods=["GET"]),
        Route("/v1/session/fallback", gw.fallback, methods=["POST"]),
        Route("/v1/launch", gw.launch, methods=["POST"]),
        Route("/v1/admin/routing", gw.admin_routing, methods=["GET"]),
        Route("/metrics", gw.metrics, methods=["GET"]),
        *history_api.routes(),
        WebSocketRoute("/v1/realtime", gw.relay),
        *extra_routes,
    ]
    if PAGE_DIR.is_dir():
        routes.append(Mount("/static", StaticFiles(directory=PAGE_DIR), name="static"))
    app = Starlette(
        routes=routes,
        exception_handlers={
            ApiError: _api_error,
            GatewayError: _gateway_error,
            HTTPException: _http_error,
        },
        middleware=[
            Middleware(SecurityHeaders, headers=page_headers(settings)),
            *_cors(settings.cors_origins),
            Middleware(BodyLimit, max_bytes=MAX_BODY_BYTES),
        ],
        lifespan=_lifespan,
    )
    # Starlette would answer /static and /v1/session/ with a redirect to a URL built from the
    # Host header; those paths are plain 404s.
    app.router.redirect_slashes = False
    app.state.gateway = gw
    return app


def _cors(origins: Sequence[str]) -> list[Middleware]:
    """Pages hosted on another origin (GATEWAY_CORS_ORIGINS) may ask for sessions and report
    fallbacks. No cookies are involved: the launch token travels as a parameter or a bearer
    header, so credentials stay off. The relay's WebSocket is not subject to CORS; its ticket
    is what admits a page."""
    if not origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=list(origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            allow_credentials=False,
            max_age=600,
        )
    ]


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    """Runs the optional active LiveKit probe beside the server (LIVEKIT_PROBE_INTERVAL_SECONDS)
    and the history's writer, and closes both (and the store) at the end."""
    gateway: Gateway = app.state.gateway
    if gateway.history is not None:
        gateway.history.start()
    prober = gateway.prober
    task = asyncio.create_task(prober.run()) if prober is not None else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await gateway.aclose()


# The gateway's one HTTP error shape: `{"error": {"code", "message"}}`.


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message)


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    status = next(code for kind, code in STATUS_OF.items() if isinstance(exc, kind))
    response = error_response(status, exc.code, exc.message)
    if isinstance(exc, RateLimited):
        response.headers["Retry-After"] = str(math.ceil(exc.retry_after_s))
    return response


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_ERROR_CODES.get(exc.status_code, "http_error")
    response = error_response(exc.status_code, code, str(exc.detail))
    response.headers.update(exc.headers or {})  # 405's Allow, 413's Connection: close
    return response


_HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


def store_from_settings(settings: Settings) -> Store:
    """Redis when REDIS_URL is set (several replicas), else this process's memory."""
    if settings.redis_url is None:
        return MemoryStore()
    return RedisStore(
        settings.redis_url.get_secret_value(),
        prefix=settings.redis_key_prefix,
        timeout_s=settings.redis_timeout_seconds,
    )


def _caller(claims: LaunchClaims | None, session_id: str) -> str:
    """Whom a session request's rate limit counts: the launch token's session, or (dev, no
    token) the session id asked for."""
    return f"launch:{claims.session_id}" if claims is not None else f"session:{session_id}"


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


async def _read_model(request: Request, model: type[_M]) -> _M:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "the body must be application/json")
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, "body_too_large", f"the body must be at most {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(raw or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, "invalid_body", describe_validation_error(exc, whole="body")) from None


def _json(model: BaseModel, status: int = 200) -> Response:
    return Response(
        model.model_dump_json(),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
