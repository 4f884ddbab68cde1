"""prior reports: the report text of every ORU^R01 (sealed, AES-GCM) and the patient it is of
(PID-3 CX.1 and its assigning authority CX.4), looked up by facility and patient

Revision ID: 0117
Revises: 0115
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0117"
down_revision = "0115"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("legacy_reports", sa.Column("report_text_enc", sa.LargeBinary(),
                                              nullable=True))
    op.add_column("legacy_reports", sa.Column("patient_id", sa.String(64), nullable=False,
                                              server_default=""))
    op.add_column("legacy_reports", sa.Column("patient_id_issuer", sa.String(64),
                                              nullable=False, server_default=""))
    op.create_index("ix_legacy_reports_facility_patient", "legacy_reports",
                    ["facility_id", "patient_id", "patient_id_issuer"])


def downgrade() -> None:
    op.drop_index("ix_legacy_reports_facility_patient", table_name="legacy_reports")
    op.drop_column("legacy_reports", "patient_id_issuer")
    op.drop_column("legacy_reports", "patient_id")
    op.drop_column("legacy_reports", "report_text_enc")
