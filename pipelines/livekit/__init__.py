"""The LiveKit Agents pipeline: Silero VAD → Deepgram → Groq → Chatterbox, with the shared tools,
state messages and per-turn latency."""
