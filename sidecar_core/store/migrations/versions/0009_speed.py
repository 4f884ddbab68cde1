"""Completion on association release (per facility) and the operating threshold of an AI run

Revision ID: 0009
Revises: 0004

`facilities.completion_mode`: `quiet` (default: complete after the quiet period, or on
CompleteStudy), `association` (also as soon as the DIMSE association that sent the study is
released and `association_settle_s` passed without another instance), `explicit` (only on
CompleteStudy). `ai_runs.operating_threshold`: the model's operating threshold when the run's
findings were stored; findings below it are stored hidden.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("facilities", sa.Column("completion_mode", sa.String(16), nullable=False,
                                          server_default="quiet"))
    op.add_column("facilities", sa.Column("association_settle_s", sa.Float(), nullable=False,
                                          server_default="1.0"))
    op.create_check_constraint(
        op.f("ck_facilities_completion_mode"), "facilities",
        "completion_mode IN ('quiet', 'association', 'explicit')")
    op.add_column("ai_runs", sa.Column("operating_threshold", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("ai_runs", "operating_threshold")
    op.drop_constraint(op.f("ck_facilities_completion_mode"), "facilities", type_="check")
    op.drop_column("facilities", "association_settle_s")
    op.drop_column("facilities", "completion_mode")
