"""The tool catalogue: each tool defined once, rendered per target, arguments validated."""

from __future__ import annotations

import pytest
from openai.types.chat import ChatCompletionToolParam
from openai.types.realtime import RealtimeFunctionTool
from pydantic import TypeAdapter

from pipelines.contracts import (
    CATALOGUE,
    TOOLS_BY_NAME,
    ToolArgumentError,
    chat_completions_tools,
    realtime_tools,
)


def test_catalogue_holds_the_seed_tools() -> None:
    assert [tool.name for tool in CATALOGUE] == ["send_email", "query_database"]
    assert TOOLS_BY_NAME["send_email"].webhook_path == "execute-gmail"
    assert TOOLS_BY_NAME["send_email"].parameters()["required"] == ["to", "subject", "body"]


def test_chat_completions_shape_validates_as_the_sdk_type() -> None:
    adapter = TypeAdapter(ChatCompletionToolParam)
    for rendered in chat_completions_tools():
        adapter.validate_python(rendered)
        assert rendered["function"]["parameters"]["additionalProperties"] is False
        assert "title" not in rendered["function"]["parameters"]


def test_realtime_shape_validates_as_the_ga_sdk_type() -> None:
    for rendered in realtime_tools():
        tool = RealtimeFunctionTool.model_validate(rendered)
        assert tool.type == "function"
        assert tool.name in TOOLS_BY_NAME


def test_both_targets_see_the_same_parameters() -> None:
    for chat, realtime in zip(chat_completions_tools(), realtime_tools(), strict=True):
        assert chat["function"]["parameters"] == realtime["parameters"]
        assert chat["function"]["description"] == realtime["description"]


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ("{", "not valid JSON"),
        ("[1]", "must be a JSON object"),
        ('{"to": "a@b.c", "subject": "s"}', "body field required"),
        ('{"to": "a@b.c", "subject": "s", "body": "b", "cc": "x"}', "cc extra inputs"),
    ],
)
def test_argument_errors_are_speakable(raw: str, needle: str) -> None:
    with pytest.raises(ToolArgumentError) as caught:
        TOOLS_BY_NAME["send_email"].validate_arguments(raw)
    assert needle in str(caught.value)
    assert str(caught.value).startswith("the arguments for send_email")


def test_every_tool_has_phrases_for_the_page_not_its_name() -> None:
    for tool in CATALOGUE:
        phrases = (tool.activity.doing, tool.activity.done, tool.activity.failed)
        assert all(phrase.strip() for phrase in phrases), tool.name
        assert not any(tool.name in phrase for phrase in phrases), tool.name
        assert not tool.activity.doing.endswith(("…", ".")), "the page adds the ellipsis"
