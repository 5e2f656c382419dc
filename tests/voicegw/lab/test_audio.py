"""The lab's WAV input: every format that can be converted is (sample width, float, companded,
channels, rate), and a file that cannot be used is named with its problem in one line, before
any work starts (`voicegw talk` and `compare` exit 2)."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from voicegw.cli import main
from voicegw.lab import audio

# sox options that turn the 16 kHz mono 16-bit question into each format, and the rate the
# lab reads it at (kept when a 20 ms frame is a whole number of samples, else 24 kHz).
FORMATS = {
    "unsigned 8-bit": (["-b", "8", "-e", "unsigned-integer"], 16_000),
    "24-bit": (["-b", "24"], 16_000),
    "32-bit": (["-b", "32"], 16_000),
    "32-bit float": (["-b", "32", "-e", "floating-point"], 16_000),
    "64-bit float": (["-b", "64", "-e", "floating-point"], 16_000),
    "mu-law": (["-e", "mu-law"], 16_000),
    "stereo 44.1 kHz": (["-c", "2", "-r", "44100"], 44_100),
    "11.025 kHz": (["-r", "11025"], 24_000),
}


def convert(source: Path, target: Path, options: list[str]) -> Path:
    subprocess.run(["sox", str(source), *options, str(target)], check=True, timeout=30)
    return target


@pytest.fixture
def spoken(tmp_path: Path, question: audio.Conversation) -> Path:
    path = tmp_path / "question.wav"
    question.write_wav(path)
    return path


def test_pcm16_is_read_as_written(spoken: Path, question: audio.Conversation) -> None:
    samples, rate = audio.read_wav(spoken)
    assert rate == question.sample_rate
    assert np.array_equal(samples, question.samples)


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_convertible_format_is_converted(
    name: str, tmp_path: Path, spoken: Path, question: audio.Conversation
) -> None:
    options, expected_rate = FORMATS[name]
    samples, rate = audio.read_wav(convert(spoken, tmp_path / "converted.wav", options))
    assert samples.dtype == np.int16 and samples.ndim == 1
    assert rate == expected_rate
    assert abs(len(samples) / rate - question.duration_s) < 0.01
    # The same speech: where it is, and how loud.
    [utterance] = audio.find_utterances(samples, rate)
    [original] = question.utterances
    assert abs(utterance.start_s - original.start_s) < 0.02
    assert abs(utterance.end_s - original.end_s) < 0.02
    peak = np.abs(question.samples.astype(np.int32)).max()
    assert abs(int(np.abs(samples.astype(np.int32)).max()) - peak) < 0.05 * peak


def test_a_file_that_cannot_be_used_is_named_with_its_problem(tmp_path: Path) -> None:
    text = tmp_path / "notes.wav"
    text.write_text("this is a text file, renamed\n")
    empty = tmp_path / "empty.wav"
    with wave.open(str(empty), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(16_000)
    quiet = tmp_path / "quiet.wav"
    audio.write_wav(quiet, audio.silence(2.0), 16_000)
    cases = {
        text: "not a WAV file (no RIFF/WAVE audio in it)",
        empty: "holds no audio (0 samples)",
        quiet: "no speech found (nothing louder than 2% of full scale)",
    }
    for path, problem in cases.items():
        with pytest.raises(audio.AudioFileError) as caught:
            audio.read_speech(path)
        assert str(caught.value) == f"{path}: {problem}"


def test_talk_refuses_bad_files_before_any_work(tmp_path: Path, spoken: Path) -> None:
    text = tmp_path / "notes.wav"
    text.write_text("this is a text file, renamed\n")
    missing_folder = tmp_path / "no-such-folder" / "reply.wav"
    runs = {
        (str(text),): f"voicegw: {text}: not a WAV file (no RIFF/WAVE audio in it)",
        (str(spoken), "--output", str(missing_folder)): (
            f"voicegw: {missing_folder}: cannot be written: the folder "
            f"{missing_folder.parent} does not exist"
        ),
    }
    for (source, *output), line in runs.items():
        result = CliRunner().invoke(
            main, ["talk", "--simulate", "--json", "--input", source, *output]
        )
        assert result.exit_code == 2
        assert result.stdout == ""
        assert result.stderr.splitlines() == [line]  # one line: nothing ran, nothing logged


def test_compare_names_the_one_bad_file_in_a_folder(tmp_path: Path, spoken: Path) -> None:
    folder = tmp_path / "recordings"
    folder.mkdir()
    convert(spoken, folder / "a-good.wav", ["-b", "24"])
    (folder / "b-bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    result = CliRunner().invoke(main, ["compare", "--simulate", "--input", str(folder)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"voicegw: {folder / 'b-bad.wav'}: not a WAV file (no RIFF/WAVE audio in it)"
    ]
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    result = CliRunner().invoke(main, ["compare", "--simulate", "--input", str(empty)])
    assert (result.exit_code, result.stderr.splitlines()) == (
        2,
        [f"voicegw: {empty}: no .wav files in this folder"],
    )
