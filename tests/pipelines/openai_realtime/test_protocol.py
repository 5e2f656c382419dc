"""The protocol core without sockets: frames in, actions out."""

from __future__ import annotations

import json
from typing import Any

from pipelines.contracts import ToolResult, parse_state_message
from pipelines.openai_realtime import (
    FORWARD,
    Action,
    Close,
    Forward,
    RealtimeOptions,
    RelayLimits,
    RelayProtocol,
    StartTool,
    ToClient,
    ToUpstream,
)
from pipelines.openai_realtime.protocol import event_type_of


def ev(type_: str, **fields: Any) -> str:
    return json.dumps({"type": type_, "event_id": "e", **fields})


def client_messages(actions: Any) -> list[dict[str, Any]]:
    return [json.loads(a.text) for a in actions if isinstance(a, ToClient)]


def upstream(actions: Any) -> list[dict[str, Any]]:
    return [json.loads(a.text) for a in actions if isinstance(a, ToUpstream)]


def response(status: str = "completed", output: list[dict[str, Any]] | None = None) -> str:
    return ev("response.done", response={"id": "r1", "status": status, "output": output or []})


def test_start_says_initializing_then_configures_upstream() -> None:
    actions = RelayProtocol(RealtimeOptions()).start()
    assert client_messages(actions) == [{"type": "agent.state", "state": "initializing"}]
    assert upstream(actions)[0]["type"] == "session.update"


def test_audio_append_is_forwarded_verbatim() -> None:
    core = RelayProtocol(RealtimeOptions())
    frame = '{"type":"input_audio_buffer.append","audio":"AAAA","event_id":"x"}'
    assert core.client_frame(frame, 0.0) is FORWARD
    spaced = '{"type": "input_audio_buffer.append", "audio": "AAAA"}'  # the Python SDK's spacing
    assert core.client_frame(spaced, 0.0) is FORWARD
    # An append that only looks like one on the fast path still gets the full gate's verdict.
    (refused,) = core.client_frame('{"type":"input_audio_buffer.append","audio":7}', 0.0)
    assert isinstance(refused, ToClient)
    message = parse_state_message(refused.text)
    assert message.type == "voice.error" and message.code == "invalid_event"


def test_other_allowed_events_go_as_is_unless_rewritten() -> None:
    core = RelayProtocol(RealtimeOptions())
    assert core.client_frame('{"type":"response.cancel"}', 0.0) is FORWARD
    frame = '{"type":"response.create","response":{"instructions":"be rude"}}'
    forwarded, warning = core.client_frame(frame, 0.0)
    assert isinstance(forwarded, ToUpstream)
    assert json.loads(forwarded.text) == {"type": "response.create", "response": {}}
    assert isinstance(warning, ToClient)


def test_only_audio_deltas_after_a_responses_first_pass_through_untouched() -> None:
    core = RelayProtocol(RealtimeOptions())
    # As OpenAI sends it: compact, with `type` first.
    first = (
        '{"type":"response.output_audio.delta","event_id":"e","response_id":"r1",'
        '"item_id":"a","output_index":0,"content_index":0,"delta":"AAAA"}'
    )
    assert not core.is_passthrough(first.encode())  # the first one sets "speaking"
    assert client_messages(core.upstream_event(first, 0.0)) == [
        {"type": "agent.state", "state": "speaking"}
    ]
    assert core.is_passthrough(first.encode())
    assert not core.is_passthrough(b'{"type":"response.done","response":{}}')
    core.upstream_event(ev("response.created", response={"id": "r2"}), 0.1)
    assert not core.is_passthrough(first.encode())  # a new response's first delta counts again


def test_beta_and_unknown_client_events_are_refused() -> None:
    core = RelayProtocol(RealtimeOptions())
    for frame in ('{"type":"response.audio.delta"}', '{"type":"transcription_session.update"}'):
        (action,) = core.client_frame(frame, 0.0)
        assert isinstance(action, ToClient)
        message = parse_state_message(action.text)
        assert message.type == "voice.error" and message.code == "event_not_allowed"


