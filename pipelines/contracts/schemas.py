"""JSON files for the page, generated from the contracts (never written by hand): the JSON
Schemas of the session config and the state messages, and the tool catalogue's activity phrases
(`tool-activity.json`, what the page shows while a tool runs).

`voicegw schemas` writes them into client-config/schemas/; a test fails when the committed
files drift from the models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .messages import state_message_adapter
from .session_config import SessionConfig
from .tools import CATALOGUE

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "client-config" / "schemas"


def render_schemas() -> dict[str, str]:
    """File name → schema text, exactly as committed."""
    schemas: dict[str, dict[str, Any]] = {
        "session-config.schema.json": SessionConfig.model_json_schema(mode="serialization"),
        "state-message.schema.json": state_message_adapter.json_schema(mode="serialization"),
    }
    rendered = {
        name: _dump({"$schema": "https://json-schema.org/draft/2020-12/schema", **schema})
        for name, schema in schemas.items()
    }
    rendered["tool-activity.json"] = _dump(
        {
            tool.name: {
                "doing": tool.activity.doing,
                "done": tool.activity.done,
                "failed": tool.activity.failed,
            }
            for tool in CATALOGUE
        }
    )
    return rendered


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_schemas().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
