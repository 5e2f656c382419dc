"""The n8n executor against the n8n simulator: every failure becomes a speakable result."""

from __future__ import annotations

import asyncio
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


async def calls(
    server: RunningServer, *call_ids: str, timeout_s: float = 0.3
) -> list[tuple[str, str]]:
    """The same send_email request made once per call id, by one session's executor."""
    async with httpx.AsyncClient() as client, asyncio.timeout(10):
        executor = N8nExecutor(server.url, client=client, timeout_s=timeout_s)
        results = [
            await executor.execute(
                session_id="s1", call_id=call_id, name="send_email", arguments=EMAIL
            )
            for call_id in call_ids
        ]
    return [(r.status, r.output) for r in results]


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


# -- issue 17.5, 17.6, 17.14: slow, huge and lost answers ---------------------------------


@pytest.mark.parametrize("behaviour", ["slow", "trickle"])
async def test_one_deadline_bounds_the_whole_call(
    n8n: N8nSimulator, n8n_server: RunningServer, behaviour: Behaviour
) -> None:
    """A webhook that answers a byte at a time (each read well within the timeout) is cut off
    at the call's deadline like one that never answers."""
    n8n.trickle_seconds = 0.05
    n8n.script("execute-gmail", behaviour)
    ((status, output),) = await calls(n8n_server, "call_9")
    assert status == "error"
    assert "within 0.3 seconds" in output


@pytest.mark.parametrize(
    ("behaviour", "why"),
    [("slow", "did not answer within 0.3 seconds"), ("hang_up", "connection was lost")],
)
async def test_a_request_that_may_have_run_is_an_unknown_outcome_not_a_failure(
    n8n: N8nSimulator, n8n_server: RunningServer, behaviour: Behaviour, why: str
) -> None:
    n8n.script("execute-gmail", behaviour)
    ((status, output),) = await calls(n8n_server, "call_9")
    assert status == "error"
    assert why in output
    assert "may or may not have been done" in output and "Do not tell the user it failed" in output
    assert "did not work" not in output and "offer to try again" not in output


async def test_nothing_sent_is_a_failure_not_an_unknown_outcome() -> None:
    async with httpx.AsyncClient() as client:
        executor = N8nExecutor("http://127.0.0.1:9", client=client, timeout_s=5)
        result = await executor.execute(
            session_id="s", call_id="c", name="send_email", arguments=EMAIL
        )
    assert "could not be reached" in result.output and "may or may not" not in result.output


async def test_the_retry_of_an_unknown_outcome_keeps_its_idempotency_key(
    n8n: N8nSimulator, n8n_server: RunningServer
) -> None:
    """The model asks again after "outcome unknown" with a new call id: n8n gets the first
    call's key (and id), sees a repeat, and sends no second email."""
    n8n.script("execute-gmail", "slow")
    first, retry = await calls(n8n_server, "call_9", "call_10")
    assert "may or may not" in first[1]
    assert retry[0] == "ok" and "already done" in retry[1]
    keys = [r.headers["idempotency-key"] for r in n8n.received]
    assert keys == ["s1:call_9", "s1:call_9"]
    assert [r.body["call_id"] for r in n8n.received] == ["call_9", "call_9"]
    assert n8n.executed == ["s1:call_9"]


async def test_a_repeat_after_a_known_outcome_is_a_new_request(
    n8n: N8nSimulator, n8n_server: RunningServer
) -> None:
    n8n.script("execute-gmail", "http_500")
    await calls(n8n_server, "call_9", "call_10", "call_11")
    keys = [r.headers["idempotency-key"] for r in n8n.received]
    assert keys == ["s1:call_9", "s1:call_10", "s1:call_11"]


async def test_a_huge_answer_is_clipped_before_it_is_read_whole(
    n8n: N8nSimulator, n8n_server: RunningServer
) -> None:
    n8n.script("query-database", "huge")
    async with asyncio.timeout(10):
        status, output = await run(n8n_server, "query_database", {"query": "everything"})
    assert status == "ok"
    assert output.startswith("(the answer was longer than 65536 bytes; its start)")
    assert len(output) <= 4000
    assert n8n.huge_sent < n8n.huge_bytes // 4  # the rest was never read
