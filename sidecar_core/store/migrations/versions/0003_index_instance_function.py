"""sidecar_index_instance(): index one received instance in a single round trip

Revision ID: 0003
Revises: 0002

The ingest hot path (one call per C-STORE / Ingest RPC instance) upserts the study and the
series, inserts the instance unless it is a duplicate, and bumps the counters, all inside the
caller's transaction. Returns the study id, the study's ingest status before this instance,
and whether the instance was new.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

FUNCTION = """
CREATE OR REPLACE FUNCTION sidecar_index_instance(
    p_study_id uuid, p_facility_id uuid, p_accession text, p_study_uid text,
    p_study_modality text, p_study_description text,
    p_series_id uuid, p_series_uid text, p_series_modality text, p_body_part text,
    p_series_description text, p_series_number integer,
    p_instance_id uuid, p_sop_uid text, p_sop_class_uid text, p_transfer_syntax text,
    p_instance_number integer, p_object_key text, p_size bigint, p_attributes jsonb,
    p_source text, p_now timestamptz)
RETURNS TABLE (study_id uuid, status_before text, inserted boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_study uuid;
    v_status text;
    v_series uuid;
    v_instance uuid;
BEGIN
    INSERT INTO studies (id, facility_id, accession, study_instance_uid, modality, description,
        ingest_status, instance_count, last_instance_at, completion_count, eligibility_reason,
        partial, ai_status, llm_status, review_status, handoff_status)
    VALUES (p_study_id, p_facility_id, p_accession, p_study_uid, p_study_modality,
        p_study_description, 'receiving', 0, p_now, 0, '', false, '', '', '', '')
    ON CONFLICT DO NOTHING;
    SELECT s.id, s.ingest_status INTO v_study, v_status FROM studies s
        WHERE s.facility_id = p_facility_id AND s.accession = p_accession
          AND s.study_instance_uid = p_study_uid
        FOR UPDATE;
    INSERT INTO series (id, study_id, series_instance_uid, modality, body_part, description,
        series_number, instance_count, preprocess_status, slice_count)
    VALUES (p_series_id, v_study, p_series_uid, p_series_modality, p_body_part,
        p_series_description, p_series_number, 0, '', 0)
    ON CONFLICT DO NOTHING;
    SELECT se.id INTO v_series FROM series se
        WHERE se.study_id = v_study AND se.series_instance_uid = p_series_uid;
    INSERT INTO instances (id, series_id, study_id, sop_instance_uid, sop_class_uid,
        transfer_syntax_uid, instance_number, object_key, size_bytes, attributes, source)
    VALUES (p_instance_id, v_series, v_study, p_sop_uid, p_sop_class_uid, p_transfer_syntax,
        p_instance_number, p_object_key, p_size, p_attributes, p_source)
    ON CONFLICT DO NOTHING
    RETURNING id INTO v_instance;
    IF v_instance IS NOT NULL THEN
        UPDATE series SET instance_count = instance_count + 1 WHERE id = v_series;
        UPDATE studies SET instance_count = instance_count + 1, last_instance_at = p_now,
            ingest_status = 'receiving' WHERE id = v_study;
    END IF;
    RETURN QUERY SELECT v_study, v_status, v_instance IS NOT NULL;
END
$$;
"""


def upgrade() -> None:
    op.execute(FUNCTION)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS sidecar_index_instance")
