"""The relay's explicit configuration, built once from Settings at the edge (the gateway)."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlencode

from pipelines.contracts import Settings
from pipelines.openai_realtime import RealtimeOptions, RelayLimits, TurnDetection


@dataclass(frozen=True)
class RelayConfig:
    """Everything one relay endpoint needs. Secrets are plain strings here and never logged."""

    ticket_secret: str
    upstream_url: str = "wss://api.openai.com/v1/realtime"
    api_key: str | None = None
    options: RealtimeOptions = field(default_factory=RealtimeOptions)
    limits: RelayLimits = field(default_factory=RelayLimits)
    max_session_seconds: float = 55 * 60
    client_stall_s: float = 5.0
    upstream_open_timeout_s: float = 10.0
    upstream_ping_interval_s: float = 5.0
    upstream_ping_timeout_s: float = 5.0
    max_sessions_per_id: int = 2
    n8n_base_url: str | None = None
    n8n_timeout_s: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RelayConfig:
        if settings.gateway_secret is None:
            raise ValueError("GATEWAY_SECRET is required to redeem relay tickets")
        key = settings.openai_api_key
        return cls(
            ticket_secret=settings.gateway_secret.get_secret_value(),
            upstream_url=settings.openai_realtime_url,
            api_key=key.get_secret_value() if key is not None else None,
            options=RealtimeOptions(
                model=settings.openai_realtime_model,
                voice=settings.openai_realtime_voice,
                transcription_model=settings.openai_transcription_model,
                turn_detection=TurnDetection(
                    kind=settings.openai_turn_detection,
                    threshold=settings.openai_vad_threshold,
                    prefix_padding_ms=settings.openai_vad_prefix_padding_ms,
                    silence_duration_ms=settings.openai_vad_silence_ms,
                ),
            ),
            limits=RelayLimits(
                max_frame_bytes=settings.relay_max_frame_bytes,
                max_messages_per_second=settings.relay_max_messages_per_second,
            ),
            max_session_seconds=settings.relay_max_session_seconds,
            client_stall_s=settings.relay_client_stall_seconds,
            upstream_open_timeout_s=settings.relay_upstream_open_timeout_seconds,
            upstream_ping_interval_s=settings.relay_upstream_ping_interval_seconds,
            upstream_ping_timeout_s=settings.relay_upstream_ping_timeout_seconds,
            max_sessions_per_id=settings.relay_max_sessions_per_id,
            n8n_base_url=settings.n8n_webhook_base_url,
            n8n_timeout_s=settings.n8n_timeout_seconds,
        )

    def upstream_target(self) -> str:
        sep = "&" if "?" in self.upstream_url else "?"
        return f"{self.upstream_url}{sep}{urlencode({'model': self.options.model})}"
