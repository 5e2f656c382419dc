"""`voicegw history`: the session history on the command line, read from the database the
gateway writes (DATABASE_URL, else the SQLite file under VOICEGW_DATA_DIR).

The filters are the admin API's, parsed by the same code (`gateway.history_api.session_filter`),
so a query typed here and one sent to `GET /v1/admin/sessions` select the same sessions.
Output: a table for people, or JSON / JSON Lines / CSV (the API's exports) for tools.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from gateway.errors import InvalidRequest
from gateway.history_api import session_filter
from history import Comparison, History, HistoryConfig, SessionDetail, SessionFilter
from history.export import (
    SESSION_COLUMNS,
    TURN_COLUMNS,
    csv_lines,
    jsonl,
    session_row,
    turn_lines,
    turn_rows,
)
from history.migrate import migrate
from pipelines.contracts import Settings

Output = Literal["table", "json", "jsonl", "csv"]
Write = Callable[[str], None]


class HistoryQueryError(Exception):
    """A filter or session id the history cannot answer; the message says which."""


def parse_filters(values: dict[str, str | None]) -> SessionFilter:
    """`values` as the API's query string would carry them (None: not given)."""
    try:
        return session_filter({k: v for k, v in values.items() if v is not None})
    except InvalidRequest as exc:
        raise HistoryQueryError(exc.message) from None


async def run_history(
    settings: Settings,
    where: SessionFilter,
    *,
    write: Write,
    output: Output = "table",
    limit: int = 50,
    session_id: str | None = None,
    compare: bool = False,
) -> None:
    """Print sessions (`limit` of them in a table, every one in an export), one session's
    turns (`session_id`), or the per-mode comparison (`compare`)."""
    history = History(HistoryConfig.from_settings(settings), migrate=False, retention=False)
    try:
        await migrate(history.engine)  # a history nobody wrote yet reads as empty
        queries = history.queries
        if compare:
            comparison = await queries.compare(where)
            if output == "table":
                _comparison_table(comparison, write)
            else:
                write(comparison.model_dump_json(indent=2) + "\n")
            return
        if session_id is not None:
            detail = await queries.session(session_id)
            if detail is None:
                raise HistoryQueryError(f"no session {session_id!r} in the history")
            _session(detail, output, write)
            return
        if output == "table":
            page = await queries.sessions(where, limit=limit)
            _sessions_table([session_row(s) for s in page.sessions], write)
            if page.next_cursor is not None:
                write(f"(first {limit}; --limit shows more, --format csv exports them all)\n")
            return
        if output == "json":
            page = await queries.sessions(where, limit=limit)
            write(page.model_dump_json(indent=2) + "\n")
            return
        header = True
        async for summary in queries.all_sessions(where):
            if output == "jsonl":
                write("".join(jsonl([summary])))
            else:
                lines = list(csv_lines([session_row(summary)], SESSION_COLUMNS))
                write("".join(lines if header else lines[1:]))
            header = False
        if header and output == "csv":
            write(next(csv_lines([], SESSION_COLUMNS)))
    finally:
        await history.aclose()


def _session(detail: SessionDetail, output: Output, write: Write) -> None:
    if output == "json":
        write(detail.model_dump_json(indent=2) + "\n")
    elif output == "jsonl":
        write("".join(jsonl(turn_lines(detail))))
    elif output == "csv":
        write("".join(csv_lines(turn_rows(detail), TURN_COLUMNS)))
    else:
        _session_text(detail, write)


def _session_text(detail: SessionDetail, write: Write) -> None:
    write(
        f"session {detail.id}  user {detail.user or '-'}  "
        f"{detail.mode or '?'} ({detail.reason or '?'})  {detail.started_at:%Y-%m-%d %H:%M:%S}Z"
        f"  {_num(detail.duration_s, 's')}  closed: {detail.close_reason or '-'}\n"
    )
    for event in detail.routing:
        write(f"  {event.at:%H:%M:%S} {event.kind}: {event.mode or ''} {event.reason or ''}\n")
    for number, leg in enumerate(detail.legs, 1):
        write(f"-- half {number}: {leg.mode or '?'}, closed: {leg.close_reason or '-'}\n")
        for turn in leg.turns:
            v2v = _num(turn.voice_to_voice_ms, " ms")
            write(f"  turn {turn.turn}  v2v {v2v}\n")
            for said in turn.said:
                text = said.text if said.text is not None else f"({said.chars} characters)"
                write(f"    {said.role:>5}: {text}\n")
            for call in turn.tool_calls:
                args = json.dumps(call.arguments, ensure_ascii=False)
                write(
                    f"    tool {call.name} {call.status} {call.duration_ms:.0f} ms  {args}"
                    f"  key {call.idempotency_key}\n"
                )
                if call.output:
                    write(f"      n8n: {call.output}\n")
            for error in turn.errors:
                write(f"    error {error.code}: {error.message}\n")
        for error in leg.errors:
            write(f"  error {error.code}: {error.message}\n")


def _sessions_table(rows: Sequence[dict[str, Any]], write: Write) -> None:
    if not rows:
        write("no sessions\n")
        return
    columns: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
        ("started", lambda r: str(r["started_at"])[:19].replace("T", " ")),
        ("id", lambda r: r["id"]),
        ("user", lambda r: r["user"] or "-"),
        ("mode", lambda r: r["modes"] or r["mode"] or "?"),
        ("reason", lambda r: r["reason"] or "-"),
        ("duration", lambda r: _num(r["duration_s"], "s")),
        ("turns", lambda r: str(r["turns"])),
        ("tools ok/err", lambda r: f"{r['tool_calls_ok']}/{r['tool_calls_error']}"),
        ("fell back", lambda r: "yes" if r["fell_back"] else "no"),
        ("v2v p50", lambda r: _num(r["voice_to_voice_p50_ms"], " ms")),
    )
    _table([name for name, _ in columns], [[f(r) for _, f in columns] for r in rows], write)


def _comparison_table(comparison: Comparison, write: Write) -> None:
    since = f"{comparison.since:%Y-%m-%d %H:%M}Z" if comparison.since else "the start"
    until = f"{comparison.until:%Y-%m-%d %H:%M}Z" if comparison.until else "now"
    write(f"modes compared from {since} to {until}\n")
    rows = [
        [
            m.mode,
            str(m.sessions),
            _rate(m.fallback_rate, m.fell_back),
            _rate(m.tool_error_rate, m.tool_errors, m.tool_calls),
            str(m.turns),
            _num(m.voice_to_voice_p50_ms, " ms"),
            _num(m.voice_to_voice_p95_ms, " ms"),
        ]
        for m in comparison.modes
    ]
    header = ["mode", "sessions", "fallback rate", "tool error rate", "turns", "v2v p50", "p95"]
    _table(header, rows, write)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], write: Write) -> None:
    cells = [list(header), *[list(r) for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def _num(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:.0f}{unit}" if value >= 10 else f"{value:.1f}{unit}"


def _rate(rate: float | None, part: int, whole: int | None = None) -> str:
    if rate is None:
        return "-"
    of = f" of {whole}" if whole is not None else ""
    return f"{rate * 100:.1f}% ({part}{of})"
