"""The launcher: `POST /v1/launch` with a meeting URL creates the Recall.ai bot, checked by the
Recall simulator (`voicegw launch`, the same code from the shell: tests/voicegw/test_cli.py)."""

from __future__ import annotations

import socket
from urllib.parse import parse_qs, urlsplit

from gateway.tokens import verify_launch_token
from simulators.recall import RecallSimulator
from simulators.server import RunningServer
from tests.stack import AUTH, SECRETS, gateway_env, metric, served_gateway

TEAMS = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_abc%40thread.v2/0"


async def test_launch_creates_the_recall_bot_with_the_page(
    recall: RecallSimulator, recall_server: RunningServer
) -> None:
    env = gateway_env(RECALL_API_BASE=recall_server.url, RECALL_BOT_NAME="Synrg Assistant")
    ok_before = metric("voicegw_bot_launches_total", status="ok")
    async with served_gateway(env) as gw:
        response = await gw.client.post(
            "/v1/launch",
            json={"meeting_url": TEAMS, "mode": "livekit", "user": "ann@example.com"},
            headers=AUTH,
        )
    assert response.status_code == 201, response.text
    result = response.json()
    assert set(result) >= {"session_id", "bot_id", "page_url", "mode", "reason"}
    assert (result["mode"], result["reason"]) == ("livekit", "url_flag")

    [bot] = recall.bots
    assert result["bot_id"] == bot.id
    assert bot.headers["authorization"] == f"Token {SECRETS['RECALL_API_KEY']}"
    assert bot.body["meeting_url"] == TEAMS
    assert bot.body["bot_name"] == "Synrg Assistant"
    assert bot.body["output_media"]["camera"]["kind"] == "webpage"
    assert bot.body["output_media"]["camera"]["config"]["url"] == result["page_url"]
    assert bot.body["variant"]["microsoft_teams"] == "web_4_core"
    assert bot.body["metadata"] == {"session_id": result["session_id"]}

    query = parse_qs(urlsplit(result["page_url"]).query)
    assert query["session"] == [result["session_id"]]
    assert query["mode"] == ["livekit"]
    claims = verify_launch_token(SECRETS["GATEWAY_SECRET"], query["launch"][0])
    assert (claims.session_id, claims.user) == (result["session_id"], "ann@example.com")
    assert metric("voicegw_bot_launches_total", status="ok") == ok_before + 1


async def test_a_page_hosted_elsewhere_gets_the_launch_and_names_this_gateway(
    recall: RecallSimulator, recall_server: RunningServer
) -> None:
    env = gateway_env(
        RECALL_API_BASE=recall_server.url,
        GATEWAY_PUBLIC_URL="https://gw.example.com",
        GATEWAY_PAGE_URL="https://meeting-page.example.com/voice/",
    )
    async with served_gateway(env) as gw:
        response = await gw.client.post("/v1/launch", json={"meeting_url": TEAMS}, headers=AUTH)
    assert response.status_code == 201, response.text
    page = urlsplit(response.json()["page_url"])
    assert (page.scheme, page.netloc, page.path) == ("https", "meeting-page.example.com", "/voice/")
    query = parse_qs(page.query)
    # The page must ask the gateway whose secret signed its token, whatever its default is.
    assert query["gateway"] == ["https://gw.example.com"]
    verify_launch_token(SECRETS["GATEWAY_SECRET"], query["launch"][0])
    [bot] = recall.bots
    assert bot.body["output_media"]["camera"]["config"]["url"] == response.json()["page_url"]


async def test_launch_without_meeting_url_creates_no_bot(
    recall: RecallSimulator, recall_server: RunningServer
) -> None:
    async with served_gateway(gateway_env(RECALL_API_BASE=recall_server.url)) as gw:
        response = await gw.client.post("/v1/launch", json={}, headers=AUTH)
    assert response.status_code == 201
    assert response.json()["bot_id"] is None
    assert recall.bots == []


async def test_bad_meeting_urls_are_400_naming_the_field(
    recall: RecallSimulator, recall_server: RunningServer
) -> None:
    async with served_gateway(gateway_env(RECALL_API_BASE=recall_server.url)) as gw:
        for bad in ("teams meeting tomorrow", "http://teams.microsoft.com/l/x", "https://"):
            response = await gw.client.post("/v1/launch", json={"meeting_url": bad}, headers=AUTH)
            assert response.status_code == 400, bad
            assert response.json()["error"]["code"] == "invalid_meeting_url"
            assert "meeting_url" in response.json()["error"]["message"]
        unauthorised = await gw.client.post("/v1/launch", json={"meeting_url": TEAMS})
        assert unauthorised.status_code == 401
    assert recall.bots == []


async def test_recall_refusals_are_502_with_recalls_message(
    recall: RecallSimulator, recall_server: RunningServer
) -> None:
    recall.script("http_400_meeting", "http_429", "echo_auth")
    async with served_gateway(gateway_env(RECALL_API_BASE=recall_server.url)) as gw:
        answers = [
            await gw.client.post("/v1/launch", json={"meeting_url": TEAMS}, headers=AUTH)
            for _ in range(3)
        ]
    for answer in answers:
        assert answer.status_code == 502
        assert answer.json()["error"]["code"] == "recall_error"
        assert SECRETS["RECALL_API_KEY"] not in answer.text
    messages = [a.json()["error"]["message"] for a in answers]
    assert "HTTP 400" in messages[0]
    assert "meeting_url: The meeting has already ended." in messages[0]
    assert "Request was throttled." in messages[1]
    assert "[redacted]" in messages[2]  # Recall quoted our key back; we do not pass it on


async def test_wrong_recall_key_and_unreachable_recall_are_502(
    recall: RecallSimulator, recall_server: RunningServer
) -> None:
    env = gateway_env(RECALL_API_BASE=recall_server.url, RECALL_API_KEY="not-the-key")
    async with served_gateway(env) as gw:
        response = await gw.client.post("/v1/launch", json={"meeting_url": TEAMS}, headers=AUTH)
    assert response.status_code == 502
    assert "Invalid token." in response.json()["error"]["message"]

    unreachable = gateway_env(RECALL_API_BASE=f"http://127.0.0.1:{_free_port()}")
    async with served_gateway(unreachable) as gw:
        response = await gw.client.post("/v1/launch", json={"meeting_url": TEAMS}, headers=AUTH)
    assert response.status_code == 502
    assert response.json()["error"]["message"] == "Recall.ai could not be reached"
    assert recall.bots == []


async def test_launch_with_meeting_url_but_no_recall_key_is_503() -> None:
    env = {k: v for k, v in gateway_env().items() if k != "RECALL_API_KEY"}
    async with served_gateway(env) as gw:
        response = await gw.client.post("/v1/launch", json={"meeting_url": TEAMS}, headers=AUTH)
    assert response.status_code == 503
    assert "RECALL_API_KEY" in response.json()["error"]["message"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
