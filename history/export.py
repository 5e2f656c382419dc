"""Exports: sessions and one session's turns as JSON Lines and CSV (the admin API's `?format=`
and `voicegw history --format`). One row per session, or one per turn; the columns are fixed,
so a spreadsheet made from one export reads the next."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel

from .models import SessionDetail, SessionSummary

SESSION_COLUMNS = (
    "id", "user", "mode", "reason", "modes", "started_at", "ended_at", "duration_s",
    "close_reason", "fell_back", "fallback_reason", "turns", "tool_calls_ok",
    "tool_calls_error", "errors", "voice_to_voice_p50_ms",
)  # fmt: skip
TURN_COLUMNS = (
    "session_id", "leg", "mode", "turn", "user_text", "agent_text", "tool_calls",
    "eou_ms", "stt_ms", "llm_ttft_ms", "tts_ttfb_ms", "voice_to_voice_ms", "errors",
)  # fmt: skip


def session_row(summary: SessionSummary) -> dict[str, Any]:
    data = summary.model_dump(mode="json", exclude={"tool_calls"})
    data["modes"] = " ".join(summary.modes)
    data["tool_calls_ok"] = summary.tool_calls.ok
    data["tool_calls_error"] = summary.tool_calls.error
    return {column: data.get(column) for column in SESSION_COLUMNS}


def turn_rows(detail: SessionDetail) -> Iterator[dict[str, Any]]:
    """One row per turn of every half, in order."""
    for leg_number, leg in enumerate(detail.legs, 1):
        for turn in leg.turns:
            said = {"user": [], "agent": []}  # type: dict[str, list[str]]
            for utterance in turn.said:
                said.setdefault(utterance.role, []).append(_text(utterance.text, utterance.chars))
            yield {
                "session_id": detail.id,
                "leg": leg_number,
                "mode": leg.mode,
                "turn": turn.turn,
                "user_text": " ".join(said["user"]),
                "agent_text": " ".join(said["agent"]),
                "tool_calls": "; ".join(f"{c.name}:{c.status}" for c in turn.tool_calls),
                "eou_ms": turn.eou_ms,
                "stt_ms": turn.stt_ms,
                "llm_ttft_ms": turn.llm_ttft_ms,
                "tts_ttfb_ms": turn.tts_ttfb_ms,
                "voice_to_voice_ms": turn.voice_to_voice_ms,
                "errors": "; ".join(e.code for e in turn.errors),
            }


def turn_lines(detail: SessionDetail) -> Iterator[dict[str, Any]]:
    """One JSON object per turn, whole (tool calls with their arguments and answers)."""
    for leg_number, leg in enumerate(detail.legs, 1):
        for turn in leg.turns:
            yield {"session_id": detail.id, "leg": leg_number, "mode": leg.mode,
                   **turn.model_dump(mode="json")}  # fmt: skip


def jsonl(items: Iterable[BaseModel | dict[str, Any]]) -> Iterator[str]:
    for item in items:
        data = item.model_dump(mode="json") if isinstance(item, BaseModel) else item
        yield json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n"


def csv_lines(rows: Iterable[dict[str, Any]], columns: tuple[str, ...]) -> Iterator[str]:
    """A header, then one line per row (RFC 4180 quoting)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\r\n")
    writer.writeheader()
    yield _take(buffer)
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
        yield _take(buffer)


def _cell(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula gets a leading quote (what people
    said reaches these cells)."""
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in _FORMULA:
        return "'" + value
    return value


_FORMULA = frozenset("=+-@\t\r")


def _take(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


def _text(text: str | None, chars: int) -> str:
    return text if text is not None else f"({chars} characters not kept)"
