"""Speech synthesis for the stand-ins and the lab: espeak-ng, resampled by sox.

The OpenAI Realtime simulator voices its replies with it; the lab lays utterances out on a
timeline with it (`voicegw.lab.audio.conversation`). Needs `espeak-ng` and `sox`.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 16_000
SPEECH_LEVEL = 0.02  # |amplitude| (full scale 1.0) above which a sample counts as speech


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None and shutil.which("sox") is not None


def speak(
    text: str, *, sample_rate: int = SAMPLE_RATE, words_per_minute: int = 170
) -> npt.NDArray[np.int16]:
    """`text` spoken by espeak-ng as mono PCM16, resampled by sox, leading and trailing
    silence trimmed."""
    espeak = subprocess.run(
        ["espeak-ng", "--stdout", "-s", str(words_per_minute), text],
        check=True,
        capture_output=True,
    )
    sox = subprocess.run(
        [
            "sox",
            "-t",
            "wav",
            "-",
            "-t",
            "raw",
            "-e",
            "signed",
            "-b",
            "16",
            "-c",
            "1",
            "-r",
            str(sample_rate),
            "-",
        ],
        input=espeak.stdout,
        check=True,
        capture_output=True,
    )
    samples = np.frombuffer(sox.stdout, dtype=np.int16)
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > SPEECH_LEVEL * 32767)
    if len(loud) == 0:
        raise ValueError("espeak-ng produced no audible speech")
    return samples[loud[0] : loud[-1] + 1].copy()