def test_frame_and_rate_bounds_close() -> None:
    core = RelayProtocol(RealtimeOptions(), limits=RelayLimits(1024, 10))
    (big,) = core.client_frame('{"type":"x","pad":"' + "é" * 600 + '"}', 0.0)
    assert isinstance(big, Close) and big.code == 1009
    frame = '{"type":"input_audio_buffer.clear"}'
    results = [core.client_frame(frame, 0.0)[0] for _ in range(11)]
    assert all(isinstance(r, Forward) for r in results[:9])
    assert isinstance(results[-1], Close) and results[-1].code == 1008
    assert isinstance(core.client_frame(frame, 1.0)[0], Forward)  # refilled a second later


def test_event_type_fast_path() -> None:
    assert event_type_of('{"type":"response.output_audio.delta","delta":"x"}') == (
        "response.output_audio.delta"
    )
    assert event_type_of('{"event_id":"e","type":"response.done"}') is None


def test_states_transcripts_and_metrics_over_a_turn() -> None:
    core = RelayProtocol(RealtimeOptions())
    core.start()
    append = json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 1280})
    for _ in range(50):  # 50 x 20 ms = 1000 ms of audio heard
        core.client_frame(append, 0.0)
    script: list[tuple[float, str]] = [
        (0.0, ev("session.updated", session={"type": "realtime"})),
        (0.1, ev("input_audio_buffer.speech_started", audio_start_ms=100, item_id="i")),
        # Reordered keys: the core falls back to parsing for the type.
        (
            1.0,
            json.dumps(
                {
                    "audio_end_ms": 700,
                    "type": "input_audio_buffer.speech_stopped",
                    "event_id": "e",
                    "item_id": "i",
                }
            ),
        ),  # fmt: skip
        (1.05, ev("input_audio_buffer.committed", item_id="i")),
        (1.10, ev("response.created", response={"id": "r1"})),
        (
            1.20,
            ev(
                "conversation.item.input_audio_transcription.completed",
                item_id="i",
                content_index=0,
                transcript="hello",
                usage={"type": "duration", "seconds": 1},
            ),
        ),  # fmt: skip
        (
            1.30,
            ev(
                "response.output_audio.delta",
                response_id="r1",
                item_id="a",
                output_index=0,
                content_index=0,
                delta="AAAA",
            ),
        ),  # fmt: skip
        (
            1.31,
            ev(
                "response.output_audio.delta",
                response_id="r1",
                item_id="a",
                output_index=0,
                content_index=0,
                delta="AAAA",
            ),
        ),  # fmt: skip
        (
            1.50,
            ev(
                "response.output_audio_transcript.done",
                response_id="r1",
                item_id="a",
                output_index=0,
                content_index=0,
                transcript="hi",
            ),
        ),  # fmt: skip
        (1.60, response()),
    ]
    out: list[Action] = []
    for now, frame in script:
        out += core.upstream_event(frame, now)
    messages = client_messages(out)
    assert [m["state"] for m in messages if m["type"] == "agent.state"] == [
        "listening",
        "thinking",
        "speaking",
        "listening",
    ]
    assert {"type": "transcript.user", "text": "hello", "final": True} in messages
    assert {"type": "transcript.assistant", "text": "hi", "final": True} in messages
    (metrics,) = [m for m in messages if m["type"] == "metrics.turn"]
    assert metrics["eou_ms"] == 300.0  # 1000 ms heard, speech ended at 700 ms
    assert metrics["stt_ms"] == 200.0
    assert metrics["llm_ttft_ms"] == 200.0
    assert metrics["voice_to_voice_ms"] == 600.0  # 300 ms to detect + 300 ms to first audio
    assert core.malformed_upstream == 0


def arguments_done(call_id: str, name: str, arguments: dict[str, Any]) -> str:
    return ev(
        "response.function_call_arguments.done",
        call_id=call_id,
        name=name,
        arguments=json.dumps(arguments),
        item_id="f",
        output_index=0,
        response_id="r1",
    )


