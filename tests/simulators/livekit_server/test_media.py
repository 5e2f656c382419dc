"""Real Python rtc participants (the SDK livekit-agents uses) in the test's own network
namespace: they join, hear each other through the stand-in's relay, and exchange data, on
`/rtc/v1` and on the `/rtc` fallback."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from livekit import api
from livekit.protocol.models import DisconnectReason

from simulators.livekit_server import LiveKitServer
from tests.netns import NetNamespace

from .conftest import API_KEY, API_SECRET, KEYS, RtcParticipant, token, wait_until

pytestmark = pytest.mark.netns
LOUD = 0.02 * 32767


def _of_track(sid: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event["track_sid"] == sid


def _loud_on(sid: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event["track_sid"] == sid and event["peak"] > LOUD


def _loud_from(speaker: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event["participant"] == speaker and event["peak"] > LOUD


@pytest.fixture(params=["rtc/v1", "rtc"])
async def media_server(
    request: pytest.FixtureRequest, in_netns: NetNamespace
) -> AsyncIterator[LiveKitServer]:
    stand_in = LiveKitServer(
        KEYS, idle_check_s=0.05, rng=random.Random(3), single_pc=request.param == "rtc/v1"
    )
    async with stand_in.serve(in_netns.address):
        yield stand_in


async def test_participants_hear_each_other_and_get_their_data(
    media_server: LiveKitServer,
) -> None:
    url = media_server.ws_url
    async with contextlib.AsyncExitStack() as stack:
        people = {}
        for name in ("alice", "bob", "carol"):
            participant = await stack.enter_async_context(
                RtcParticipant.start(url, token(name, can_update_own_metadata=True), name)
            )
            await participant.wait_for("connected")
            people[name] = participant
        alice, bob, carol = people["alice"], people["bob"], people["carol"]
        room = media_server.rooms.get("room-1")
        # The SDK took the path the server offers (/rtc when /rtc/v1 answers 404).
        assert {p.single_pc for p in room.participants.values()} == {media_server.single_pc}

        await alice.command("publish_sine", freq=440, seconds=3)
        await bob.command("publish_sine", freq=660, seconds=3)
        for listener, speaker in ((bob, "alice"), (carol, "alice"), (alice, "bob")):
            heard = await listener.wait_for("audio", _loud_from(speaker))
            assert heard["frames"] > 0
        # Each publisher heard that its track got a subscriber (livekit-agents waits for it
        # before it speaks), once per track.
        published = await alice.wait_for("published")
        subscribed = await alice.wait_for("local_track_subscribed")
        assert subscribed["track_sid"] == published["track_sid"]
        await bob.wait_for("local_track_subscribed")
        assert [e["event"] for e in alice.events].count("local_track_subscribed") == 1

        # Data to bob alone, then to everyone: carol sees only the second (same sender,
        # reliable channel, so the first would have come before it).
        await alice.command(
            "send_data", payload="for bob", topic="voice.state", destinations=["bob"]
        )
        await alice.command("send_data", payload="for all", topic="chat")
        got = await bob.wait_for("data", lambda e: e["payload"] == "for bob")
        assert (got["participant"], got["topic"]) == ("alice", "voice.state")
        await carol.wait_for("data", lambda e: e["payload"] == "for all")
        assert [e["payload"] for e in carol.events if e["event"] == "data"] == ["for all"]

        # alice stops her microphone: the others see the track go.
        await alice.command("unpublish")
        await bob.wait_for("track_unpublished", lambda e: e["participant"] == "alice")
        await wait_until(lambda: not room.participants["alice"].tracks, what="alice unpublished")

        await bob.command("set_attributes", attributes={"lk.agent.state": "speaking"})
        seen = await alice.wait_for("attributes", lambda e: e["participant"] == "bob")
        assert seen["attributes"] == {"lk.agent.state": "speaking"}

    assert not room.participants


async def test_a_listener_hears_whoever_takes_the_place_of_a_speaker_who_left(
    media_server: LiveKitServer,
) -> None:
    """A page reloads: its participant leaves and comes back with the same identity and a
    new microphone track; the agent, still in the room, must hear the new track."""
    url = media_server.ws_url
    async with RtcParticipant.start(url, token("agent"), "agent") as listener:
        await listener.wait_for("connected")
        for freq in (440, 660):
            async with RtcParticipant.start(url, token("page"), "page") as page:
                await page.wait_for("connected")
                await page.command("publish_sine", freq=freq, seconds=3)
                sid = (await page.wait_for("published"))["track_sid"]
                heard = await listener.wait_for("subscribed", _of_track(sid))
                assert heard["participant"] == "page"
                loud = await listener.wait_for("audio", _loud_on(sid))
                assert loud["participant"] == "page" and loud["frames"] > 0


async def test_a_participant_removed_through_the_api_leaves_for_good(
    media_server: LiveKitServer,
) -> None:
    """RemoveParticipant tells the participant to leave for good (LeaveRequest DISCONNECT, no
    reconnect), as LiveKit does: the rtc SDK disconnects, where a bare closed socket would look
    like a network drop it rejoins from, with the same identity (an agent back from the dead)."""
    async with RtcParticipant.start(media_server.ws_url, token("agent"), "agent") as agent:
        await agent.wait_for("connected")
        async with api.LiveKitAPI(media_server.url, API_KEY, API_SECRET, failover=False) as lk:
            await lk.room.remove_participant(
                api.RoomParticipantIdentity(room="room-1", identity="agent")
            )
        gone = await agent.wait_for("disconnected")
        assert gone["reason"] in ("PARTICIPANT_REMOVED", str(DisconnectReason.PARTICIPANT_REMOVED))
        assert not [e for e in agent.events if e["event"] in ("reconnecting", "reconnected")]
