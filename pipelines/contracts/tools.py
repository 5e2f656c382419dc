"""The tool catalogue: each tool defined once, rendered per target.

A tool's parameters are a pydantic model, so the JSON Schema both models see and the validation
of the arguments they send come from one definition.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .validation import validation_problems


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SendEmailArgs(_Args):
    to: str = Field(
        description="Recipient email address", min_length=3, pattern=r"^[^@\s]+@[^@\s]+$"
    )
    subject: str = Field(description="Email subject line", min_length=1)
    body: str = Field(description="Email body content", min_length=1)


class QueryDatabaseArgs(_Args):
    query: str = Field(description="What to look up, in plain words", min_length=1)


@dataclass(frozen=True)
class ToolActivity:
    """What the meeting page shows while a tool runs and after: short phrases a meeting reads
    on a thumbnail ("Sending the email…"), never the tool's raw name."""

    doing: str  # the page adds the ellipsis
    done: str
    failed: str


@dataclass(frozen=True)
class ToolSpec:
    """One tool: what the model sees, where n8n runs it, and what the page shows."""

    name: str
    description: str
    args: type[BaseModel]
    webhook_path: str
    activity: ToolActivity
    timeout_s: float = 8.0

    def parameters(self) -> dict[str, Any]:
        """The arguments' JSON Schema, without pydantic's titles (noise to a model)."""
        schema: dict[str, Any] = _strip_titles(self.args.model_json_schema())
        return schema

    def to_chat_completions(self) -> dict[str, Any]:
        """OpenAI Chat Completions shape (what Groq takes)."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters(),
            },
        }

    def to_realtime(self) -> dict[str, Any]:
        """OpenAI Realtime (GA) `session.tools` shape."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters(),
        }

    def validate_arguments(self, raw: str | Mapping[str, Any]) -> dict[str, Any]:
        """Parse and validate a model's arguments; raises ToolArgumentError naming the fields."""
        try:
            data = json.loads(raw) if isinstance(raw, str) else dict(raw)
        except json.JSONDecodeError:
            raise ToolArgumentError(f"the arguments for {self.name} were not valid JSON") from None
        if not isinstance(data, dict):
            raise ToolArgumentError(f"the arguments for {self.name} must be a JSON object")
        try:
            return self.args.model_validate(data).model_dump()
        except ValidationError as exc:
            problems = ", ".join(
                f"{where} {what.lower()}"
                for where, what in validation_problems(exc, whole="arguments")
            )
            raise ToolArgumentError(
                f"the arguments for {self.name} were invalid: {problems}"
            ) from None


class ToolArgumentError(ValueError):
    """A model sent arguments that do not fit the tool's schema. The message is speakable."""


CATALOGUE: tuple[ToolSpec, ...] = (
    ToolSpec(
        name="send_email",
        description=(
            "Send an email to a recipient via Gmail. Requires to, subject, and body. "
            "Confirm the recipient and content with the user before calling."
        ),
        args=SendEmailArgs,
        webhook_path="execute-gmail",
        activity=ToolActivity(
            doing="Sending the email", done="Email sent", failed="The email could not be sent"
        ),
        timeout_s=10.0,
    ),
    ToolSpec(
        name="query_database",
        description="Search the knowledge base and return the most relevant passages.",
        args=QueryDatabaseArgs,
        webhook_path="query-database",
        activity=ToolActivity(
            doing="Looking that up", done="Lookup finished", failed="The lookup failed"
        ),
        timeout_s=8.0,
    ),
)

TOOLS_BY_NAME: Mapping[str, ToolSpec] = {tool.name: tool for tool in CATALOGUE}


def chat_completions_tools(catalogue: tuple[ToolSpec, ...] = CATALOGUE) -> list[dict[str, Any]]:
    return [tool.to_chat_completions() for tool in catalogue]


def realtime_tools(catalogue: tuple[ToolSpec, ...] = CATALOGUE) -> list[dict[str, Any]]:
    return [tool.to_realtime() for tool in catalogue]


def _strip_titles(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {
            key: _strip_titles(value)
            for key, value in schema.items()
            if not (key == "title" and isinstance(value, str))
        }
    if isinstance(schema, list):
        return [_strip_titles(item) for item in schema]
    return schema
