"""The agent worker records its sessions: a real `voicegw agent` worker (its job processes set
up by `voicegw.agent.setup_job_process`) hears the question through the LiveKit stand-in's
room, calls send_email and answers; its job writes the session's livekit half into the
history database the worker's settings name (here a SQLite file of the test's own), where
the gateway and `voicegw history` read it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from history import History, HistoryConfig, SessionDetail
from history.database import sqlite_url
from tests.browser.conftest import SpokenInput
from tests.netns import NetNamespace

from .room import EMAIL, QUESTION, RoomStack, room_stack, rtc_page, wait_for_registered

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

SESSION = "hist-agent"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("history")


@pytest.fixture(scope="module")
def meeting(netns: NetNamespace, data_dir: Path) -> Iterator[RoomStack]:
    with room_stack(netns, env={"VOICEGW_DATA_DIR": str(data_dir)}) as stack:
        wait_for_registered(stack)
        yield stack


def test_the_agent_workers_job_records_its_half(
    meeting: RoomStack, question: SpokenInput, data_dir: Path
) -> None:
    async def converse() -> None:
        async with rtc_page(meeting, SESSION) as page:
            await page.wait_for("connected")
            await page.wait_for(
                "subscribed", lambda e: e["participant"].startswith("agent-"), within=30
            )
            await page.command("publish_wav", path=str(question.path))
            await page.wait_for(
                "data",
                lambda e: '"metrics.turn"' in e["payload"],
                within=90,
            )

    meeting.run(converse(), timeout=150)
    meeting.close_room(SESSION)  # the job ends with its room

    async def recorded() -> SessionDetail:
        history = History(HistoryConfig(url=sqlite_url(data_dir / "history.db")),
                          migrate=False, retention=False)  # fmt: skip
        try:
            async with asyncio.timeout(30):
                while True:
                    detail = await history.queries.session(SESSION)
                    if detail is not None and detail.legs and detail.legs[0].close_reason:
                        return detail
                    await asyncio.sleep(0.2)
        finally:
            await history.aclose()

    detail: SessionDetail = meeting.run(recorded(), timeout=40)
    (leg,) = detail.legs
    assert leg.mode == "livekit" and detail.modes == ["livekit"]
    turns = [t for t in leg.turns if t.turn >= 1]
    said: list[tuple[str, Any]] = [(s.role, s.text) for t in turns for s in t.said]
    assert ("user", QUESTION) in said
    assert any(r == "agent" and t for r, t in said)
    calls = [c for t in turns for c in t.tool_calls]
    assert [(c.name, c.status) for c in calls] == [("send_email", "ok")]
    assert calls[0].arguments == EMAIL
    assert calls[0].idempotency_key.startswith(f"{SESSION}:")
    assert any(t.voice_to_voice_ms is not None for t in turns)
