"""The lab's audio: recordings on a timeline, measured from the samples themselves.

What `voicegw talk` and `voicegw compare` (and the tests and the benchmark through them) need
to measure voice-to-voice the same way in both modes: WAV files in and out, where each
utterance truly starts and ends, the first audible sample, resampling, and the virtual
loudspeaker (`Speaker`) both modes play the agent on. `conversation()` lays espeak-ng
utterances (`simulators.speech`) out on one timeline and measures their true ends.
"""

from __future__ import annotations

import os
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from simulators.speech import SAMPLE_RATE, SPEECH_LEVEL, speak

_ANALYSIS_MS = 10

Samples = npt.NDArray[np.int16]


@dataclass(frozen=True)
class Utterance:
    """One utterance on a timeline: what was said and where speech truly starts and ends."""

    text: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Conversation:
    """Mono PCM16 at `sample_rate` holding `utterances` in order."""

    samples: Samples
    sample_rate: int
    utterances: tuple[Utterance, ...]

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate

    def write_wav(self, path: Path) -> None:
        write_wav(path, self.samples, self.sample_rate)


def silence(seconds: float, sample_rate: int = SAMPLE_RATE) -> Samples:
    return np.zeros(round(seconds * sample_rate), dtype=np.int16)


def conversation(
    texts: list[str | tuple[str, float, str]],
    *,
    lead_s: float = 0.5,
    gap_s: float = 3.0,
    tail_s: float = 3.0,
    sample_rate: int = SAMPLE_RATE,
) -> Conversation:
    """Utterances separated by `gap_s` of silence. An item `(first, pause_s, second)` is one
    utterance with a pause of `pause_s` seconds in the middle of the sentence."""
    parts: list[Samples] = [silence(lead_s, sample_rate)]
    utterances: list[Utterance] = []
    position = len(parts[0])
    for item in texts:
        if isinstance(item, str):
            pieces, text = [speak(item, sample_rate=sample_rate)], item
        else:
            first, pause_s, second = item
            pieces = [
                speak(first, sample_rate=sample_rate),
                silence(pause_s, sample_rate),
                speak(second, sample_rate=sample_rate),
            ]
            text = f"{first} {second}"
        speech = np.concatenate(pieces)
        utterances.append(
            Utterance(text, position / sample_rate, (position + len(speech)) / sample_rate)
        )
        parts += [speech, silence(gap_s, sample_rate)]
        position += len(speech) + len(parts[-1])
    parts.append(silence(max(0.0, tail_s - gap_s), sample_rate))
    return Conversation(np.concatenate(parts), sample_rate, tuple(utterances))


def find_utterances(
    samples: Samples, sample_rate: int, *, min_gap_s: float = 0.8
) -> tuple[Utterance, ...]:
    """Speech segments of a recording by level, gaps shorter than `min_gap_s` kept inside one
    utterance (texts unknown, left empty). Used for a user's own WAV file."""
    window = sample_rate * _ANALYSIS_MS // 1000
    count = len(samples) // window
    if count == 0:
        return ()
    peaks = np.abs(samples[: count * window].astype(np.int32)).reshape(count, window).max(axis=1)
    loud = np.flatnonzero(peaks > SPEECH_LEVEL * 32767)
    segments: list[tuple[int, int]] = []
    for index in loud:
        if segments and (index - segments[-1][1]) * _ANALYSIS_MS / 1000 < min_gap_s:
            segments[-1] = (segments[-1][0], int(index))
        else:
            segments.append((int(index), int(index)))
    utterances = []
    for first, last in segments:
        block = samples[last * window : (last + 1) * window].astype(np.int32)
        tail = np.flatnonzero(np.abs(block) > SPEECH_LEVEL * 32767)
        end = last * window + (int(tail[-1]) + 1 if len(tail) else window)
        utterances.append(Utterance("", first * window / sample_rate, end / sample_rate))
    return tuple(utterances)


def first_sound_s(samples: Samples, sample_rate: int) -> float | None:
    """Offset of the first non-silent sample, or None if all of it is silent."""
    loud = np.flatnonzero(samples != 0)
    return None if len(loud) == 0 else int(loud[0]) / sample_rate


