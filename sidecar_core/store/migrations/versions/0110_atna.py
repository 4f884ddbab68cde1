"""the IHE ATNA forwarder's cursor: the last event of each audit chain sent to the repository

Revision ID: 0110
Revises: 0108
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sidecar_core.store.grants import apply_grants

revision = "0110"
down_revision = "0109"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "atna_cursor",
        sa.Column("chain", sa.SmallInteger(), primary_key=True, autoincrement=False),
        sa.Column("pos", sa.BigInteger(), nullable=False, server_default="0"),
    )
    apply_grants(op.get_bind())


def downgrade() -> None:
    op.drop_table("atna_cursor")
