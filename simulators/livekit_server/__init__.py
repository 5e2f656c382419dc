"""A LiveKit server stand-in that the real, unmodified clients talk to: livekit-client in
Chromium, the Python `livekit` rtc SDK, livekit-agents workers and livekit-api.

Signal (`/rtc/v1`, `/rtc`), WebRTC media through aiortc, rooms, data routing, agent dispatch
(`/agent`) and the Twirp server API, as `LiveKitServer`. Run it alone with
`python -m simulators.livekit_server`.
"""

from .server import DEFAULT_KEYS, LiveKitServer

__all__ = ["DEFAULT_KEYS", "LiveKitServer"]
