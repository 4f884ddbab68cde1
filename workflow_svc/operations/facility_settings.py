"""Facility settings, their one writer: one table of settings, each validated with a precise
error, applied together or not at all, and audited (`facility.created`, `facility.updated`) with
the operator, the door it came in by and what changed (secrets masked). `sidecar facility
add|set`, the admin API (through FacilityService) and FacilityService itself all call `save`.

A setting exists here only where its column exists in the store: the table below names the
column, its type and its rule, so a branch that adds a facility column adds a row here.

Outbound destinations (the handoff webhook, the LLM, the PACS) pass the egress policy
(sidecar_core.egress) here, before they are stored, and again when a job calls them. Secret
settings are stored sealed (sidecar_core.secret_box) and are never shown: a view says only
whether one is set.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from sidecar_core import audit
from sidecar_core.db import Database
from sidecar_core.dicom.dicomweb_scu import authorization_problem
from sidecar_core.egress import EgressPolicy, EgressRefused
from sidecar_core.errors import AlreadyExists, InvalidArgument, NotFound
from sidecar_core.messaging.subjects import Topology
from sidecar_core.secret_box import SecretBox, SecretKeyError, facility_context
from sidecar_core.security.dicom_tls import normalized_hosts
from sidecar_core.store.models import Facility

log = logging.getLogger(__name__)
_AE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE: no backslash, no control chars
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def _invalid(field: str, message: str) -> InvalidArgument:
    return InvalidArgument("INVALID_FACILITY_SETTING", f"{field}: {message}", field=field)


def _ae_title(field: str, value: Any) -> Any:
    if value in (None, ""):
        return None
    text = str(value).strip()
    if not _AE.match(text) or not text.strip():
        raise _invalid(field, "an AE title is 1 to 16 characters of the DICOM default "
                       "character set, no backslash")
    return text


def _bool(field: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise _invalid(field, "must be true or false")


def _seconds(low: float, high: float) -> Callable[[str, Any], float]:
    def check(field: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _invalid(field, "must be a number of seconds")
        if not low <= float(value) <= high:
            raise _invalid(field, f"must be between {low:g} and {high:g} seconds")
        return float(value)
    return check


def _models(known: list[str]) -> Callable[[str, Any], list[str] | None]:
    def check(field: str, value: Any) -> list[str] | None:
        if value is None or value == "all":
            return None
        if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
            raise _invalid(field, "a list of model names, or \"all\"")
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise _invalid(field, f"not in the model registry: {', '.join(unknown)} "
                           f"(known: {', '.join(known)})")
        return list(dict.fromkeys(value))
    return check


def _choice(*options: str) -> Callable[[str, Any], str]:
    def check(field: str, value: Any) -> str:
        if value not in options:
            raise _invalid(field, f"one of {', '.join(options)}")
        return str(value)
    return check


def _url(field: str, value: Any) -> str | None:
    if value in (None, ""):
        return None
    parts = urlsplit(str(value))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _invalid(field, "an http:// or https:// URL with a host")
    return str(value)


def _text(limit: int) -> Callable[[str, Any], str | None]:
    def check(field: str, value: Any) -> str | None:
        if value in (None, ""):
            return None
        if not isinstance(value, str) or len(value) > limit:
            raise _invalid(field, f"text of at most {limit} characters")
        return value
    return check


def _port(field: str, value: Any) -> int | None:
    if value in (None, ""):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value \
            or not 1 <= int(value) <= 65535:
        raise _invalid(field, "a TCP port, 1 to 65535")
    return int(value)


def _networks(field: str, value: Any) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or len(value) > 2000:
        raise _invalid(field, "a comma-separated list of addresses and CIDR networks, at most "
                       "2000 characters ('' = any address)")
    try:
        return normalized_hosts(value)
    except ValueError as exc:
        raise _invalid(field, str(exc)) from None


def _count(low: int, high: int) -> Callable[[str, Any], int | None]:
    def check(field: str, value: Any) -> int | None:
        if value in (None, ""):
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value \
                or not low <= int(value) <= high:
            raise _invalid(field, f"a whole number, {low} to {high} ('' = the default)")
        return int(value)
    return check


def _days(field: str, value: Any) -> int | None:
    if value in (None, ""):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value \
            or not 1 <= int(value) <= 36500:
        raise _invalid(field, "a whole number of days, 1 to 36500 ('' = kept forever)")
    return int(value)


def _authorization(field: str, value: Any) -> str | None:
    if value in (None, ""):
        return None
    problem = authorization_problem(value) if isinstance(value, str) else "text"
    if problem:
        raise _invalid(field, f"an Authorization header value: {problem}")
    return str(value)


@dataclass(frozen=True)
class Setting:
    column: str
    check: Callable[[str, Any], Any]
    secret: bool = False
    outbound: bool = False  # a URL the product calls: checked by the egress policy


def settings_table(known_models: list[str]) -> dict[str, Setting]:
    """API name → column and rule, for every setting whose column exists in the store."""
    table = {
        "ae_title": Setting("ae_title", _ae_title),
        "shadow_mode": Setting("shadow_mode", _bool),
        "quiet_period_s": Setting("quiet_period_s", _seconds(0, 3600)),
        "enabled_models": Setting("enabled_models", _models(known_models)),
        # Added with the speed work (completion on association release).
        "completion_mode": Setting("completion_mode", _choice("quiet", "association",
                                                              "explicit")),
        "association_settle_s": Setting("association_settle_s", _seconds(0, 60)),
        # Added with the report loop (HL7, handoff, LLM, export to the PACS).
        "hl7_sending_facility": Setting("hl7_sending_facility", _text(64)),
        "handoff_url": Setting("handoff_url", _url, outbound=True),
        "handoff_secret": Setting("handoff_secret", _text(512), secret=True),
        "llm_base_url": Setting("llm_base_url", _url, outbound=True),
        "llm_model": Setting("llm_model", _text(128)),
        "llm_api_key": Setting("llm_api_key", _text(512), secret=True),
        "llm_timeout_s": Setting("llm_timeout_s", _seconds(1, 600)),
        "pacs_ae_title": Setting("pacs_ae_title", _ae_title),
        "pacs_host": Setting("pacs_host", _text(255)),
        "pacs_port": Setting("pacs_port", _port),
        "export_rejected": Setting("export_rejected", _choice("omit", "include")),
        # Added with DICOM TLS (issue 20): the rules for the facility's DICOM senders on both
        # DICOM ports, and DICOM TLS for the export to its PACS.
        "dicom_require_client_cert": Setting("dicom_require_client_cert", _bool),
        "dicom_allowed_hosts": Setting("dicom_allowed_hosts", _networks),
        "pacs_tls": Setting("pacs_tls", _bool),
        # Added with retention (issue 24): days after a study's final state until its objects
        # are deleted, and its report text and drafts (None: the same as retention_days).
        "retention_days": Setting("retention_days", _days),
        "report_retention_days": Setting("report_retention_days", _days),
        # Added with the assistant's clinical context (issue 23): how far back (days before the
        # study) and how many of the patient's prior reports a draft or chat may use (None: 3
        # years, 5; 0 reports = none; at most 20, each costs prompt tokens).
        "prior_report_lookback_days": Setting("prior_report_lookback_days", _count(1, 36500)),
        "prior_report_max": Setting("prior_report_max", _count(0, 20)),
        # Added with priors from a DICOMweb PACS (issue 23, QIDO-RS / WADO-RS): its base URL
        # (asked instead of the DIMSE PACS when set) and its Authorization header value, sealed.
        "pacs_dicomweb_url": Setting("pacs_dicomweb_url", _url, outbound=True),
        "pacs_dicomweb_auth": Setting("pacs_dicomweb_auth", _authorization, secret=True),
    }
    columns = set(Facility.__table__.columns.keys())
    return {name: s for name, s in table.items() if s.column in columns}


def view(row: Facility, table: dict[str, Setting]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": row.name}
    for name, setting in table.items():
        value = getattr(row, setting.column)
        if setting.secret:
            value = bool(value)  # only whether one is set
        elif name == "enabled_models":
            value = list(value) if value is not None else "all"
        out[name] = value
    return out


def _validated(table: dict[str, Setting], given: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(given) - set(table))
    if unknown:
        raise InvalidArgument("UNKNOWN_FACILITY_SETTING",
                              f"unknown setting(s): {', '.join(unknown)} (known: "
                              f"{', '.join(sorted(table))})", field=unknown[0])
    return {table[k].column: table[k].check(k, v) for k, v in given.items()}


async def list_facilities(db: Database, table: dict[str, Setting]) -> list[dict[str, Any]]:
    async with db.read() as s:
        rows = (await s.execute(select(Facility).order_by(Facility.name))).scalars().all()
    return [view(r, table) for r in rows]


async def _check_outbound(db: Database, table: dict[str, Setting], name: str,
                          values: dict[str, Any], egress: EgressPolicy) -> None:
    """The egress policy on the destinations being saved (INVALID_FACILITY_SETTING)."""
    for key, setting in table.items():
        url = values.get(setting.column)
        if setting.outbound and url:
            try:
                await egress.check_url(url)
            except EgressRefused as exc:
                raise _invalid(key, exc.message) from None
    if values.get("pacs_host") or values.get("pacs_port") or "pacs_tls" in values:
        host, port, tls = values.get("pacs_host"), values.get("pacs_port"), values.get("pacs_tls")
        if host is None or port is None or tls is None:
            async with db.read() as s:
                row = (await s.execute(select(Facility.pacs_host, Facility.pacs_port,
                                              Facility.pacs_tls)
                                       .where(Facility.name == name))).first()
            host = host if host is not None else (row[0] if row else None)
            port = port if port is not None else (row[1] if row else None)
            tls = tls if tls is not None else (bool(row[2]) if row else False)
        if host and port:
            try:  # over DICOM TLS (pacs_tls), or listed in SIDECAR_EGRESS_ALLOW
                await egress.check_dicom(host, int(port), tls=bool(tls))
            except EgressRefused as exc:
                raise _invalid("pacs_host", exc.message) from None


def _seal(table: dict[str, Setting], name: str, values: dict[str, Any],
          box: SecretBox | None) -> dict[str, Any]:
    secrets = {t.column for t in table.values() if t.secret}
    if box is None and any(values.get(c) for c in secrets):
        raise InvalidArgument("SECRET_KEY_MISSING", "no secret key is configured to store a "
                              "secret setting (SIDECAR_SECRET_KEY or DATA_DIR/keys)")
    return {c: (box.seal(v, facility_context(name, c)) if c in secrets and v and box else v)
            for c, v in values.items()}


async def seal_plaintext(db: Database, box: SecretBox) -> int:
    """Seals every secret setting still stored in plaintext (a database from before sealing)
    or sealed with an earlier key (after a rotation); returns how many. Safe to run from
    several processes at once: a value is replaced only if it is still the one read."""
    columns = [c for c in ("handoff_secret", "llm_api_key", "pacs_dicomweb_auth")
               if c in Facility.__table__.columns]
    done = 0
    async with db.unit_of_work() as s:
        rows = (await s.execute(select(Facility.name, *[getattr(Facility, c) for c in columns]))
                ).all()
        for row in rows:
            for i, column in enumerate(columns, start=1):
                value = row[i]
                if not box.needs_sealing(value):
                    continue
                context = facility_context(row[0], column)
                try:
                    sealed = box.seal(box.open(value, context), context)
                except SecretKeyError as exc:
                    log.error("secret setting left as it is: %s", exc)
                    continue
                result = await s.execute(update(Facility).where(
                    Facility.name == row[0], getattr(Facility, column) == value)
                    .values({column: sealed}))
                done += result.rowcount or 0  # type: ignore[attr-defined]
    return done


async def save(db: Database, topology: Topology, table: dict[str, Setting], name: str,
               given: dict[str, Any], operator: str, create: bool, *, via: str,
               egress: EgressPolicy | None = None, box: SecretBox | None = None
               ) -> dict[str, Any]:
    """Creates (`create`) or changes facility `name`; every setting is checked first. `operator`
    names who asked, `via` the door (`cli`, `api`); both go into the audit event. Outbound
    destinations must pass `egress` (no allow-list when None); secret settings are sealed with
    `box` (refused when None)."""
    operator = operator.strip()[:64]
    if not operator:
        raise InvalidArgument("OPERATOR_REQUIRED", "name the operator")
    if create and not _NAME.match(name):
        raise InvalidArgument("INVALID_FACILITY_NAME", "a facility name is 1 to 64 of a-z, "
                              "0-9, '_', '.', '-', starting with a letter or digit",
                              field="name")
    values = _validated(table, given)
    await _check_outbound(db, table, name, values, egress or EgressPolicy())
    values = _seal(table, name, values, box)
    changed = {k: ("(set)" if table[k].secret and v else v) for k, v in given.items()}
    try:
        async with db.unit_of_work() as s:
            if create:
                await s.execute(insert(Facility).values(name=name, **values))
            elif values:
                await s.execute(update(Facility).where(Facility.name == name).values(**values))
            row = (await s.execute(select(Facility).where(Facility.name == name))
                   ).scalar_one_or_none()
            if row is None:
                raise NotFound("FACILITY_NOT_FOUND", f"no facility {name!r}", facility=name)
            await audit.record(s, topology, "facility.created" if create else "facility.updated",
                               "operator:" + operator, audit.StudyRef(facility=name),
                               context={"operator": operator, "via": via,
                                        "settings": changed})
            result = view(row, table)
    except IntegrityError as exc:
        text = str(exc.orig)
        if "hl7_sending_facility" in text:
            raise AlreadyExists("HL7_SENDING_FACILITY_TAKEN", "hl7_sending_facility: "
                                f"{values.get('hl7_sending_facility')!r} belongs to another "
                                "facility", field="hl7_sending_facility") from exc
        if "ae_title" in text:
            raise AlreadyExists("AE_TITLE_TAKEN", f"ae_title: {values.get('ae_title')!r} "
                                "belongs to another facility", field="ae_title") from exc
        raise AlreadyExists("FACILITY_EXISTS", f"a facility named {name!r} exists",
                            field="name") from exc
    return result
