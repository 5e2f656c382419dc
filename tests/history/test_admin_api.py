"""The history for ops: `GET /v1/admin/sessions` (bearer key, filters, keyset pages, JSON Lines
and CSV exports), `/v1/admin/sessions/{id}`, `/v1/admin/compare`, the OpenAPI document, and
`voicegw history` with the same filters. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from click.testing import CliRunner

from history import History, HistoryConfig
from history.database import sqlite_url
from pipelines.contracts import MetricsTurn, ToolResult
from pipelines.contracts.history import HistoryRecorder
from tests.stack import AUTH, Gw, gateway_env, served_gateway
from voicegw.cli import main

EMAIL = {"to": "bob@example.com", "subject": "=HYPERLINK(\"x\")", "body": "hi"}


def _record(recorder: HistoryRecorder) -> None:
    """Five sessions, oldest first: s0..s4. s1 fell back (livekit → openai) and s3 had a
    failed tool call; s2 is Ann's, chosen by the allowlist."""
    sessions = [
        ("s0", None, "openai", "default"),
        ("s1", "bo@example.com", "livekit", "rollout"),
        ("s2", "Ann@Example.com", "livekit", "allowlist"),
        ("s3", None, "openai", "default"),
        ("s4", None, "openai", "default"),
    ]
    for sid, user, mode, reason in sessions:
        recorder.session_issued(session_id=sid, user=user, mode=mode, reason=reason)  # type: ignore[arg-type]
        half = recorder.open(session_id=sid, mode=mode, user=user)  # type: ignore[arg-type]
        half.user_said(1, f"=1+1 said in {sid}")
        half.agent_said(1, "Done.")
        status = "error" if sid == "s3" else "ok"
        result = ToolResult(call_id="c1", name="send_email", status=status, output="{}",
                            duration_ms=120.0)  # fmt: skip
        half.tool_called(1, result, EMAIL)
        half.turn_metrics(1, MetricsTurn(voice_to_voice_ms=500.0 + 100 * int(sid[1])))
        half.ended("client_closed")
    recorder.fallback_reported(session_id="s1", reason="no agent")
    recorder.session_issued(session_id="s1", user="bo@example.com", mode="openai",
                            reason="fallback")  # fmt: skip


@pytest.fixture
async def gw(database_url: str) -> AsyncIterator[Gw]:
    history = History(HistoryConfig(url=database_url), retention=False)
    async with served_gateway(gateway_env(), history=history) as served:
        _record(history.recorder)
        await history.recorder.flush()
        yield served


async def _get(gw: Gw, path: str, **params: str) -> Any:
    response = await gw.client.get(path, params=params, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


async def _ids(gw: Gw, **params: str) -> list[str]:
    page = await _get(gw, "/v1/admin/sessions", **params)
    return [s["id"] for s in page["sessions"]]


async def test_the_history_needs_the_api_key(gw: Gw) -> None:
    for path in ("/v1/admin/sessions", "/v1/admin/sessions/s1", "/v1/admin/compare"):
        assert (await gw.client.get(path)).status_code == 401
        wrong = await gw.client.get(path, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "s1" not in wrong.text


async def test_filters_select_sessions(gw: Gw) -> None:
    assert await _ids(gw) == ["s4", "s3", "s2", "s1", "s0"]  # newest first
    assert await _ids(gw, mode="livekit") == ["s2", "s1"]
    assert await _ids(gw, user="ann@EXAMPLE.com") == ["s2"]
    assert await _ids(gw, reason="allowlist") == ["s2"]
    assert await _ids(gw, fell_back="true") == ["s1"]
    assert await _ids(gw, fell_back="false") == ["s4", "s3", "s2", "s0"]
    assert await _ids(gw, tool_error="true") == ["s3"]
    assert await _ids(gw, since="1h") == ["s4", "s3", "s2", "s1", "s0"]
    assert await _ids(gw, until="1h") == []
    (s1,) = (await _get(gw, "/v1/admin/sessions", fell_back="true"))["sessions"]
    assert s1["modes"] == ["livekit"] and s1["fallback_reason"] == "no agent"  # one half
    assert s1["tool_calls"] == {"ok": 1, "error": 0} and s1["voice_to_voice_p50_ms"] == 600.0


async def test_pages_follow_the_cursor_without_gaps_or_repeats(gw: Gw) -> None:
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(5):
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await _get(gw, "/v1/admin/sessions", **params)
        seen += [s["id"] for s in page["sessions"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["s4", "s3", "s2", "s1", "s0"]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"since": "last tuesday"}, "invalid_filter"),
        ({"reason": "whim"}, "invalid_filter"),
        ({"fell_back": "maybe"}, "invalid_filter"),
        ({"limit": "0"}, "invalid_filter"),
        ({"cursor": "not-a-cursor"}, "invalid_cursor"),
        ({"format": "xml"}, "invalid_format"),
        ({"mode": "carrier-pigeon"}, None),
    ],
)
async def test_bad_filters_are_refused_saying_which(
    gw: Gw, params: dict[str, str], code: str | None
) -> None:
    response = await gw.client.get("/v1/admin/sessions", params=params, headers=AUTH)
    assert response.status_code == 400
    if code is not None:
        assert response.json()["error"]["code"] == code


