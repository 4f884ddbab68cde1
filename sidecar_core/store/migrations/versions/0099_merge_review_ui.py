"""Merge point of the review-api (0007) and wado (0005) migrations on the review-ui branch.

Only there so that the branch that merges both has one head; drop it when the lead
re-chains the migrations.

Revision ID: 0099
Revises: 0005, 0007
"""

from __future__ import annotations

revision = "0099"
down_revision = ("0005", "0007")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
