"""A LiveKit server stand-in that the real, unmodified clients talk to: livekit-client in
Chromium, the Python `livekit` rtc SDK, livekit-agents workers and livekit-api.

Signal (`/rtc/v1`, `/rtc`), WebRTC media through aiortc, rooms, data routing, agent dispatch
(`/agent`) and the Twirp server API, as `LiveKitServer`. Run it alone with
`python -m simulators.livekit_server`; `voicegw serve --simulate` serves it in its process.

What it leaves out, and why that cannot hide a bug in our code. Our code meets LiveKit in three
places, all exercised here with the real client libraries: the gateway's tokens and its server
API calls (ListRooms, ListParticipants, ListDispatch, CreateDispatch, answered from real room
state, with LiveKit Cloud's or the open-source server's job states), the page's use of
livekit-client (connect, microphone, participant and track events, `voice.state` data, the
disconnect reason) and the agent worker's protocol and room I/O (registration, load, jobs,
the agent token, subscribing to the page, publishing audio and data). What is missing lives
inside LiveKit and its SDKs, not in our code:

- No session resumption or ICE restart: a client that tries to resume is told to rejoin, a
  participant whose signal socket closes is removed at once. LiveKit keeps it for a while to
  let it resume, so there a crashed agent shows as gone later and the page's `agent_left`
  fallback comes that much later; what the page does once it sees the agent go is the same.
- No token refresh (`refresh_token`), no TURN or ICE servers, no congestion control,
  simulcast, dynacast, RED, speaker or connection-quality updates, no video: livekit-client
  and the rtc SDK handle those; the page turns adaptive stream and dynacast off and uses none.
- Opus is forwarded undecoded, as LiveKit forwards it, but packetized again by aiortc (new SSRC,
  sequence and timestamps, no NACK or RTCP feedback carried through) behind aiortc's jitter
  buffer: function is the same, latency is not LiveKit's.
- A media section is never reused after its subscription ends (LiveKit reuses them).
- Twirp: the room and dispatch methods our code and its tests call, not egress, ingress, SIP,
  room metadata updates or track muting by API.
- Signal requests for features we do not use (`sync_state`, `update_layers`,
  `subscription_permission`, `update_audio_track`, ...) are logged and ignored.
- Agent dispatch: no job is dispatched again when its worker dies (it stays lost; the page
  falls back), no hosted-agent deployments, job type `JT_PUBLISHER` untested.
- One process, one node, one region.
"""

from .server import DEFAULT_KEYS, LiveKitServer

__all__ = ["DEFAULT_KEYS", "LiveKitServer"]