async def test_one_session_and_unknown_ones(gw: Gw) -> None:
    detail = await _get(gw, "/v1/admin/sessions/s1")
    assert [leg["mode"] for leg in detail["legs"]] == ["livekit"]
    (turn,) = detail["legs"][0]["turns"]
    assert turn["tool_calls"][0]["arguments"] == EMAIL
    assert (await gw.client.get("/v1/admin/sessions/nope", headers=AUTH)).status_code == 404
    bad = await gw.client.get("/v1/admin/sessions/" + "x" * 300, headers=AUTH)
    assert bad.status_code == 400


async def test_exports_as_json_lines_and_csv(gw: Gw) -> None:
    lines = await gw.client.get(
        "/v1/admin/sessions",
        params={"mode": "openai"},
        headers={**AUTH, "Accept": "application/x-ndjson"},
    )
    assert lines.headers["content-type"].startswith("application/x-ndjson")
    assert [json.loads(line)["id"] for line in lines.text.splitlines()] == ["s4", "s3", "s0"]

    table = await gw.client.get("/v1/admin/sessions", params={"format": "csv"}, headers=AUTH)
    assert table.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(table.text)))
    assert [r["id"] for r in rows] == ["s4", "s3", "s2", "s1", "s0"]
    assert rows[1]["tool_calls_error"] == "1"

    turns = await gw.client.get("/v1/admin/sessions/s3", params={"format": "csv"}, headers=AUTH)
    (turn,) = list(csv.DictReader(io.StringIO(turns.text)))
    # what people said cannot run as a spreadsheet formula
    assert turn["user_text"] == "'=1+1 said in s3" and turn["tool_calls"] == "send_email:error"
    empty = await gw.client.get(
        "/v1/admin/sessions", params={"format": "csv", "until": "1h"}, headers=AUTH
    )
    assert empty.text.splitlines() == [table.text.splitlines()[0]]


async def test_compare_gives_each_modes_figures(gw: Gw) -> None:
    figures = {m["mode"]: m for m in (await _get(gw, "/v1/admin/compare", since="7d"))["modes"]}
    assert (figures["livekit"]["sessions"], figures["livekit"]["fell_back"]) == (2, 1)
    assert figures["livekit"]["fallback_rate"] == 0.5
    assert (figures["openai"]["sessions"], figures["openai"]["tool_errors"]) == (3, 1)
    assert figures["openai"]["voice_to_voice_p50_ms"] == 800.0  # s0, s3, s4: 500, 800, 900


async def test_the_openapi_document_describes_the_history(gw: Gw) -> None:
    document = (await gw.client.get("/openapi.json")).json()
    sessions = document["paths"]["/v1/admin/sessions"]["get"]
    names = {p["name"] for p in sessions["parameters"]}
    assert {"since", "until", "mode", "reason", "user", "fell_back", "tool_error"} <= names
    assert {"cursor", "limit", "format"} <= names
    assert "text/csv" in sessions["responses"]["200"]["content"]
    assert "/v1/admin/sessions/{session_id}" in document["paths"]
    assert "SessionDetail" in document["components"]["schemas"]


async def test_without_a_history_the_routes_say_so() -> None:
    async with served_gateway(gateway_env()) as gw:
        response = await gw.client.get("/v1/admin/sessions", headers=AUTH)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "history_off"
        ready = (await gw.client.get("/readyz")).json()
    assert ready["history"]["state"] == "off"


def test_voicegw_history_reads_the_same_history(tmp_path: Any) -> None:
    url = sqlite_url(tmp_path / "history.db")

    async def fill() -> None:
        history = History(HistoryConfig(url=url), retention=False)
        history.start()
        _record(history.recorder)
        await history.aclose()

    asyncio.run(fill())
    env = {"DATABASE_URL": url}
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(main, ["history", *args], env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    table = run("--mode", "livekit")
    assert "s2" in table and "s1" in table and "s0" not in table
    lines = run("--format", "jsonl", "--tool-error")
    assert [json.loads(line)["id"] for line in lines.splitlines()] == ["s3"]
    assert "=1+1 said in s2" in run("--session", "s2")
    compare = run("--compare", "--since", "7d")
    livekit = next(line for line in compare.splitlines() if line.startswith("livekit"))
    assert livekit.split()[1] == "2" and "50.0% (1)" in livekit
    bad = runner.invoke(main, ["history", "--since", "soon"], env=env)
    assert bad.exit_code == 2 and "since" in bad.output
    missing = runner.invoke(main, ["history", "--session", "nope"], env=env)
    assert missing.exit_code == 2 and "no session" in missing.output
