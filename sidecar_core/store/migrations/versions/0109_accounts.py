"""account lifecycle: a user can be disabled, and every session issued before a moment revoked

Revision ID: 0109
Revises: 0108
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0109"
down_revision = "0108"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("users", sa.Column("sessions_revoked_at", sa.DateTime(timezone=True),
                                     nullable=True))


def downgrade() -> None:
    op.drop_column("users", "sessions_revoked_at")
    op.drop_column("users", "disabled_at")