def test_tool_loop_waits_for_all_outputs_then_responds_once() -> None:
    core = RelayProtocol(RealtimeOptions())
    core.upstream_event(ev("response.created", response={"id": "r1"}), 0.0)
    first = core.upstream_event(arguments_done("c1", "query_database", {"query": "a"}), 0.1)
    second = core.upstream_event(arguments_done("c2", "query_database", {"query": "b"}), 0.1)
    starts = [a for a in (*first, *second) if isinstance(a, StartTool)]
    assert [s.call_id for s in starts] == ["c1", "c2"]
    assert starts[0].arguments == {"query": "a"}
    assert core.upstream_event(response(), 0.2) != ()
    result = ToolResult(call_id="c1", name="query_database", status="ok", output="1", duration_ms=5)
    after_one = core.tool_finished(result, 0.3)
    assert [u["type"] for u in upstream(after_one)] == ["conversation.item.create"]
    after_two = core.tool_finished(result.model_copy(update={"call_id": "c2"}), 0.4)
    assert [u["type"] for u in upstream(after_two)] == [
        "conversation.item.create",
        "response.create",
    ]
    finished = [m for m in client_messages(after_two) if m["type"] == "tool.finished"]
    assert finished[0]["call_id"] == "c2" and finished[0]["status"] == "ok"


def test_tool_output_waits_while_the_user_speaks() -> None:
    core = RelayProtocol(RealtimeOptions())
    core.upstream_event(arguments_done("c1", "query_database", {"query": "a"}), 0.0)
    core.upstream_event(response(), 0.1)
    core.upstream_event(ev("input_audio_buffer.speech_started", audio_start_ms=0, item_id="i"), 0.2)
    result = ToolResult(call_id="c1", name="query_database", status="ok", output="1", duration_ms=5)
    assert [u["type"] for u in upstream(core.tool_finished(result, 0.3))] == [
        "conversation.item.create"
    ]
    # The server's own response after the user's turn sees the output: no extra response.create.
    core.upstream_event(ev("input_audio_buffer.speech_stopped", audio_end_ms=0, item_id="i"), 0.4)
    core.upstream_event(ev("response.created", response={"id": "r2"}), 0.5)
    assert upstream(core.upstream_event(response(), 0.6)) == []


def test_unknown_tool_and_bad_arguments_answer_without_running() -> None:
    core = RelayProtocol(RealtimeOptions())
    for frame in (
        arguments_done("c1", "launch_rockets", {}),
        arguments_done("c2", "send_email", {"to": "x"}),
    ):
        actions = core.upstream_event(frame, 0.0)
        assert not any(isinstance(a, StartTool) for a in actions)
        (output,) = upstream(actions)
        assert output["item"]["type"] == "function_call_output"
    assert core.pending_tools == 0
    assert [u["type"] for u in upstream(core.upstream_event(response(), 0.1))] == [
        "response.create"
    ]


def test_call_cut_off_before_its_arguments_gets_an_output() -> None:
    core = RelayProtocol(RealtimeOptions())
    item = {"type": "function_call", "call_id": "c9", "name": "send_email", "arguments": "{"}
    actions = core.upstream_event(response("cancelled", [item]), 0.0)
    (output,) = upstream(actions)
    assert output["item"]["call_id"] == "c9" and "interrupted" in output["item"]["output"]


def test_malformed_upstream_events_are_forwarded_untranslated() -> None:
    core = RelayProtocol(RealtimeOptions())
    assert core.upstream_event("not json", 0.0) == ()
    assert core.upstream_event('{"type":"response.done","response":7}', 0.0) == ()
    assert core.upstream_event('{"type":"rate_limits.updated","rate_limits":[]}', 0.0) == ()
    assert core.malformed_upstream == 2


def test_binary_frames_are_refused_and_oversize_ones_close() -> None:
    core = RelayProtocol(RealtimeOptions(), limits=RelayLimits(1024, 10))
    (refused,) = core.binary_frame(10, 0.0)
    assert isinstance(refused, ToClient) and "binary_not_allowed" in refused.text
    (closed,) = core.binary_frame(2048, 0.0)
    assert isinstance(closed, Close) and closed.code == 1009


def test_every_frame_type_counts_against_the_rate() -> None:
    core = RelayProtocol(RealtimeOptions(), limits=RelayLimits(1024, 10))
    for _ in range(3):
        assert core.control_frame(0.0) == ()  # pings and pongs
        assert isinstance(core.binary_frame(0, 0.0)[0], ToClient)
    assert isinstance(core.client_frame('{"type":"input_audio_buffer.clear"}', 0.0)[0], Forward)
    results = [core.control_frame(0.0) for _ in range(4)]  # the 8th to the 11th frame
    assert results[:3] == [(), (), ()]
    (closed,) = results[3]
    assert isinstance(closed, Close) and closed.code == 1008
    (closed,) = core.binary_frame(0, 0.0)
    assert isinstance(closed, Close) and closed.code == 1008
