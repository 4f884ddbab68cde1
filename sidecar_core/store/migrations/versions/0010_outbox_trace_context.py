"""outbox rows carry the W3C trace context of the transaction that wrote them

Revision ID: 0010
Revises: 0100
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0100"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("trace_context", sa.String(length=64), nullable=False,
                                      server_default=""))


def downgrade() -> None:
    op.drop_column("outbox", "trace_context")
