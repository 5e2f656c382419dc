"""Speakable chunks: the first at a clause of three words or more, the rest at sentence ends,
never a chunk under three words but a whole short reply, the same whether the text comes at
once or token by token."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.livekit.chunking import SpeakableChunker
from simulators.groq import tokens

CASES = [
    # the first chunk ends at the first clause that closes three words
    (
        "(simulated) You said: What is on my calendar today?",
        ["(simulated) You said:", " What is on my calendar today?"],
    ),
    (
        "I checked your calendar, and you have three meetings. The first is at nine.",
        ["I checked your calendar,", " and you have three meetings.", " The first is at nine."],
    ),
    # a clause under three words is not cut; the next boundary is
    (
        "Sure, I can send that email now. It goes to Bob.",
        ["Sure, I can send that email now.", " It goes to Bob."],
    ),
    # a tail under three words is spoken with the chunk before it
    ("Sure, I can do that. Thanks!", ["Sure, I can do that. Thanks!"]),
    ("One moment, please.", ["One moment, please."]),
    # a whole reply under three words is one chunk
    ("Done.", ["Done."]),
    # "Dr." ends no sentence
    (
        "I will send it to Dr. Smith right away. Anything else today?",
        ["I will send it to Dr. Smith right away.", " Anything else today?"],
    ),
    # a dash is a clause boundary
    (
        "I looked it up — the policy allows two trips a year.",
        ["I looked it up —", " the policy allows two trips a year."],
    ),
]


@pytest.mark.parametrize(("text", "chunks"), CASES)
def test_chunks_of_a_whole_reply(text: str, chunks: list[str]) -> None:
    assert SpeakableChunker().tokenize(text) == chunks
    assert "".join(chunks) == text


@pytest.mark.parametrize(("text", "chunks"), CASES)
async def test_streamed_token_by_token_gives_the_same_chunks(text: str, chunks: list[str]) -> None:
    sent: list[str] = []
    stream = SpeakableChunker(on_chunk=sent.append).stream()
    for piece in tokens(text):
        stream.push_text(piece)
    stream.end_input()
    got = [data.token async for data in stream]
    assert got == chunks
    assert sent == chunks  # everything handed to the TTS is reported


async def test_the_first_chunk_goes_out_as_soon_as_three_more_words_follow_it() -> None:
    sent: list[str] = []
    stream = SpeakableChunker(on_chunk=sent.append).stream()
    stream.push_text("(simulated) You said: What")
    stream.push_text(" is")
    assert sent == []  # two words after the clause: it could still be the end of the reply
    stream.push_text(" on")
    assert sent == ["(simulated) You said:"]
    first = await anext(stream)
    assert first.token == "(simulated) You said:"
    stream.push_text(" my calendar today?")
    stream.end_input()
    assert [data.token async for data in stream] == [" What is on my calendar today?"]


async def test_flush_speaks_what_is_buffered_and_starts_a_new_segment() -> None:
    stream = SpeakableChunker().stream()
    stream.push_text("One moment")
    stream.flush()
    stream.push_text("Here it is, the travel policy.")
    stream.end_input()
    got = [data async for data in stream]
    # the new segment starts with a clause again
    assert [d.token for d in got] == ["One moment", "Here it is,", " the travel policy."]
    assert got[0].segment_id != got[1].segment_id == got[2].segment_id


def test_sentences_mode_cuts_every_sentence_and_no_clause() -> None:
    chunker = SpeakableChunker(clauses=False)
    text = "(simulated) You said: What is on my calendar today? Thanks! Bye."
    assert chunker.tokenize(text) == [
        "(simulated) You said: What is on my calendar today?",
        " Thanks!",
        " Bye.",
    ]


_WORD = st.sampled_from(["I", "you", "the", "budget", "Dr.", "e.g.", "3.5", "meeting", "—", "ok"])
_MARK = st.sampled_from(["", "", "", ",", ".", "?", "!", ";", ":"])
_REPLY = st.lists(st.tuples(_WORD, _MARK), min_size=1, max_size=40).map(
    lambda pairs: " ".join(word + mark for word, mark in pairs)
)


@settings(max_examples=200, deadline=None)
@given(_REPLY)
def test_no_chunk_under_three_words_but_a_whole_reply(text: str) -> None:
    chunks = SpeakableChunker().tokenize(text)
    assert "".join(chunks) == text  # nothing lost, nothing added
    if len(chunks) > 1:
        assert all(len(chunk.split()) >= 3 for chunk in chunks), chunks
