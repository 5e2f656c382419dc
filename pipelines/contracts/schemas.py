"""JSON Schemas for the page, generated from the contract models (never written by hand).

`voicegw schemas` writes them into client-config/schemas/; a test fails when the committed
files drift from the models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .messages import state_message_adapter
from .session_config import SessionConfig

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "client-config" / "schemas"


def render_schemas() -> dict[str, str]:
    """File name → schema text, exactly as committed."""
    schemas: dict[str, dict[str, Any]] = {
        "session-config.schema.json": SessionConfig.model_json_schema(mode="serialization"),
        "state-message.schema.json": state_message_adapter.json_schema(mode="serialization"),
    }
    return {
        name: json.dumps(
            {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema},
            indent=2,
            sort_keys=True,
        )
        + "\n"
        for name, schema in schemas.items()
    }


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_schemas().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
