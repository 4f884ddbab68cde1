"""report loop: HL7 messages, legacy report details, handoff, drafts, LLM traces, exports

Revision ID: 0008
Revises: 0006, 0007

Facility settings for the report loop (HL7 sending facility, handoff webhook, LLM endpoint,
PACS export destination); raw HL7 messages as received; the legacy report's reference, result
status and times; handoff destination and payload digest; draft versions with their LLM trace;
one row per export of the AI results to the PACS.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = ("0006", "0007")
branch_labels = None
depends_on = None

JSONB = postgresql.JSONB(astext_type=sa.Text())


def _created() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                     nullable=False)


def upgrade() -> None:
    add = op.add_column
    add("facilities", sa.Column("hl7_sending_facility", sa.String(64), nullable=True))
    op.create_unique_constraint(op.f("uq_facilities_hl7_sending_facility"), "facilities",
                                ["hl7_sending_facility"])
    add("facilities", sa.Column("handoff_url", sa.Text(), nullable=True))
    add("facilities", sa.Column("handoff_secret", sa.Text(), nullable=True))
    add("facilities", sa.Column("llm_base_url", sa.Text(), nullable=True))
    add("facilities", sa.Column("llm_model", sa.String(128), nullable=True))
    add("facilities", sa.Column("llm_api_key", sa.Text(), nullable=True))
    add("facilities", sa.Column("llm_timeout_s", sa.Float(), server_default="30", nullable=False))
    add("facilities", sa.Column("pacs_ae_title", sa.String(16), nullable=True))
    add("facilities", sa.Column("pacs_host", sa.String(255), nullable=True))
    add("facilities", sa.Column("pacs_port", sa.Integer(), nullable=True))
    add("facilities", sa.Column("export_rejected", sa.String(16), server_default="omit",
                                nullable=False))

    op.create_table(
        "hl7_messages",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("peer", sa.String(128), server_default="", nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("sending_facility", sa.String(227), server_default="", nullable=False),
        sa.Column("control_id", sa.String(199), server_default="", nullable=False),
        sa.Column("message_type", sa.String(32), server_default="", nullable=False),
        sa.Column("version", sa.String(16), server_default="", nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("ack_code", sa.String(2), server_default="", nullable=False),
        sa.Column("error_location", sa.String(32), server_default="", nullable=False),
        sa.Column("error_message", sa.Text(), server_default="", nullable=False),
        sa.Column("facility_id", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(["facility_id"], ["facilities.id"],
                                name=op.f("fk_hl7_messages_facility_id_facilities")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hl7_messages")),
    )
    # a re-sent message (same sender and MSH-10) that was accepted once changes nothing
    op.create_index("ux_hl7_messages_accepted", "hl7_messages",
                    ["sending_facility", "control_id"], unique=True,
                    postgresql_where=sa.text("status = 'accepted'"))

    add("legacy_reports", sa.Column("hl7_message_id", sa.Uuid(), nullable=True))
    add("legacy_reports", sa.Column("report_reference", sa.String(128), server_default="",
                                    nullable=False))
    add("legacy_reports", sa.Column("result_status", sa.String(1), server_default="",
                                    nullable=False))
    add("legacy_reports", sa.Column("observed_at", sa.DateTime(timezone=True), nullable=True))
    add("legacy_reports", sa.Column("message_at", sa.DateTime(timezone=True), nullable=True))
    add("legacy_reports", sa.Column("matched_at", sa.DateTime(timezone=True), nullable=True))
    add("legacy_reports", sa.Column("matched_by", sa.String(16), server_default="",
                                    nullable=False))
    op.create_index(op.f("ix_legacy_reports_study_id"), "legacy_reports", ["study_id"])

    add("handoffs", sa.Column("legacy_report_id", sa.Uuid(), nullable=True))
    add("handoffs", sa.Column("job_id", sa.String(128), server_default="", nullable=False))
    add("handoffs", sa.Column("destination", sa.Text(), server_default="", nullable=False))
    add("handoffs", sa.Column("payload_sha256", sa.String(64), server_default="",
                              nullable=False))
    add("handoffs", sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True))

    add("drafts", sa.Column("version", sa.Integer(), server_default="1", nullable=False))
    add("drafts", sa.Column("parent_id", sa.Uuid(), nullable=True))
    add("drafts", sa.Column("sentences", JSONB, server_default="[]", nullable=False))
    add("drafts", sa.Column("author", sa.String(64), server_default="", nullable=False))
    add("drafts", sa.Column("assistive", sa.Boolean(), server_default="true", nullable=False))

    op.create_table(
        "llm_traces",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("study_id", sa.Uuid(), nullable=False),
        sa.Column("draft_id", sa.Uuid(), nullable=True),
        sa.Column("generator", sa.String(64), nullable=False),
        sa.Column("endpoint", sa.Text(), server_default="", nullable=False),
        sa.Column("prompt_version", sa.String(32), nullable=False),
        sa.Column("deid_profile", sa.String(64), nullable=False),
        sa.Column("prompt", JSONB, nullable=False),
        sa.Column("response", sa.Text(), server_default="", nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), server_default="", nullable=False),
        sa.Column("latency_ms", sa.Float(), server_default="0", nullable=False),
        _created(),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"],
                                name=op.f("fk_llm_traces_study_id_studies")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_llm_traces")),
    )
    op.create_index(op.f("ix_llm_traces_study_id"), "llm_traces", ["study_id"])

    op.create_table(
        "exports",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("study_id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), server_default="", nullable=False),
        sa.Column("destination", sa.String(300), server_default="", nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("dimse_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), server_default="", nullable=False),
        _created(),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"],
                                name=op.f("fk_exports_study_id_studies")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exports")),
        sa.UniqueConstraint("job_id", "kind", name=op.f("uq_exports_job_id_kind")),
    )
    op.create_index(op.f("ix_exports_study_id"), "exports", ["study_id"])


def downgrade() -> None:
    op.drop_table("exports")
    op.drop_table("llm_traces")
    for col in ("assistive", "author", "sentences", "parent_id", "version"):
        op.drop_column("drafts", col)
    for col in ("finished_at", "payload_sha256", "destination", "job_id", "legacy_report_id"):
        op.drop_column("handoffs", col)
    op.drop_index(op.f("ix_legacy_reports_study_id"), "legacy_reports")
    for col in ("matched_by", "matched_at", "message_at", "observed_at", "result_status",
                "report_reference", "hl7_message_id"):
        op.drop_column("legacy_reports", col)
    op.drop_index("ux_hl7_messages_accepted", "hl7_messages")
    op.drop_table("hl7_messages")
    op.drop_constraint(op.f("uq_facilities_hl7_sending_facility"), "facilities")
    for col in ("export_rejected", "pacs_port", "pacs_host", "pacs_ae_title", "llm_timeout_s",
                "llm_api_key", "llm_model", "llm_base_url", "handoff_secret", "handoff_url",
                "hl7_sending_facility"):
        op.drop_column("facilities", col)
