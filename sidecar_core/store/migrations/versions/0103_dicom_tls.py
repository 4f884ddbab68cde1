"""DICOM TLS per facility: a verified client certificate required, the peer addresses allowed
on both DICOM ports, and DICOM TLS for the export to the PACS

Revision ID: 0103
Revises: 0102
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0103"
down_revision = "0102"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("facilities", sa.Column("dicom_require_client_cert", sa.Boolean(),
                                          nullable=False, server_default=sa.false()))
    op.add_column("facilities", sa.Column("dicom_allowed_hosts", sa.String(2000),
                                          nullable=True))
    op.add_column("facilities", sa.Column("pacs_tls", sa.Boolean(), nullable=False,
                                          server_default=sa.false()))


def downgrade() -> None:
    op.drop_column("facilities", "pacs_tls")
    op.drop_column("facilities", "dicom_allowed_hosts")
    op.drop_column("facilities", "dicom_require_client_cert")
