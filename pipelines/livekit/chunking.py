"""Speakable chunks: what the TTS is given, so the first audio does not wait for a whole
sentence.

A sentence tokenizer (LiveKit's default) hands the TTS nothing until the LLM has written the
whole first sentence and the start of the next. `SpeakableChunker` cuts the first chunk at the
first clause or sentence boundary (`,` `;` `:` `—` or `.` `!` `?`, then a space) that closes
at least `min_words` words, and the rest at sentence ends. No chunk is shorter than
`min_words` words, except a whole reply that is: a boundary is only cut once `min_words` more
words follow it (or the reply ends with them), so a short tail is spoken with the chunk before
it rather than on its own, and the joins fall where a speaker would pause anyway. The wait for
those words is a handful of tokens (~10 ms at Groq's rate).

It is a `tokenize.SentenceTokenizer`, the interface every TTS path takes: LiveKit's
`StreamAdapter` (Chatterbox, one request per chunk), the Cartesia plugin's `tokenizer=` and the
ElevenLabs plugin's `word_tokenizer=` (one input per chunk on their WebSockets). Chunks are
exact pieces of the text that join back into it; the space after a boundary starts the next
chunk, as LiveKit's own tokenizer leaves it. With `clauses=False` every sentence is a chunk
of its own and nothing waits for more words: LiveKit's default behaviour, for comparison.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from livekit.agents import tokenize
from livekit.agents.tokenize.tokenizer import TokenData
from livekit.agents.utils import shortuuid

MIN_WORDS = 3

_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*\s+")
_CLAUSE_END = re.compile(r"(?:[,;:]|\s[—–-]|—)[\"'”’)\]]*\s+")
_WORD = re.compile(r"\S+")
# "Dr. Smith" is not a sentence end.
_ABBREVIATION = re.compile(r"(?:\b(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|vs|etc|e\.g|i\.e)|\b[A-Z])\.\s+$")


def _words(text: str) -> int:
    return len(_WORD.findall(text))


class SpeakableChunker(tokenize.SentenceTokenizer):
    """Chunks for a TTS: the first at a clause, the rest at sentence ends (module docstring).
    `on_chunk` is told every chunk a stream emits, whatever it turns out to be used for (the
    usage meter counts the characters the TTS is sent)."""

    def __init__(
        self,
        *,
        clauses: bool = True,
        min_words: int = MIN_WORDS,
        on_chunk: Callable[[str], None] | None = None,
    ) -> None:
        self._rule = _Rule(clauses=clauses, min_words=min_words if clauses else 1)
        self._on_chunk = on_chunk

    def tokenize(self, text: str, *, language: str | None = None) -> list[str]:
        chunks, rest = _cut(text, self._rule, first=True, final=True)
        return [c for c in [*chunks, rest] if c.strip()]

    def stream(self, *, language: str | None = None) -> ChunkStream:
        return ChunkStream(self._rule, on_chunk=self._on_chunk)


class ChunkStream(tokenize.SentenceStream):
    """One reply's chunks as the LLM's text streams in."""

    def __init__(self, rule: _Rule, *, on_chunk: Callable[[str], None] | None) -> None:
        super().__init__()
        self._rule = rule
        self._on_chunk = on_chunk
        self._buffer = ""
        self._first = True
        self._segment_id = shortuuid()

    def push_text(self, text: str) -> None:
        self._check_not_closed()
        self._buffer += text
        self._emit(final=False)

    def flush(self) -> None:
        """Everything buffered goes out now (the end of one segment of speech)."""
        self._check_not_closed()
        self._emit(final=True)
        self._first = True
        self._segment_id = shortuuid()

    def end_input(self) -> None:
        self.flush()
        self._do_close()

    async def aclose(self) -> None:
        self._do_close()

    def _emit(self, *, final: bool) -> None:
        chunks, self._buffer = _cut(self._buffer, self._rule, first=self._first, final=final)
        if final and self._buffer.strip():
            chunks.append(self._buffer)
            self._buffer = ""
        for chunk in chunks:
            self._first = False
            if self._on_chunk is not None:
                self._on_chunk(chunk)
            self._event_ch.send_nowait(TokenData(segment_id=self._segment_id, token=chunk))


@dataclass(frozen=True)
class _Rule:
    clauses: bool
    min_words: int


def _cut(text: str, rule: _Rule, *, first: bool, final: bool) -> tuple[list[str], str]:
    """The chunks `text` can give now, and what stays buffered. A boundary is cut when the
    chunk before it has `min_words` words and so has the text after it (or, at the end of the
    reply, the text after it is empty or long enough)."""
    chunks: list[str] = []
    start = 0
    while True:
        clauses = rule.clauses and first and not chunks
        cut = _next_boundary(text, start, min_words=rule.min_words, clauses=clauses)
        if cut is None:
            break
        after = _words(text[cut:])
        if after < rule.min_words and not (final and after == 0):
            break  # wait for more words (or, at the end, speak the tail with this chunk)
        chunks.append(text[start:cut])
        start = cut
    return chunks, text[start:]


def _next_boundary(text: str, start: int, *, min_words: int, clauses: bool) -> int | None:
    """Where the first boundary past `start` that closes at least `min_words` words ends (its
    punctuation, not the space after it): a sentence end, or also a clause end when
    `clauses`."""
    patterns = (_SENTENCE_END, _CLAUSE_END) if clauses else (_SENTENCE_END,)
    best: int | None = None
    for pattern in patterns:
        for match in pattern.finditer(text, start):
            end = len(text[: match.end()].rstrip())
            if end <= start:
                continue
            if pattern is _SENTENCE_END and _ABBREVIATION.search(text[start : match.end()]):
                continue
            if _words(text[start:end]) >= min_words:
                best = end if best is None else min(best, end)
                break
    return best
