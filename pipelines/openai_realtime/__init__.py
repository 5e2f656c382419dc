"""OpenAI Realtime (GA) for legacy mode: session config, client-frame gate, event translation
and the tool loop. Free of I/O: the relay feeds frames in and carries the actions out."""

from .actions import FORWARD, Action, Close, Forward, StartTool, ToClient, ToUpstream
from .options import RealtimeOptions, TurnDetection, session_update
from .protocol import RelayLimits, RelayProtocol

__all__ = [
    "FORWARD",
    "Action",
    "Close",
    "Forward",
    "RealtimeOptions",
    "RelayLimits",
    "RelayProtocol",
    "StartTool",
    "ToClient",
    "ToUpstream",
    "TurnDetection",
    "session_update",
]
