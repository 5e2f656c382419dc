"""JSON log lines on stderr: a fixed message plus the structured fields given in `extra`.

Every `voicegw` command logs this way (`configure_logging`), the gateway and the agent worker
alike, so one parser reads both services' logs."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's ANSI copy of msg
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ServerLifecycle())
    handler.addFilter(KnownNotices())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log prints query strings, which carry launch tokens and tickets.
    logging.getLogger("uvicorn.access").disabled = True
    quiet_libraries()
    cap_library_loggers()


class ServerLifecycle(logging.Filter):
    """Drops uvicorn's lifecycle and per-connection lines at INFO. Every server in a process
    (the gateway and each simulated provider) logs the same "Started server process [pid]" with
    no name or port; what matters is said once, in our own lines: "gateway starting" (host,
    port), uvicorn's "Uvicorn running on <url>", one line per provider (where it runs) and
    "relay session started" (session id) for each relay connection."""

    DROPPED = frozenset(
        {
            "Started server process [%d]",
            "Waiting for application startup.",
            "Application startup complete.",
            "Shutting down",
            "Waiting for application shutdown.",
            "Application shutdown complete.",
            "Finished server process [%d]",
            '%s - "WebSocket %s" [accepted]',
            "connection open",
            "connection closed",
        }
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.name == "uvicorn.error"
            and record.levelno == logging.INFO
            and record.msg in self.DROPPED
        )


class KnownNotices(logging.Filter):
    """Drops library warnings we know and chose to live with, which would otherwise repeat on
    every session. livekit-agents 1.8 deprecates its `metrics_collected` event, which the
    per-stage latency of livekit mode is measured from (pipelines/livekit/latency.py);
    livekit-agents is pinned below 1.9, so moving off it is a deliberate upgrade."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.name == "livekit.agents"
            and isinstance(record.msg, str)
            and record.msg.startswith("metrics_collected is deprecated")
        )


# At DEBUG these libraries log handshake headers (the relay's upstream `Authorization: Bearer`
# carries OPENAI_API_KEY; uvicorn logs the page's relay ticket) and whole frames (audio,
# transcripts).
CAPPED_LIBRARIES = ("websockets", "uvicorn.error", "httpx", "httpcore", "hpack")


def cap_library_loggers() -> None:
    """Keep the libraries that log credentials at DEBUG at INFO or above, whatever the root
    level is."""
    for name in CAPPED_LIBRARIES:
        logger = logging.getLogger(name)
        logger.setLevel(max(logging.INFO, logger.getEffectiveLevel()))


# What livekit-agents' own runner keeps at WARNING when it sets up logging: LiveKit's WebRTC
# bindings and the HTTP and model clients log every connection and request at INFO (and
# `/models` prewarm requests, Recall's bot creation: each has a line of our own).
NOISY_LIBRARIES = (
    "livekit",
    "httpx",
    "httpx2",
    "httpcore",
    "httpcore2",
    "openai",
    "websockets.client",
    "aiohttp.access",
    "urllib3.connectionpool",
    "alembic",  # its plugins and dialect, at every start of every process that migrates
)


def quiet_libraries() -> None:
    """The chatty libraries at WARNING (unless already set), in every process."""
    for name in NOISY_LIBRARIES:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


def quiet_agent_libraries(level: str, framework: tuple[str, ...]) -> None:
    """The agent worker's levels: the chatty libraries at WARNING, the agents framework and
    its plugins (`framework`, logger names) at `level`."""
    quiet_libraries()
    for name in framework:
        logging.getLogger(name).setLevel(level)
