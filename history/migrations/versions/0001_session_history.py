"""The session history: sessions, their routing events and halves, and per turn what was said,
the tool calls, the latencies and the errors.

Revision ID: 0001
Revises:
Create Date: 2026-12-07
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_SID = 64
_ID = 32


def _id() -> sa.Column[str]:
    return sa.Column("id", sa.String(_ID), nullable=False)


def _session_id() -> sa.Column[str]:
    return sa.Column("session_id", sa.String(_SID), nullable=False)


def _at(name: str = "at", nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=False), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(_SID), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=True),
        sa.Column("mode", sa.String(16), nullable=True),
        sa.Column("reason", sa.String(32), nullable=True),
        _at("started_at"),
        _at("last_seen_at"),
        _at("ended_at", nullable=True),
        sa.Column("close_reason", sa.Text(), nullable=True),
        sa.Column("fell_back", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("fallback_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
    )
    op.create_index("ix_sessions_mode", "sessions", ["mode"])
    op.create_index("ix_sessions_started_at", "sessions", ["started_at"])
    op.create_index("ix_sessions_last_seen_at", "sessions", ["last_seen_at"])

    op.create_table(
        "routing_events",
        _id(),
        _session_id(),
        _at(),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("mode", sa.String(16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_routing_events"),
    )
    op.create_index("ix_routing_events_session_id", "routing_events", ["session_id"])

    op.create_table(
        "legs",
        _id(),
        _session_id(),
        sa.Column("mode", sa.String(16), nullable=False),
        _at("started_at"),
        _at("ended_at", nullable=True),
        sa.Column("close_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_legs"),
    )
    op.create_index("ix_legs_session_id", "legs", ["session_id"])

    op.create_table(
        "utterances",
        _id(),
        _session_id(),
        sa.Column("leg_id", sa.String(_ID), nullable=False),
        sa.Column("turn", sa.Integer(), nullable=False),
        _at(),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("chars", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_utterances"),
    )
    op.create_index("ix_utterances_session_id", "utterances", ["session_id"])
    op.create_index("ix_utterances_leg_id_turn", "utterances", ["leg_id", "turn"])

    op.create_table(
        "turn_metrics",
        _id(),
        _session_id(),
        sa.Column("leg_id", sa.String(_ID), nullable=False),
        sa.Column("turn", sa.Integer(), nullable=False),
        _at(),
        sa.Column("eou_ms", sa.Float(), nullable=True),
        sa.Column("stt_ms", sa.Float(), nullable=True),
        sa.Column("llm_ttft_ms", sa.Float(), nullable=True),
        sa.Column("tts_ttfb_ms", sa.Float(), nullable=True),
        sa.Column("voice_to_voice_ms", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_turn_metrics"),
    )
    op.create_index("ix_turn_metrics_session_id", "turn_metrics", ["session_id"])
    op.create_index("ix_turn_metrics_leg_id_turn", "turn_metrics", ["leg_id", "turn"])

    op.create_table(
        "tool_calls",
        _id(),
        _session_id(),
        sa.Column("leg_id", sa.String(_ID), nullable=False),
        sa.Column("turn", sa.Integer(), nullable=False),
        _at(),
        sa.Column("call_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("arguments", sa.Text(), nullable=True),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("output", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tool_calls"),
    )
    op.create_index("ix_tool_calls_session_id", "tool_calls", ["session_id"])
    op.create_index("ix_tool_calls_leg_id_turn", "tool_calls", ["leg_id", "turn"])
    op.create_index("ix_tool_calls_status", "tool_calls", ["status"])

    op.create_table(
        "errors",
        _id(),
        _session_id(),
        sa.Column("leg_id", sa.String(_ID), nullable=True),
        sa.Column("turn", sa.Integer(), nullable=True),
        _at(),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("fatal", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_errors"),
    )
    op.create_index("ix_errors_session_id", "errors", ["session_id"])


def downgrade() -> None:
    for table in (
        "errors",
        "tool_calls",
        "turn_metrics",
        "utterances",
        "legs",
        "routing_events",
        "sessions",
    ):
        op.drop_table(table)
