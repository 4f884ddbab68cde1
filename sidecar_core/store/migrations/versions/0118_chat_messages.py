"""the assistive chat about a study: each turn, its citations and its LLM trace

Revision ID: 0118
Revises: 0115
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from sidecar_core.store.grants import apply_grants

revision = "0118"
down_revision = "0117"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chat_messages",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("study_id", sa.Uuid(), sa.ForeignKey(
            "studies.id", name="fk_chat_messages_study_id_studies"), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        # user | assistant; a user's text is stored de-identified only (never as typed)
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("citations", postgresql.JSONB(), nullable=False,
                  server_default=sa.text("'[]'::jsonb")),
        sa.Column("trace_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
    )
    op.create_index("ix_chat_messages_study_id", "chat_messages", ["study_id"])
    apply_grants(op.get_bind())


def downgrade() -> None:
    op.drop_table("chat_messages")
