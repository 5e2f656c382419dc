"""Tests of pipelines/livekit/: the LiveKit Agents pipeline and its Chatterbox plugin."""
