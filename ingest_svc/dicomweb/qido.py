"""QIDO-RS over the metadata index: parse matching keys, query studies/series/instances as JSON.

Matching keys (keyword or tag), by level; a key of a lower level than the query is refused:
  study     StudyInstanceUID (UID list), AccessionNumber (wildcard), StudyDate (single date or
            range A-B, A-, -B), StudyDescription (wildcard), ModalitiesInStudy (list),
            PatientName and ReferringPhysicianName (person name), PatientID, IssuerOfPatientID,
            StudyID (wildcard), PatientBirthDate (date or range), PatientSex (list)
  series    SeriesInstanceUID (UID list), Modality (list), SeriesNumber, SeriesDescription
            (wildcard), BodyPartExamined (wildcard)
  instance  SOPInstanceUID (UID list), SOPClassUID (UID list), InstanceNumber
Anything else is QueryError UNSUPPORTED_MATCHING_KEY rather than silently ignored: an ignored
patient filter would return other patients' studies. `*` and `?` are wildcards; matching is
case-sensitive except for person names, which match any component group case-insensitively;
with fuzzy matching a person name value also matches the start of any name component ("joh"
finds "Doe^John"). Patient and study attributes come from `studies.dicom_attributes`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, func, or_, select
from sqlalchemy.orm import aliased

from sidecar_core.db import Database
from sidecar_core.dicom import dicom_json
from sidecar_core.dicom.parse import INDEX_KEYWORDS, STUDY_KEYWORDS
from sidecar_core.dicom.uids import uid_problem
from sidecar_core.store.models import Facility, Instance, Series, Study

LEVELS = ("study", "series", "instance")
MAX_LIMIT = 1000
_DATE = re.compile(r"^(\d{8})?(-)?(\d{8})?$")
# keyword -> (level, kind)
KEYS: dict[str, tuple[str, str]] = {
    "StudyInstanceUID": ("study", "uids"), "AccessionNumber": ("study", "wildcard"),
    "StudyDate": ("study", "date"), "StudyDescription": ("study", "wildcard"),
    "ModalitiesInStudy": ("study", "list"), "PatientName": ("study", "pn"),
    "ReferringPhysicianName": ("study", "pn"), "PatientID": ("study", "wildcard"),
    "IssuerOfPatientID": ("study", "wildcard"), "StudyID": ("study", "wildcard"),
    "PatientBirthDate": ("study", "date"), "PatientSex": ("study", "list"),
    "SeriesInstanceUID": ("series", "uids"), "Modality": ("series", "list"),
    "SeriesNumber": ("series", "int"), "SeriesDescription": ("series", "wildcard"),
    "BodyPartExamined": ("series", "wildcard"),
    "SOPInstanceUID": ("instance", "uids"), "SOPClassUID": ("instance", "uids"),
    "InstanceNumber": ("instance", "int"),
}


_INCLUDABLE = frozenset(INDEX_KEYWORDS + STUDY_KEYWORDS)


class QueryError(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class Query:
    level: str
    # None: every facility (an explicit claim of the user's token); empty: none.
    facilities: tuple[str, ...] | None = ()
    matches: list[tuple[str, str]] = field(default_factory=list)
    include: tuple[str, ...] = ()
    limit: int = MAX_LIMIT
    offset: int = 0
    fuzzy: bool = False


def parse_query(level: str, params: list[tuple[str, str]], include_fields: list[str],
                facilities: list[str] | tuple[str, ...] | None = (), page_size: int = 0,
                page_token: str = "", study_instance_uid: str = "",
                series_instance_uid: str = "", fuzzy: bool = False) -> Query:
    """Validates everything a query names; raises QueryError with an UPPER_SNAKE reason."""
    if level not in LEVELS:
        raise QueryError("INVALID_LEVEL", f"level must be one of {LEVELS}")
    query = Query(level, None if facilities is None else tuple(facilities), fuzzy=fuzzy)
    for key, value in [("StudyInstanceUID", study_instance_uid),
                       ("SeriesInstanceUID", series_instance_uid), *params]:
        keyword = dicom_json.keyword_of(key)
        if keyword is None:
            raise QueryError("UNKNOWN_ATTRIBUTE", f"{key!r} is neither a DICOM keyword nor a tag")
        if not value:
            continue  # universal matching
        if keyword not in KEYS:
            raise QueryError("UNSUPPORTED_MATCHING_KEY",
                             f"matching on {keyword} is not supported")
        key_level, kind = KEYS[keyword]
        if LEVELS.index(key_level) > LEVELS.index(level):
            raise QueryError("MATCHING_KEY_BELOW_LEVEL",
                             f"{keyword} is a {key_level}-level key; this is a {level} query")
        _check(keyword, kind, value)
        query.matches.append((keyword, value))
    for item in (f.strip() for entry in include_fields for f in entry.split(",")):
        if item.lower() == "all":
            query.include = tuple(dict.fromkeys(INDEX_KEYWORDS + STUDY_KEYWORDS))
        elif item:
            keyword = dicom_json.keyword_of(item)
            if keyword is None:
                raise QueryError("UNKNOWN_ATTRIBUTE", f"includefield {item!r} is not a DICOM "
                                 "keyword or tag")
            if keyword in _INCLUDABLE and keyword not in query.include:
                query.include += (keyword,)
    if page_size < 0:
        raise QueryError("INVALID_LIMIT", "limit must not be negative")
    query.limit = min(page_size or MAX_LIMIT, MAX_LIMIT)
    if page_token and not page_token.isdigit():
        raise QueryError("INVALID_PAGE_TOKEN", "page_token/offset must be a whole number")
    query.offset = int(page_token or 0)
    return query


def _check(keyword: str, kind: str, value: str) -> None:
    if kind == "uids":
        for uid in _items(value):
            if uid_problem(uid.strip()):
                raise QueryError("INVALID_UID", f"{keyword} {uid[:80]!r} {uid_problem(uid)}")
    elif kind == "date":
        m = _DATE.match(value)
        if not m or not (m.group(1) or m.group(3)) or (m.group(3) and not m.group(2)):
            raise QueryError("INVALID_DATE", f"{keyword} must be YYYYMMDD or a range A-B, A-, -B")
    elif kind == "int" and not value.lstrip("-").isdigit():
        raise QueryError("INVALID_NUMBER", f"{keyword} must be a whole number")


def _like(column: Any, value: str) -> ColumnElement[bool]:
    if "*" not in value and "?" not in value:
        return column == value
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(escaped.replace("*", "%").replace("?", "_"), escape="\\")


_STUDY_ATTRIBUTE_KEYS = frozenset({"PatientID", "IssuerOfPatientID", "StudyID", "PatientSex"})


def _first_attributes(study_col: Any, series_col: Any = None) -> Any:
    """Attributes of the first instance received (study/series-level values live there)."""
    first = aliased(Instance)
    q = select(first.attributes).where(first.study_id == study_col)
    if series_col is not None:
        q = q.where(first.series_id == series_col)
    return q.order_by(first.created_at, first.id).limit(1).scalar_subquery()


def _pattern(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _person_name(keyword: str, value: str, fuzzy: bool) -> ColumnElement[bool]:
    """Any component group of the (first) name matches; fuzzy: also any component's start."""
    attr = Study.dicom_attributes[keyword]
    groups = [func.coalesce(attr[g].astext, attr[0][g].astext, "")
              for g in ("Alphabetic", "Ideographic", "Phonetic")]
    pattern = _pattern(value)
    patterns = [pattern]
    if fuzzy:
        patterns = [pattern + "%", "%^" + pattern + "%", "% " + pattern + "%"]
    return or_(*(g.ilike(p, escape="\\") for g in groups for p in patterns))


