"""Review: sessions (revoked tokens, login attempts), claims, per-finding review versions

Revision ID: 0007
Revises: 0004

Studies get the claiming radiologist; findings get their origin (ai or radiologist), a review
version for optimistic concurrency and the radiologist's current values; review events get the
version they produced and the model they judged. A radiologist's own finding has no AI run.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
    )
    op.create_index("ix_revoked_tokens_expires_at", "revoked_tokens", ["expires_at"])
    op.create_table(
        "login_attempts",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
    )
    for column in ("username", "address", "at"):
        op.create_index(f"ix_login_attempts_{column}", "login_attempts", [column])
    fk = sa.ForeignKey("users.id", name="fk_studies_assigned_user_id_users")
    op.add_column("studies", sa.Column("assigned_user_id", sa.Uuid(), fk, nullable=True))
    op.add_column("studies", sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=True))
    op.alter_column("findings", "ai_run_id", nullable=True)
    op.add_column("findings", sa.Column("origin", sa.String(16), server_default="ai",
                                        nullable=False))
    op.add_column("findings", sa.Column("review_version", sa.Integer(), server_default="0",
                                        nullable=False))
    op.add_column("findings", sa.Column("review_current", postgresql.JSONB(),
                                        server_default=sa.text("'{}'::jsonb"), nullable=False))
    op.add_column("review_events", sa.Column("version", sa.Integer(), server_default="0",
                                             nullable=False))
    op.add_column("review_events", sa.Column("model_name", sa.String(64), server_default="",
                                             nullable=False))
    op.add_column("review_events", sa.Column("model_version", sa.String(32), server_default="",
                                             nullable=False))


def downgrade() -> None:
    for column in ("model_version", "model_name", "version"):
        op.drop_column("review_events", column)
    for column in ("review_current", "review_version", "origin"):
        op.drop_column("findings", column)
    op.alter_column("findings", "ai_run_id", nullable=False)
    op.drop_column("studies", "assigned_at")
    op.drop_column("studies", "assigned_user_id")
    op.drop_table("login_attempts")
    op.drop_table("revoked_tokens")
