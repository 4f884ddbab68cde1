"""Objects a retention pass or purge has unlinked from their rows but not yet deleted: written in
the deletion's own transaction, removed once the object is gone, so a crash in between leaves a
list the next pass finishes (workflow_svc/operations/retention.py)

Revision ID: 0115
Revises: 0113
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sidecar_core.store.grants import apply_grants

revision = "0115"
down_revision = "0113"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retention_pending_objects",
        sa.Column("object_key", sa.String(128), primary_key=True),
        # a purge's pack records are overwritten in place; retention's wait for compaction
        sa.Column("scrub", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
    )
    apply_grants(op.get_bind())


def downgrade() -> None:
    op.drop_table("retention_pending_objects")