class AudioFileError(ValueError):
    """A file the lab cannot use: the message names it and the problem, in one line."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")


# Other rates are resampled to LAB_RATE: at these, a 20 ms frame is a whole number of samples.
LAB_RATE = 24_000


def read_wav(path: Path) -> tuple[Samples, int]:
    """Mono PCM16 samples and rate of a WAV file, whatever it holds: 8/16/24/32-bit integer,
    float, A-law or mu-law, any channels (mixed down), any rate (kept when a 20 ms frame is a
    whole number of samples at it, else resampled to LAB_RATE). FFmpeg decodes it, through
    PyAV (which LiveKit Agents uses too). AudioFileError names what is wrong with it."""
    import av

    try:
        container = av.open(str(path), format="wav")
    except av.error.InvalidDataError:
        raise AudioFileError(path, "not a WAV file (no RIFF/WAVE audio in it)") from None
    except (av.error.FFmpegError, OSError) as exc:
        raise AudioFileError(path, f"cannot be read ({_why(exc)})") from None
    with container:
        if not container.streams.audio:
            raise AudioFileError(path, "holds no audio")
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        if not rate:
            raise AudioFileError(path, "says no sample rate")
        target = rate if 8_000 <= rate <= 48_000 and rate % 50 == 0 else LAB_RATE
        mono = av.AudioResampler(format="s16", layout="mono", rate=target)
        chunks: list[npt.NDArray[np.generic]] = []
        try:
            for frame in container.decode(stream):
                chunks += [out.to_ndarray().reshape(-1) for out in mono.resample(frame)]
            chunks += [out.to_ndarray().reshape(-1) for out in mono.resample(None)]
        except (av.error.FFmpegError, ValueError) as exc:
            raise AudioFileError(path, f"cannot be decoded ({_why(exc)})") from None
    samples: Samples = np.concatenate(chunks).astype(np.int16) if chunks else silence(0)
    if len(samples) == 0:
        raise AudioFileError(path, "holds no audio (0 samples)")
    return samples, target


def read_speech(path: Path) -> tuple[Samples, int, tuple[Utterance, ...]]:
    """`read_wav`, and the utterances in it; a file without speech is an AudioFileError (a
    conversation with nobody speaking would end with no turn, and say nothing)."""
    samples, rate = read_wav(path)
    utterances = find_utterances(samples, rate)
    if not utterances:
        level = f"{SPEECH_LEVEL:.0%}"
        raise AudioFileError(path, f"no speech found (nothing louder than {level} of full scale)")
    return samples, rate, utterances


def check_output(path: Path) -> None:
    """That a WAV file can be written at `path`, checked before any work is done."""
    folder = path.parent
    if path.is_dir():
        raise AudioFileError(path, "is a folder; --output takes a file name")
    if not folder.is_dir():
        raise AudioFileError(path, f"cannot be written: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise AudioFileError(path, "cannot be written: permission denied")


def _why(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text).strip().rstrip(".").lower()


def write_wav(path: Path, samples: Samples, sample_rate: int) -> None:
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(sample_rate)
        writer.writeframes(samples.astype(np.int16).tobytes())


def resample(samples: Samples, sample_rate: int, to_rate: int) -> Samples:
    """`samples` at `to_rate` (linear interpolation: enough for speech into a model)."""
    if sample_rate == to_rate:
        return samples
    count = round(len(samples) * to_rate / sample_rate)
    positions = np.arange(count) * (sample_rate / to_rate)
    resampled = np.interp(positions, np.arange(len(samples)), samples.astype(np.float64))
    out: Samples = np.round(resampled).astype(np.int16)
    return out


class Speaker:
    """A virtual loudspeaker, the one both modes' voice-to-voice is measured to: a segment's
    chunks play back to back from its first chunk (or when they arrive, if the producer falls
    behind), and the time of each segment's first audible sample is kept in `sounds`."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.sounds: list[float] = []  # perf_counter() of each segment's first audible sample
        self._chunks: list[tuple[float, Samples]] = []
        self._start: float | None = None
        self._pushed_s = 0.0
        self._heard = False

    def play(self, samples: Samples, now: float) -> bool:
        """Queue `samples`, which arrived at `now`; True when they begin a new segment."""
        started = self._start is None
        if self._start is None:
            self._start, self._pushed_s, self._heard = now, 0.0, False
        play_at = max(now, self._start + self._pushed_s)
        if not self._heard:
            loud = np.flatnonzero(samples != 0)
            if len(loud):
                self._heard = True
                self.sounds.append(play_at + int(loud[0]) / self.sample_rate)
        self._chunks.append((play_at, samples))
        self._pushed_s = play_at - self._start + len(samples) / self.sample_rate
        return started

    def end_segment(self) -> tuple[float, float] | None:
        """Close the segment: (its start, seconds queued), or None if none was open."""
        if self._start is None:
            return None
        segment, self._start = (self._start, self._pushed_s), None
        return segment

    def render(self, origin: float, duration_s: float) -> Samples:
        """Everything played, placed on a timeline starting at `origin` (perf_counter)."""
        out = np.zeros(int(duration_s * self.sample_rate) + 1, dtype=np.int16)
        for at, samples in self._chunks:
            offset = int((at - origin) * self.sample_rate)
            if offset < 0 or offset >= len(out):
                continue
            end = min(len(out), offset + len(samples))
            out[offset:end] = samples[: end - offset]
        return out
