"""Chatterbox TTS plugin for LiveKit Agents.

Streams PCM16 mono 24 kHz from the OpenAI-compatible `POST /v1/audio/speech` of the
Chatterbox TTS API (https://api.chatterboxtts.com/v1 or a self-hosted server).
"""

from livekit.agents import Plugin

from .log import logger
from .models import TTSModels, TTSVoices
from .tts import TTS, ChunkedStream
from .version import __version__

__all__ = ["TTS", "ChunkedStream", "TTSModels", "TTSVoices", "__version__"]


class ChatterboxPlugin(Plugin):
    def __init__(self) -> None:
        super().__init__(__name__, __version__, __package__, logger)


Plugin.register_plugin(ChatterboxPlugin())
