"""Review analytics, computed at query time from the stored review events, findings, state
transitions and audit events (never from counters that can drift).

Per AI finding the latest decisive review event decides its outcome: `reject` → rejected,
`ignore` → ignored, otherwise accepted — or edited when any event of the finding changed its
geometry, wording or label. Draft inclusion is not a verdict and is left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text

from sidecar_core.db import Database

DECISIVE = ("accept", "reject", "edit_geometry", "edit_text", "relabel", "ignore")
EDITS = ("edit_geometry", "edit_text", "relabel")
DIMENSIONS = ("model", "modality", "facility", "label")
OUTCOMES = ("accepted", "edited", "rejected", "ignored")

_SCOPE = """
  (CAST(:facility AS text) = '' OR fac.name = :facility)
  AND (CAST(:since AS timestamptz) IS NULL OR s.created_at >= :since)
  AND (CAST(:until AS timestamptz) IS NULL OR s.created_at < :until)
"""

_OUTCOMES = f"""
WITH decisive AS (
  SELECT finding_id, action,
         row_number() OVER (PARTITION BY finding_id ORDER BY at DESC, version DESC) AS rn,
         bool_or(action IN ('edit_geometry', 'edit_text', 'relabel'))
           OVER (PARTITION BY finding_id) AS edited
  FROM review_events
  WHERE finding_id IS NOT NULL AND action IN ('accept', 'reject', 'edit_geometry', 'edit_text',
                                              'relabel', 'ignore')
)
SELECT f.model_name, f.model_version, s.modality, fac.name AS facility, f.label,
       CASE WHEN d.action = 'reject' THEN 'rejected'
            WHEN d.action = 'ignore' THEN 'ignored'
            WHEN d.edited THEN 'edited'
            ELSE 'accepted' END AS outcome
FROM decisive d
JOIN findings f ON f.id = d.finding_id
JOIN studies s ON s.id = f.study_id
JOIN facilities fac ON fac.id = s.facility_id
WHERE d.rn = 1 AND f.origin = 'ai' AND {_SCOPE}
"""

_ADDED = f"""
SELECT fac.name AS facility, s.modality, f.label, count(*) AS n
FROM findings f JOIN studies s ON s.id = f.study_id JOIN facilities fac ON fac.id = s.facility_id
WHERE f.origin = 'radiologist' AND {_SCOPE}
GROUP BY fac.name, s.modality, f.label ORDER BY fac.name, s.modality, f.label
"""

# First time each study reached each state, and its review completion.
_TURNAROUND = f"""
WITH firsts AS (
  SELECT st.study_id, st.to_state, min(st.at) AS at
  FROM state_transitions st GROUP BY st.study_id, st.to_state
), completed AS (
  SELECT study_id, min(at) AS at FROM audit_events WHERE type = 'review.completed'
  GROUP BY study_id
), spans AS (
  SELECT s.id,
    (SELECT at FROM firsts WHERE study_id = s.id AND to_state = 'received') - s.created_at
      AS ingest,
    (SELECT min(at) FROM firsts WHERE study_id = s.id AND to_state IN ('ai_complete',
                                                                       'ai_failed'))
      - (SELECT at FROM firsts WHERE study_id = s.id AND to_state = 'processed') AS inference,
    (SELECT at FROM firsts WHERE study_id = s.id AND to_state = 'assigned')
      - (SELECT at FROM firsts WHERE study_id = s.id AND to_state = 'ready_for_review')
      AS assignment,
    (SELECT at FROM completed WHERE study_id = s.id)
      - (SELECT at FROM firsts WHERE study_id = s.id AND to_state = 'in_review') AS review,
    (SELECT at FROM firsts WHERE study_id = s.id AND to_state = 'legacy_report_completed')
      - (SELECT at FROM firsts WHERE study_id = s.id AND to_state = 'ready_for_review')
      AS legacy_report
  FROM studies s JOIN facilities fac ON fac.id = s.facility_id
  WHERE {_SCOPE}
)
SELECT stage, count(seconds) AS n,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) AS p50,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY seconds) AS p90,
       avg(seconds) AS mean
