"""State messages to the page: the data-channel publisher (reliable JSON on `voice.state`).
The messages a whole turn sends are checked end to end in test_pipeline.py."""

from __future__ import annotations

from typing import Any

from pipelines.contracts import STATE_TOPIC, AgentState
from pipelines.livekit.state import DataChannelPublisher


class _Participant:
    def __init__(self, fail: bool) -> None:
        self.sent: list[tuple[Any, dict[str, Any]]] = []
        self.fail = fail

    async def publish_data(self, payload: Any, **kwargs: Any) -> None:
        if self.fail:
            raise ConnectionError("room closed")
        self.sent.append((payload, kwargs))


class _Room:
    def __init__(self, fail: bool = False) -> None:
        self.local_participant = _Participant(fail)


async def test_data_channel_publisher_sends_reliable_json_on_the_state_topic() -> None:
    room = _Room()
    publisher = DataChannelPublisher(room, session_id="s-1")  # type: ignore[arg-type]
    await publisher.publish(AgentState(state="thinking"))
    assert room.local_participant.sent == [
        ('{"type":"agent.state","state":"thinking"}', {"reliable": True, "topic": STATE_TOPIC})
    ]


async def test_data_channel_publisher_survives_a_closed_room() -> None:
    room = _Room(fail=True)
    publisher = DataChannelPublisher(room, session_id="s-1")  # type: ignore[arg-type]
    await publisher.publish(AgentState(state="idle"))  # logged, not raised
