"""The n8n executor against the n8n simulator: every failure becomes a speakable result."""

from __future__ import annotations

import json

import httpx
import pytest

from pipelines.contracts import N8nExecutor
from simulators.n8n import Behaviour, N8nSimulator
from simulators.server import RunningServer
from tests.stack import metric

EMAIL = {"to": "ana@example.com", "subject": "Notes", "body": "See attached."}


async def run(
    server: RunningServer,
    name: str = "send_email",
    args: object = None,
    timeout_s: float | None = None,
) -> tuple[str, str]:
    async with httpx.AsyncClient() as client:
        executor = N8nExecutor(server.url, client=client, timeout_s=timeout_s)
        result = await executor.execute(
            session_id="s1",
            call_id="call_9",
            name=name,
            arguments=json.dumps(EMAIL if args is None else args),
        )
    return result.status, result.output


async def test_success_posts_arguments_with_idempotency_key(
    n8n: N8nSimulator, n8n_server: RunningServer
) -> None:
    status, output = await run(n8n_server)
    assert status == "ok"
    assert "Email sent to ana@example.com" in output
    [request] = n8n.received
    assert request.path == "execute-gmail"
    assert request.headers["idempotency-key"] == "s1:call_9"
    assert request.body == {"session_id": "s1", "call_id": "call_9", **EMAIL}
    assert n8n.rejected == []


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        ("failed", "the workflow reported a failure: Gmail quota exceeded"),
        ("http_500", "internal error (HTTP 500)"),
        ("http_404", "refused the request (HTTP 404): The requested webhook is not registered."),
        ("not_json", "not JSON"),
        ("slow", "did not answer within 0.3 seconds"),
    ],
)
async def test_failures_become_speakable_results(
    n8n: N8nSimulator, n8n_server: RunningServer, behaviour: Behaviour, expected: str
) -> None:
    n8n.script("execute-gmail", behaviour)
    status, output = await run(n8n_server, timeout_s=0.3)
    assert status == "error"
    assert expected in output
    assert output.startswith("The send_email tool did not work")


async def test_only_connection_failures_are_retried(
    n8n: N8nSimulator, n8n_server: RunningServer
) -> None:
    n8n.script("execute-gmail", "http_500")
    await run(n8n_server)
    assert len(n8n.received) == 1  # a 500 may have had side effects: never retried


async def test_unreachable_n8n_is_a_result_not_an_exception() -> None:
    async with httpx.AsyncClient() as client:
        executor = N8nExecutor("http://127.0.0.1:9", client=client)
        result = await executor.execute(
            session_id="s", call_id="c", name="send_email", arguments=EMAIL
        )
    assert result.status == "error"
    assert "could not be reached" in result.output


async def test_invalid_arguments_never_reach_n8n(
    n8n: N8nSimulator, n8n_server: RunningServer
) -> None:
    status, output = await run(n8n_server, args={"to": "not-an-address", "subject": "x"})
    assert status == "error"
    assert "to string should match pattern" in output
    assert "body field required" in output
    assert n8n.received == []


async def test_unknown_tool_and_unconfigured_base_url() -> None:
    executor = N8nExecutor(None)
    unknown = await executor.execute(session_id="s", call_id="c", name="rm_rf", arguments="{}")
    unconfigured = await executor.execute(
        session_id="s", call_id="c", name="send_email", arguments=EMAIL
    )
    await executor.aclose()
    assert "there is no tool with that name" in unknown.output
    assert "not configured" in unconfigured.output


async def test_tool_calls_are_counted_by_name_and_status(
    n8n: N8nSimulator, n8n_server: RunningServer
) -> None:
    ok = metric("voicegw_tool_calls_total", name="query_database", status="ok")
    err = metric("voicegw_tool_calls_total", name="query_database", status="error")
    unknown = metric("voicegw_tool_calls_total", name="unknown", status="error")
    observed = metric("voicegw_tool_latency_seconds_count", name="query_database")
    n8n.script("query-database", "ok", "http_500")
    executor = N8nExecutor(n8n_server.url, timeout_s=2)
    try:
        for call in ("c1", "c2"):
            await executor.execute(
                session_id="t1", call_id=call, name="query_database", arguments={"query": "q"}
            )
        await executor.execute(session_id="t1", call_id="c3", name="made_up_tool", arguments={})
    finally:
        await executor.aclose()
    assert metric("voicegw_tool_calls_total", name="query_database", status="ok") == ok + 1
    assert metric("voicegw_tool_calls_total", name="query_database", status="error") == err + 1
    assert metric("voicegw_tool_calls_total", name="unknown", status="error") == unknown + 1
    assert metric("voicegw_tool_latency_seconds_count", name="query_database") == observed + 2