FROM spans, LATERAL (VALUES
  ('ingest', extract(epoch FROM ingest)), ('inference', extract(epoch FROM inference)),
  ('assignment', extract(epoch FROM assignment)), ('review', extract(epoch FROM review)),
  ('legacy_report', extract(epoch FROM legacy_report))) AS v(stage, seconds)
WHERE seconds IS NOT NULL AND seconds >= 0
GROUP BY stage
"""

_SHADOW = f"""
SELECT fac.name AS facility, count(DISTINCT s.id) AS studies,
       count(DISTINCT f.study_id) AS with_findings, count(f.id) AS findings,
       coalesce(avg(f.confidence), 0) AS mean_confidence,
       count(DISTINCT s.id) FILTER (WHERE EXISTS (
         SELECT 1 FROM state_transitions st WHERE st.study_id = s.id
         AND st.to_state = 'legacy_report_completed')) AS reported
FROM studies s
JOIN facilities fac ON fac.id = s.facility_id
LEFT JOIN findings f ON f.study_id = s.id AND f.origin = 'ai' AND NOT f.visible
WHERE fac.shadow_mode AND s.eligible AND {_SCOPE}
GROUP BY fac.name ORDER BY fac.name
"""

STAGES = ("ingest", "inference", "assignment", "review", "legacy_report")


@dataclass
class Rates:
    dimension: str
    value: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))

    @property
    def reviewed(self) -> int:
        return sum(self.counts.values())


@dataclass
class Analytics:
    rates: list[Rates]
    turnaround: list[dict[str, Any]]
    added: list[dict[str, Any]]
    shadow: list[dict[str, Any]]


async def review_analytics(db: Database, facility: str = "", since: datetime | None = None,
                           until: datetime | None = None) -> Analytics:
    params = {"facility": facility, "since": since, "until": until}
    async with db.read() as s:
        outcomes = (await s.execute(text(_OUTCOMES), params)).mappings().all()
        added = (await s.execute(text(_ADDED), params)).mappings().all()
        turnaround = {r["stage"]: r for r in
                      (await s.execute(text(_TURNAROUND), params)).mappings().all()}
        shadow = (await s.execute(text(_SHADOW), params)).mappings().all()
    groups: dict[tuple[str, str], Rates] = {}
    for row in outcomes:
        values = {"model": f"{row['model_name']} {row['model_version']}".strip(),
                  "modality": row["modality"] or "-", "facility": row["facility"],
                  "label": row["label"]}
        for dimension in DIMENSIONS:
            key = (dimension, values[dimension])
            groups.setdefault(key, Rates(*key)).counts[row["outcome"]] += 1
    order = {d: i for i, d in enumerate(DIMENSIONS)}
    rates = sorted(groups.values(), key=lambda r: (order[r.dimension], r.value))
    stages = []
    for stage in STAGES:
        r = turnaround.get(stage)
        stages.append({"stage": stage, "studies": int(r["n"]) if r else 0,
                       "p50_s": float(r["p50"] or 0) if r else 0.0,
                       "p90_s": float(r["p90"] or 0) if r else 0.0,
                       "mean_s": float(r["mean"] or 0) if r else 0.0})
    return Analytics(
        rates=rates, turnaround=stages,
        added=[{"facility": r["facility"], "modality": r["modality"] or "-",
                "label": r["label"], "count": int(r["n"])} for r in added],
        shadow=[{"facility": r["facility"], "studies": int(r["studies"]),
                 "studies_with_findings": int(r["with_findings"]),
                 "findings": int(r["findings"]),
                 "mean_confidence": float(r["mean_confidence"] or 0),
                 "studies_reported": int(r["reported"])} for r in shadow])