def _items(value: str) -> list[str]:
    """A list value: items separated by commas or backslashes (OHIF sends UIDs as a\\b)."""
    return [v.strip() for v in re.split(r"[,\\]", value) if v.strip()]


def _condition(keyword: str, value: str, fuzzy: bool = False) -> ColumnElement[bool]:
    values = _items(value)
    if KEYS[keyword][1] == "date":
        low, _, high = value.partition("-") if "-" in value else (value, "", value)
        date = Study.dicom_attributes[keyword].astext
        return and_(date.is_not(None), *([date >= low] if low else []),
                    *([date <= high] if high else []))
    if KEYS[keyword][1] == "pn":
        return _person_name(keyword, value, fuzzy)
    if keyword in _STUDY_ATTRIBUTE_KEYS:
        column = Study.dicom_attributes[keyword].astext
        return column.in_(values) if KEYS[keyword][1] == "list" else _like(column, value)
    if keyword == "ModalitiesInStudy":
        other_series = aliased(Series)
        return exists().where(other_series.study_id == Study.id,
                              other_series.modality.in_(values))
    column = {
        "StudyInstanceUID": Study.study_instance_uid, "AccessionNumber": Study.accession,
        "StudyDescription": Study.description, "SeriesInstanceUID": Series.series_instance_uid,
        "Modality": Series.modality, "SeriesNumber": Series.series_number,
        "SeriesDescription": Series.description, "BodyPartExamined": Series.body_part,
        "SOPInstanceUID": Instance.sop_instance_uid, "SOPClassUID": Instance.sop_class_uid,
        "InstanceNumber": Instance.instance_number,
    }[keyword]
    kind = KEYS[keyword][1]
    if kind == "int":
        return column == int(value)
    if kind in ("uids", "list"):
        return column.in_(values)
    return _like(column, value)


