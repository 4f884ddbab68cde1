"""join the migration branches developed side by side (no schema change)

Revision ID: 0100
Revises: the heads of the branches merged into main
"""

from __future__ import annotations

revision = "0100"
down_revision = ("0008", "0099", "0009")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
