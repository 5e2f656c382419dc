"""What both modes share: session config, state messages, tools, executor, prompt, settings."""

from .executor import N8nExecutor, ToolResult
from .messages import (
    STATE_TOPIC,
    AgentState,
    MetricsTurn,
    StateMessage,
    ToolFinished,
    ToolStarted,
    TranscriptAssistant,
    TranscriptUser,
    VoiceError,
    fatal_error,
    parse_state_message,
)
from .prompt import SYSTEM_PROMPT
from .session_config import (
    CONTRACT_VERSION,
    MODES,
    DispatchMetadata,
    Fallback,
    LiveKitCredentials,
    Mode,
    Reason,
    RelayCredentials,
    SessionConfig,
)
from .settings import ConfigError, Settings, load_settings
from .tools import (
    CATALOGUE,
    TOOLS_BY_NAME,
    ToolArgumentError,
    ToolSpec,
    chat_completions_tools,
    realtime_tools,
)

__all__ = [
    "CATALOGUE",
    "CONTRACT_VERSION",
    "MODES",
    "STATE_TOPIC",
    "SYSTEM_PROMPT",
    "TOOLS_BY_NAME",
    "AgentState",
    "ConfigError",
    "DispatchMetadata",
    "Fallback",
    "LiveKitCredentials",
    "MetricsTurn",
    "Mode",
    "N8nExecutor",
    "Reason",
    "RelayCredentials",
    "SessionConfig",
    "Settings",
    "StateMessage",
    "ToolArgumentError",
    "ToolFinished",
    "ToolResult",
    "ToolSpec",
    "ToolStarted",
    "TranscriptAssistant",
    "TranscriptUser",
    "VoiceError",
    "chat_completions_tools",
    "fatal_error",
    "load_settings",
    "parse_state_message",
    "realtime_tools",
]
