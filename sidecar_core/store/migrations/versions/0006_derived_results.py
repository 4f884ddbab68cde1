"""derived_objects: every version of an AI run's DICOM results (SR, SEG) and its index row

Revision ID: 0006
Revises: 0005 (0004 on its own branch; chained after wado's 0005 once merged)

The DICOM objects themselves are indexed like received ones (series and instances rows, so QIDO
lists them and WADO retrieves them) but marked `instances.source = 'derived'`, in series of
their own; this table records which AI run and which version each one is, and the fingerprint
of what it says, so a review change writes a new version only when the content changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "derived_objects",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("study_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("ai_run_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("instance_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("finding_count", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"],
                                name=op.f("fk_derived_objects_study_id_studies")),
        sa.ForeignKeyConstraint(["ai_run_id"], ["ai_runs.id"],
                                name=op.f("fk_derived_objects_ai_run_id_ai_runs")),
        sa.ForeignKeyConstraint(["instance_id"], ["instances.id"],
                                name=op.f("fk_derived_objects_instance_id_instances")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_derived_objects")),
        sa.UniqueConstraint("ai_run_id", "kind", "version",
                            name=op.f("uq_derived_objects_ai_run_id_kind_version")),
    )
    op.create_index(op.f("ix_derived_objects_study_id"), "derived_objects", ["study_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_derived_objects_study_id"), table_name="derived_objects")
    op.drop_table("derived_objects")
