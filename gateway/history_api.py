"""The session history over HTTP, for ops (bearer GATEWAY_API_KEY), and the admin page.

- `GET /v1/admin/sessions`: sessions newest first, filtered (`since`, `until`, `mode`,
  `reason`, `user`, `fell_back`, `tool_error`), a page at a time (`limit`, `cursor`); as JSON,
  or every matching session as JSON Lines or CSV (`?format=jsonl|csv`, or `Accept:
  application/x-ndjson|text/csv`).
- `GET /v1/admin/sessions/{id}`: one session with every half's turns (JSON), or its turns as
  JSON Lines or CSV.
- `GET /v1/admin/compare`: per mode over the same filters, the figures a rollout decision
  needs.
- `GET /admin`: the page. It holds no data and no key: it asks for the API key, keeps it in
  the tab's sessionStorage, and sends it as a bearer header to the routes above (a key never
  travels in a URL).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from history import History, InvalidCursor, SessionFilter, parse_when
from history.export import (
    SESSION_COLUMNS,
    TURN_COLUMNS,
    csv_lines,
    jsonl,
    session_row,
    turn_lines,
    turn_rows,
)
from history.queries import MAX_PAGE
from pipelines.contracts.session_config import REASONS

from .errors import InvalidRequest, NotConfigured, Unavailable
from .issuer import check_session_id, parse_mode

log = logging.getLogger("voicegw.gateway")

Format = Literal["json", "jsonl", "csv"]
_MEDIA: dict[Format, str] = {
    "json": "application/json",
    "jsonl": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
}
_ACCEPTED: dict[str, Format] = {
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "text/csv": "csv",
}
# The admin page may load only what the gateway serves, and may be framed by nobody.
ADMIN_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'",
}
_UNAVAILABLE = (DBAPIError, OSError, TimeoutError)

_T = TypeVar("_T")


class HistoryApi:
    """The history's routes on one gateway."""

    def __init__(
        self,
        history: History | None,
        *,
        require_api_key: Callable[[Request], None],
        page: Path,
    ) -> None:
        """`history` None: the routes answer 503 `history_off`; `require_api_key` raises the
        gateway's 401/503 for a bad bearer key; `page` is the admin page's HTML file."""
        self._history = history
        self._require_api_key = require_api_key
        self._page = page

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/admin", self.page, methods=["GET"]),
            Route("/v1/admin/sessions", self.sessions, methods=["GET"]),
            Route("/v1/admin/sessions/{session_id}", self.session, methods=["GET"]),
            Route("/v1/admin/compare", self.compare, methods=["GET"]),
        ]

    async def page(self, request: Request) -> Response:
        if not self._page.is_file():
            raise HTTPException(404, "the admin page is not built")
        return FileResponse(self._page, headers=ADMIN_PAGE_HEADERS)

    async def sessions(self, request: Request) -> Response:
        history = self._authorized(request)
        where = session_filter(request.query_params)
        output = _format(request)
        if output == "json":
            limit = _limit(request.query_params.get("limit"))
            cursor = request.query_params.get("cursor") or None
            try:
                page = await _read(history.queries.sessions(where, limit=limit, cursor=cursor))
            except InvalidCursor as exc:
                raise InvalidRequest("invalid_cursor", str(exc)) from None
            return _json(page)
        await _read(history.queries.sessions(where, limit=1))  # fail here, not mid-stream
        rows = history.queries.all_sessions(where)
        if output == "jsonl":
            return _stream(_lines_of(rows, lambda s: jsonl([s])), output, "sessions")
        return _stream(_csv_of(rows), output, "sessions")

    async def session(self, request: Request) -> Response:
        history = self._authorized(request)
        session_id = check_session_id(request.path_params["session_id"])
        detail = await _read(history.queries.session(session_id))
        if detail is None:
            raise HTTPException(404, "no session with that id in the history")
        output = _format(request)
        if output == "json":
            return _json(detail)
        if output == "jsonl":
            body: Iterable[str] = jsonl(turn_lines(detail))
        else:
            body = csv_lines(turn_rows(detail), TURN_COLUMNS)
        headers = _download(session_id, output)
        return Response("".join(body), media_type=_MEDIA[output], headers=headers)

    async def compare(self, request: Request) -> Response:
        history = self._authorized(request)
        return _json(await _read(history.queries.compare(session_filter(request.query_params))))

    def _authorized(self, request: Request) -> History:
        self._require_api_key(request)
        if self._history is None:
            raise NotConfigured("history_off", "the session history is off (HISTORY_ENABLED)")
        return self._history


def session_filter(query: Any) -> SessionFilter:
    """The filters of a query string; InvalidRequest names the bad one."""

    def when(name: str) -> Any:
        value = query.get(name)
        if not value:
            return None
        try:
            return parse_when(value)
        except ValueError as exc:
            raise InvalidRequest("invalid_filter", f"{name}: {exc}") from None

    def flag(name: str) -> bool | None:
        value = (query.get(name) or "").strip().lower()
        if not value:
            return None
        if value in ("true", "1", "yes"):
            return True
        if value in ("false", "0", "no"):
            return False
        raise InvalidRequest("invalid_filter", f"{name} must be true or false")

    reason = query.get("reason") or None
    if reason is not None and reason not in REASONS:
        raise InvalidRequest("invalid_filter", f"reason must be one of: {', '.join(REASONS)}")
    user = (query.get("user") or "").strip() or None
    return SessionFilter(
        since=when("since"),
        until=when("until"),
        mode=parse_mode(query.get("mode")),
        reason=reason,
        user=user,
        fell_back=flag("fell_back"),
        tool_error=flag("tool_error"),
    )


def _limit(value: str | None) -> int:
    if not value:
        return 50
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest("invalid_filter", f"limit must be 1-{MAX_PAGE}")
    return limit


def _format(request: Request) -> Format:
    given = request.query_params.get("format")
    if given:
        if given not in _MEDIA:
            raise InvalidRequest("invalid_format", "format must be json, jsonl or csv")
        return given
    accept = request.headers.get("accept", "")
    for media in accept.split(","):
        found = _ACCEPTED.get(media.split(";")[0].strip().lower())
        if found is not None:
            return found
    return "json"


async def _read(query: Any) -> Any:
    """A query's answer; a database that fails is a 503 (logged by type, never its text: a
    driver's message can carry the connection string)."""
    try:
        return await query
    except _UNAVAILABLE as exc:
        log.warning("history query failed", extra={"error": type(exc).__name__})
        raise Unavailable("history_unavailable", "the history database is unavailable") from None


async def _lines_of(
    items: AsyncIterator[_T], render: Callable[[_T], Iterable[str]]
) -> AsyncIterator[str]:
    async for item in items:
        for line in render(item):
            yield line


async def _csv_of(sessions: AsyncIterator[Any]) -> AsyncIterator[str]:
    header = True
    async for summary in sessions:
        lines = list(csv_lines([session_row(summary)], SESSION_COLUMNS))
        yield "".join(lines if header else lines[1:])
        header = False
    if header:
        yield next(csv_lines([], SESSION_COLUMNS))


def _stream(body: AsyncIterator[str], output: Format, name: str) -> Response:
    return StreamingResponse(body, media_type=_MEDIA[output], headers=_download(name, output))


def _download(name: str, output: Format | None = None) -> dict[str, str]:
    headers = {"Cache-Control": "no-store"}
    if output is not None:
        headers["Content-Disposition"] = f'attachment; filename="{name}.{output}"'
    return headers


def _json(model: BaseModel) -> Response:
    return Response(
        model.model_dump_json(),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )

