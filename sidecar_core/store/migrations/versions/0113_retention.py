"""Retention per facility (days after a study's final state until its received DICOM and
derived objects, and its report text, are deleted) and when a study's were deleted

Revision ID: 0113
Revises: 0110
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0113"
down_revision = "0112"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("facilities", sa.Column("retention_days", sa.Integer(), nullable=True))
    op.add_column("facilities", sa.Column("report_retention_days", sa.Integer(),
                                          nullable=True))
    op.add_column("studies", sa.Column("objects_deleted_at", sa.DateTime(timezone=True),
                                       nullable=True))
    op.add_column("studies", sa.Column("reports_deleted_at", sa.DateTime(timezone=True),
                                       nullable=True))


def downgrade() -> None:
    op.drop_column("studies", "reports_deleted_at")
    op.drop_column("studies", "objects_deleted_at")
    op.drop_column("facilities", "report_retention_days")
    op.drop_column("facilities", "retention_days")
