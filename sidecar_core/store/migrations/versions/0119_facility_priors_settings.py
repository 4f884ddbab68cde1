"""Per-facility settings of the assistant's clinical context: how far back and how many of
the patient's prior reports a draft or chat may use, and the facility's DICOMweb PACS (QIDO-RS
for prior studies, WADO-RS to retrieve one) with its sealed credential

Revision ID: 0119
Revises: 0118
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0119"
down_revision = "0118"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL = the product's default (3 years, 5 reports)
    op.add_column("facilities", sa.Column("prior_report_lookback_days", sa.Integer(),
                                          nullable=True))
    op.add_column("facilities", sa.Column("prior_report_max", sa.Integer(), nullable=True))
    op.add_column("facilities", sa.Column("pacs_dicomweb_url", sa.Text(), nullable=True))
    # sealed (sidecar_core.secret_box) like the other secret settings
    op.add_column("facilities", sa.Column("pacs_dicomweb_auth", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("facilities", "pacs_dicomweb_auth")
    op.drop_column("facilities", "pacs_dicomweb_url")
    op.drop_column("facilities", "prior_report_max")
    op.drop_column("facilities", "prior_report_lookback_days")
