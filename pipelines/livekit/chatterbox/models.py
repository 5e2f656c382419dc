from typing import Literal

TTSModels = Literal["turbo", "chatterbox", "chatterbox-turbo"]
TTSVoices = Literal["professional", "default", "narrator"]
TTSEncoding = Literal["pcm"]