def _statement(query: Query) -> Select[Any]:
    if query.level == "study":
        n_series = select(func.count()).where(Series.study_id == Study.id).scalar_subquery()
        modalities = select(func.array_agg(func.distinct(Series.modality))).where(
            Series.study_id == Study.id).scalar_subquery()
        stmt = select(Study.study_instance_uid, Study.accession, Study.description,
                      Study.instance_count, n_series, modalities, Study.dicom_attributes,
                      _first_attributes(Study.id))
        order = [Study.created_at, Study.id]
    elif query.level == "series":
        stmt = select(Study.study_instance_uid, Series.series_instance_uid, Series.modality,
                      Series.series_number, Series.description, Series.body_part,
                      Series.instance_count, _first_attributes(Study.id, Series.id)
                      ).join(Series, Series.study_id == Study.id)
        order = [Study.created_at, Series.series_number, Series.created_at, Series.id]
    else:
        stmt = select(Study.study_instance_uid, Series.series_instance_uid,
                      Instance.sop_class_uid, Instance.sop_instance_uid,
                      Instance.instance_number, Instance.transfer_syntax_uid,
                      Instance.attributes).join(Series, Series.study_id == Study.id).join(
            Instance, Instance.series_id == Series.id)
        order = [Study.created_at, Series.series_number, Instance.instance_number,
                 Instance.created_at, Instance.id]
    if query.facilities is not None:
        stmt = stmt.join(Facility, Facility.id == Study.facility_id).where(
            Facility.name.in_(query.facilities))
    stmt = stmt.where(*(_condition(k, v, query.fuzzy) for k, v in query.matches))
    return stmt.order_by(*order).offset(query.offset).limit(query.limit + 1)


def _to_json(query: Query, row: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = row[-1] or {}
    values: dict[str, Any]
    if query.level == "study":
        uid, accession, description, n, n_series, modalities, study_attrs, _ = row
        study_attrs = study_attrs or {}
        values = {"StudyInstanceUID": uid, "AccessionNumber": accession,
                  "StudyDescription": description, "NumberOfStudyRelatedInstances": n,
                  "NumberOfStudyRelatedSeries": n_series,
                  "ModalitiesInStudy": sorted(m for m in modalities or [] if m),
                  "StudyDate": attrs.get("StudyDate"), "StudyTime": attrs.get("StudyTime"),
                  **{k: study_attrs.get(k) for k in _STUDY_RESULT_KEYS}}
        attrs = {**attrs, **study_attrs}
    elif query.level == "series":
        study, uid, modality, number, description, body_part, n, _ = row
        values = {"StudyInstanceUID": study, "SeriesInstanceUID": uid, "Modality": modality,
                  "SeriesNumber": number, "SeriesDescription": description,
                  "BodyPartExamined": body_part, "NumberOfSeriesRelatedInstances": n,
                  "SeriesDate": attrs.get("SeriesDate")}
    else:
        study, series, sop_class, sop, number, syntax, _ = row
        values = {"StudyInstanceUID": study, "SeriesInstanceUID": series,
                  "SOPClassUID": sop_class, "SOPInstanceUID": sop, "InstanceNumber": number,
                  "AvailableTransferSyntaxUID": syntax, "Rows": attrs.get("Rows"),
                  "Columns": attrs.get("Columns"), "NumberOfFrames": attrs.get("NumberOfFrames")}
    for keyword in query.include:
        values.setdefault(keyword, attrs.get(keyword))
    return dicom_json.dataset(values)


_STUDY_RESULT_KEYS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                      "ReferringPhysicianName", "StudyID")


async def search(db: Database, query: Query) -> tuple[list[dict[str, Any]], str]:
    """The matching objects as DICOM JSON and the next page token ("" on the last page)."""
    async with db.read() as session:
        rows = (await session.execute(_statement(query))).all()
    more = len(rows) > query.limit
    results = [_to_json(query, row) for row in rows[:query.limit]]
    return results, str(query.offset + query.limit) if more else ""
