"""A full operations run with every log line captured as JSON: no configured secret value
appears in any log line or any response, and session-scoped lines carry the session id."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator

import httpx
import openai
import pytest

from pipelines.contracts import N8nExecutor
from simulators.livekit_server import LiveKitServer
from simulators.n8n import N8nSimulator
from simulators.openai_realtime import RealtimeSimulator
from simulators.recall import RecallSimulator
from simulators.server import RunningServer
from tests.stack import AUTH, SECRETS, gateway_env, served_gateway
from voicegw.logs import CAPPED_LIBRARIES, JsonFormatter, cap_library_loggers

TEAMS = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_zz%40thread.v2/0"

# Messages that are about one session: each must say which.
SESSION_SCOPED = {
    "session issued",
    "launch issued",
    "recall bot created",
    "recall bot creation failed",
    "livekit fallback reported",
    "tool call finished",
    "agent dispatched into existing room",
    "breaker probe admitted",
}


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextlib.contextmanager
def _capturing(level: int) -> Iterator[_Capture]:
    capture = _Capture()
    root = logging.getLogger()
    before = root.level
    root.addHandler(capture)
    root.setLevel(level)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(before)


@pytest.fixture
def captured_logs() -> Iterator[_Capture]:
    with _capturing(logging.DEBUG) as capture:  # stricter than production's INFO
        yield capture


@pytest.fixture
def captured_relay_logs() -> Iterator[_Capture]:
    # At DEBUG the websockets library logs its client handshake headers, the upstream OpenAI
    # key among them: `voicegw` caps it (configure_logging), and so does this capture.
    levels = {name: logging.getLogger(name).level for name in CAPPED_LIBRARIES}
    with _capturing(logging.DEBUG) as capture:
        cap_library_loggers()
        try:
            yield capture
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


async def test_full_run_leaks_no_secret(
    captured_logs: _Capture,
    recall: RecallSimulator,
    recall_server: RunningServer,
    livekit: LiveKitServer,
    n8n: N8nSimulator,
    n8n_server: RunningServer,
) -> None:
    env = gateway_env(
        RECALL_API_BASE=recall_server.url,
        LIVEKIT_URL=livekit.ws_url,
        LIVEKIT_DISPATCH_CHECK="true",
        N8N_WEBHOOK_BASE_URL=n8n_server.url,
    )
    responses: list[httpx.Response] = []
    recall.script("ok", "echo_auth")
    # A room still open whose agent is gone (no dispatch of ours in it).
    livekit.rooms.get_or_create("meeting_rejoin")
    async with served_gateway(env) as gw:
        c = gw.client
        responses.append(await c.post("/v1/launch", json={"meeting_url": TEAMS}, headers=AUTH))
        responses.append(await c.post("/v1/launch", json={"meeting_url": TEAMS}, headers=AUTH))
        responses.append(await c.post("/v1/launch", json={}, headers={"Authorization": "Bearer x"}))
        launched = responses[0].json()
        page_query = launched["page_url"].split("?", 1)[1]
        responses.append(await c.get(f"/v1/session?{page_query}&mode=livekit"))
        responses.append(await c.get("/v1/session?session_id=rejoin&mode=livekit"))
        responses.append(await c.get("/v1/session?session_id=o1&mode=openai"))
        for sid in ("f1", "f2", "f3"):
            # A launched page's livekit session fails: the three reports open the breaker.
            page = await c.post("/v1/launch", json={"session_id": sid}, headers=AUTH)
            token = page.json()["page_url"].rsplit("launch=", 1)[1]
            fallen = await c.get("/v1/session", params={"launch": token, "mode": "livekit"})
            assert fallen.json()["mode"] == "livekit"
            responses.append(
                await c.post(
                    "/v1/session/fallback",
                    json={"session_id": sid, "reason": "ice failed"},
                    headers={"Authorization": f"Bearer {token}"},
                )
            )
            responses += [page, fallen]
        responses.append(await c.get("/v1/session?session_id=after&mode=livekit"))
        responses.append(await c.get("/v1/admin/routing", headers=AUTH))
        responses.append(await c.get("/readyz"))
        responses.append(await c.get("/metrics"))
        responses.append(await c.get("/openapi.json"))

    executor = N8nExecutor(n8n_server.url, timeout_s=2)
    n8n.script("execute-gmail", "ok", "failed")
    try:
        for call_id in ("call-1", "call-2"):
            await executor.execute(
                session_id=launched["session_id"],
                call_id=call_id,
                name="send_email",
                arguments={"to": "ann@example.com", "subject": "Notes", "body": "Hello"},
            )
    finally:
        await executor.aclose()

    # The run did what it claims, so the scan below covers real traffic.
    assert [r.status_code for r in responses[:3]] == [201, 502, 401]
    assert [r.json()["mode"] for r in responses[3:6]] == ["livekit", "livekit", "openai"]
    assert responses[15].json()["reason"] == "breaker_open"
    assert [c.method for c in livekit.twirp.calls].count("CreateDispatch") == 1
    assert len(n8n.received) == 2

    records = [json.loads(line) for line in captured_logs.lines]
    messages = {r["msg"] for r in records}
    assert {
        "launch issued",
        "recall bot created",
        "recall bot creation failed",
        "session issued",
        "livekit fallback reported",
        "breaker state changed",
        "agent dispatched into existing room",
        "tool call finished",
    } <= messages
    for record in records:
        if record["msg"] in SESSION_SCOPED:
            assert record.get("session_id"), record

    haystacks = captured_logs.lines + [r.text for r in responses]
    haystacks += [json.dumps(dict(r.headers)) for r in responses]
    for name, value in SECRETS.items():
        for text in haystacks:
            assert value not in text, f"{name} leaked: {text[:300]}"


@pytest.fixture
def realtime() -> RealtimeSimulator:
    """The OpenAI Realtime simulator holding the key the relay must never show."""
    return RealtimeSimulator(api_key=SECRETS["OPENAI_API_KEY"])


@pytest.fixture
def stack_env() -> dict[str, str]:
    return gateway_env()


async def test_relay_session_leaks_no_secret(
    captured_relay_logs: _Capture, realtime: RealtimeSimulator, gateway: RunningServer
) -> None:
    """The openai path: a session, then the relay holding the OpenAI key upstream."""
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        response = await http.get("/v1/session?session_id=relay1&mode=openai")
    ticket = response.json()["relay"]["ticket"]
    client = openai.AsyncOpenAI(
        api_key=ticket,
        base_url=f"{gateway.url}/v1",
        websocket_base_url=f"{gateway.ws_url}/v1",
    )
    frames: list[str] = []
    try:
        async with client.realtime.connect(model="gpt-realtime") as connection:
            while '"session.created"' not in (frames[-1] if frames else ""):
                frames.append((await connection.recv_bytes()).decode())
    finally:
        await client.close()
    assert realtime.connections == 1
    records = [json.loads(line) for line in captured_relay_logs.lines]
    assert any(
        r.get("session_id") == "relay1" and r["logger"] != "voicegw.gateway" for r in records
    )
    for name, value in SECRETS.items():
        for text in [*captured_relay_logs.lines, *frames, response.text]:
            assert value not in text, f"{name} leaked: {text[:300]}"
