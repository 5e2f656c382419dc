"""The OpenAI Realtime relay (legacy mode), its I/O: ticket auth at the endpoint, the session's
callbacks between the client leg and the upstream leg, RFC 6455 framing, backpressure. The
protocol decisions are `pipelines.openai_realtime`'s."""

from .config import RelayConfig
from .endpoint import RelayEndpoint
from .session import RelaySession

__all__ = ["RelayConfig", "RelayEndpoint", "RelaySession"]
