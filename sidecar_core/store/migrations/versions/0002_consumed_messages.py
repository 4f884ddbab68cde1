"""consumed messages for idempotent consumers

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "consumed_messages",
        sa.Column("consumer", sa.String(length=64), nullable=False),
        sa.Column("msg_id", sa.String(length=255), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("consumer", "msg_id", name=op.f("pk_consumed_messages")),
    )


def downgrade() -> None:
    op.drop_table("consumed_messages")
