"""series facts for viewports on demand: slice order and resolved window per preset

Revision ID: 0101
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0101"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # [[sop_instance_uid, frame], ...] per slice index, in anatomical order
    op.add_column("series", sa.Column("slice_refs", postgresql.JSONB(), nullable=True))
    # {preset: {"center", "width", "function"} or null (a VOI LUT table: resolved per slice)}
    op.add_column("series", sa.Column("windows", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("series", "windows")
    op.drop_column("series", "slice_refs")
