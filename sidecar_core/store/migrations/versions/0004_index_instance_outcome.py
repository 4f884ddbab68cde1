"""sidecar_index_instance(): one round trip that also commits; says why it did not insert

Revision ID: 0004
Revises: 0003

The ingest hot path now calls the function in autocommit mode, so the call is the whole
transaction: it inserts and commits in one round trip, or inserts nothing. It inserts nothing for
a duplicate (`outcome` 'duplicate') and, unless `p_allow_reopen`, for an instance of a study that
is already complete (`outcome` 'reopen'): reopening a study must be committed together with its
`study.reopened` audit event, which the caller's slower path writes in the same transaction.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

FUNCTION = """
CREATE FUNCTION sidecar_index_instance(
    p_study_id uuid, p_facility_id uuid, p_accession text, p_study_uid text,
    p_study_modality text, p_study_description text,
    p_series_id uuid, p_series_uid text, p_series_modality text, p_body_part text,
    p_series_description text, p_series_number integer,
    p_instance_id uuid, p_sop_uid text, p_sop_class_uid text, p_transfer_syntax text,
    p_instance_number integer, p_object_key text, p_size bigint, p_attributes jsonb,
    p_source text, p_now timestamptz, p_allow_reopen boolean)
RETURNS TABLE (study_id uuid, status_before text, outcome text)
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
    IF v_status = 'complete' AND NOT p_allow_reopen THEN
        IF EXISTS (SELECT 1 FROM instances i JOIN series se ON se.id = i.series_id
                   WHERE se.study_id = v_study AND se.series_instance_uid = p_series_uid
                     AND i.sop_instance_uid = p_sop_uid) THEN
            RETURN QUERY SELECT v_study, v_status, 'duplicate'::text;
        ELSE
            RETURN QUERY SELECT v_study, v_status, 'reopen'::text;
        END IF;
        RETURN;
    END IF;
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
    IF v_instance IS NULL THEN
        RETURN QUERY SELECT v_study, v_status, 'duplicate'::text;
        RETURN;
    END IF;
    UPDATE series SET instance_count = instance_count + 1 WHERE id = v_series;
    UPDATE studies SET instance_count = instance_count + 1, last_instance_at = p_now,
        ingest_status = 'receiving' WHERE id = v_study;
    RETURN QUERY SELECT v_study, v_status, 'inserted'::text;
END
$$;
"""

OLD_SIGNATURE = (
    "sidecar_index_instance(uuid, uuid, text, text, text, text, uuid, text, text, text, text, "
    "integer, uuid, text, text, text, integer, text, bigint, jsonb, text, timestamptz"
)


def upgrade() -> None:
    op.execute(f"DROP FUNCTION IF EXISTS {OLD_SIGNATURE})")
    op.execute(FUNCTION)


def downgrade() -> None:
    import importlib.util
    from pathlib import Path

    op.execute(f"DROP FUNCTION IF EXISTS {OLD_SIGNATURE}, boolean)")
    spec = importlib.util.spec_from_file_location(
        "index_instance_0003", Path(__file__).with_name("0003_index_instance_function.py"))
    assert spec is not None and spec.loader is not None
    previous = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(previous)
    op.execute(previous.FUNCTION)
