"""JSON log lines on stderr: a fixed message plus the structured fields given in `extra`."""

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
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log prints query strings, which carry launch tokens and tickets.
    logging.getLogger("uvicorn.access").disabled = True
    cap_library_loggers()


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
