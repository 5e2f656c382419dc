"""The OpenAI Realtime relay (legacy mode): auth, upstream connection, pumps, backpressure."""

from .config import RelayConfig
from .endpoint import RelayEndpoint
from .session import RelaySession

__all__ = ["RelayConfig", "RelayEndpoint", "RelaySession"]
