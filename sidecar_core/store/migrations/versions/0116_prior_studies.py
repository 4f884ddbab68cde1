"""prior studies of the same patient found at the facility's PACS, and their retrieval

Revision ID: 0116
Revises: 0110
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sidecar_core.store.grants import apply_grants

revision = "0116"
down_revision = "0110"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prior_lookups",
        sa.Column("study_id", sa.Uuid(), sa.ForeignKey("studies.id",
                  name="fk_prior_lookups_study_id_studies"), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("found_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text(), nullable=False, server_default=""),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
    )
    op.create_table(
        "prior_studies",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("study_id", sa.Uuid(), sa.ForeignKey("studies.id",
                  name="fk_prior_studies_study_id_studies"), nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("study_date", sa.String(8), nullable=False, server_default=""),
        sa.Column("description", sa.String(256), nullable=False, server_default=""),
        sa.Column("modalities", sa.String(64), nullable=False, server_default=""),
        sa.Column("accession", sa.String(64), nullable=False, server_default=""),
        sa.Column("instance_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("retrieve_status", sa.String(16), nullable=False, server_default=""),
        sa.Column("retrieve_job_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("retrieved_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text(), nullable=False, server_default=""),
        sa.Column("found_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.UniqueConstraint("study_id", "study_instance_uid",
                            name="uq_prior_studies_study_id_study_instance_uid"),
    )
    op.create_index("ix_prior_studies_study_id", "prior_studies", ["study_id"])
    op.create_index("ix_prior_studies_study_instance_uid", "prior_studies",
                    ["study_instance_uid"])
    apply_grants(op.get_bind())


def downgrade() -> None:
    op.drop_table("prior_studies")
    op.drop_table("prior_lookups")
