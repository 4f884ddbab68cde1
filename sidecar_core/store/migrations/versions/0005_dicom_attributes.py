"""Patient and study attributes per study; the DICOMweb series index (metadata + frame offsets)

Revision ID: 0005
Revises: 0004

`studies.dicom_attributes` holds the study's patient and study attributes as read at ingest
(keyword -> value, values as in `instances.attributes`; a PN value is a DICOM JSON PN object
{"Alphabetic", "Ideographic", "Phonetic"}) plus `ModalitiesInStudy`, the modalities of its
series in the order they arrived. `sidecar_index_instance()` takes the instance's study
attributes: a value already stored wins, a missing one is filled in.

`dicomweb_series_index` names the derived objects WADO-RS serves a series from (its DICOM JSON
metadata and the byte offsets of every frame), valid while the series' instance count equals
`instance_count` (received instances are never changed or removed).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
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
    p_source text, p_now timestamptz, p_allow_reopen boolean,
    p_study_attributes jsonb DEFAULT '{}'::jsonb)
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
        partial, ai_status, llm_status, review_status, handoff_status, dicom_attributes)
    VALUES (p_study_id, p_facility_id, p_accession, p_study_uid, p_study_modality,
        p_study_description, 'receiving', 0, p_now, 0, '', false, '', '', '', '',
        p_study_attributes)
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
    UPDATE studies s SET instance_count = s.instance_count + 1, last_instance_at = p_now,
        ingest_status = 'receiving',
        dicom_attributes = p_study_attributes || s.dicom_attributes || CASE
            WHEN p_series_modality = ''
              OR coalesce(s.dicom_attributes -> 'ModalitiesInStudy', '[]'::jsonb)
                 ? p_series_modality THEN '{}'::jsonb
            ELSE jsonb_build_object('ModalitiesInStudy',
                 coalesce(s.dicom_attributes -> 'ModalitiesInStudy', '[]'::jsonb)
                 || to_jsonb(p_series_modality)) END
        WHERE s.id = v_study;
    RETURN QUERY SELECT v_study, v_status, 'inserted'::text;
END
$$;
"""

OLD_SIGNATURE = (
    "sidecar_index_instance(uuid, uuid, text, text, text, text, uuid, text, text, text, text, "
    "integer, uuid, text, text, text, integer, text, bigint, jsonb, text, timestamptz, boolean"
)


def upgrade() -> None:
    op.add_column("studies", sa.Column(
        "dicom_attributes", postgresql.JSONB(astext_type=sa.Text()), nullable=False,
        server_default=sa.text("'{}'::jsonb")))
    op.create_table(
        "dicomweb_series_index",
        sa.Column("series_id", sa.Uuid(), nullable=False),
        sa.Column("instance_count", sa.Integer(), nullable=False),
        sa.Column("metadata_key", sa.String(length=128), nullable=False),
        sa.Column("frames_key", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.text("now()")),
        sa.ForeignKeyConstraint(["series_id"], ["series.id"],
                                name=op.f("fk_dicomweb_series_index_series_id_series")),
        sa.PrimaryKeyConstraint("series_id", name=op.f("pk_dicomweb_series_index")),
    )
    op.execute(f"DROP FUNCTION IF EXISTS {OLD_SIGNATURE})")
    op.execute(FUNCTION)
    op.execute(BACKFILL)


# Studies indexed before this migration: what the index already knew (no patient attributes).
BACKFILL = """
UPDATE studies s SET dicom_attributes = jsonb_strip_nulls(jsonb_build_object(
    'AccessionNumber', nullif(s.accession, ''),
    'StudyDescription', nullif(s.description, ''),
    'StudyDate', (SELECT i.attributes -> 'StudyDate' FROM instances i
                  WHERE i.study_id = s.id ORDER BY i.created_at LIMIT 1),
    'StudyTime', (SELECT i.attributes -> 'StudyTime' FROM instances i
                  WHERE i.study_id = s.id ORDER BY i.created_at LIMIT 1),
    'ModalitiesInStudy', (SELECT jsonb_agg(DISTINCT se.modality) FROM series se
                          WHERE se.study_id = s.id AND se.modality <> '')))
WHERE s.dicom_attributes = '{}'::jsonb
"""


def downgrade() -> None:
    op.execute(f"DROP FUNCTION IF EXISTS {OLD_SIGNATURE}, jsonb)")
    spec = importlib.util.spec_from_file_location(
        "index_instance_0004", Path(__file__).with_name("0004_index_instance_outcome.py"))
    assert spec is not None and spec.loader is not None
    previous = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(previous)
    op.execute(previous.FUNCTION)
    op.drop_table("dicomweb_series_index")
    op.drop_column("studies", "dicom_attributes")
