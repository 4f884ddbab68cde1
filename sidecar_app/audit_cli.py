"""`sidecar audit verify`: walks the audit's hash chains and names the first event that does
not match; `sidecar audit access`: the access trail for the privacy office, filtered by patient,
study, user or time, itself audited (docs/audit.md)."""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sidecar_app.admin_db import database_url
from sidecar_app.errors import UserError, database_error


def add_parsers(sub: argparse._SubParsersAction,  # type: ignore[type-arg]
                db_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    aud = sub.add_parser("audit", help="audit tools: verify the hash chains").add_subparsers(
        dest="action", required=True)
    p = aud.add_parser("verify", help="walk every audit chain; exit 1 naming the first event "
                       "whose hash, position or link does not match")
    db_flags(p)
    a = aud.add_parser("access", help="who read what: PHI access events (phi.*), logins and "
                       "logouts, review actions; this read is itself audited")
    a.add_argument("--patient", help="a patient id (PatientID, or PatientID^^^FACILITY)")
    a.add_argument("--study", help="a Study Instance UID or a study id")
    a.add_argument("--user", help="a user name")
    a.add_argument("--session", help="a session id (the session_id of the events)")
    a.add_argument("--since", help="ISO date or time (UTC), or an age: 30m, 12h, 7d")
    a.add_argument("--limit", type=int, default=1000, help="most events shown (default 1000)")
    a.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    a.add_argument("--operator", help="who reads, for the audit (default: your login name)")
    db_flags(a)


def run_audit(args: argparse.Namespace) -> int:
    if args.action == "access":
        return run_access(args)
    import psycopg

    from sidecar_core import audit_chain

    url = database_url(args, must_exist=True)
    try:
        with psycopg.connect(url) as conn:
            missing = conn.execute(
                "SELECT to_regclass('audit_chain_heads') IS NULL").fetchone()
            if missing is None or missing[0]:
                raise UserError("this database has no audit chain (run `sidecar migrate`)")
            conn.rollback()
            verdict = audit_chain.verify(conn)
    except psycopg.OperationalError as exc:
        raise (database_error(exc, url) or exc) from None
    print(verdict.line())
    return 0 if verdict.ok else 1


# What the access trail shows: the PHI access events, the session's start and end, and what
# the user did to the studies (decisions, claims, drafts).
TRAIL_TYPES = ("phi.%", "auth.login_%", "auth.logout", "review.%", "draft.%")
_AGE = re.compile(r"(\d{1,6})([mhd])\Z")
MAX_LIMIT = 100000


def since_of(value: str | None, now: datetime | None = None) -> datetime | None:
    """--since: an ISO date or time (UTC unless it says), or an age (30m, 12h, 7d)."""
    if not value:
        return None
    age = _AGE.match(value.strip())
    if age:
        unit = {"m": "minutes", "h": "hours", "d": "days"}[age.group(2)]
        return (now or datetime.now(UTC)) - timedelta(**{unit: int(age.group(1))})
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise UserError(f"--since must be an ISO date or time or an age like 12h, not "
                        f"{value[:40]!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def access_query(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The SQL of `audit access` and its parameters (every filter a bound parameter)."""
    where = ["(" + " OR ".join(f"e.type LIKE %(t{i})s" for i in range(len(TRAIL_TYPES))) + ")"]
    params: dict[str, Any] = {f"t{i}": t for i, t in enumerate(TRAIL_TYPES)}
    if args.patient:
        params["patient"] = args.patient
        where.append(
            "(e.context->>'patient_ref' = %(patient)s"
            " OR split_part(e.context->>'patient_ref', '^^^', 1) = %(patient)s"
            " OR EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof("
            "e.context->'studies') = 'array' THEN e.context->'studies' ELSE '[]' END) x"
            " WHERE x->>'patient_ref' = %(patient)s"
            " OR split_part(x->>'patient_ref', '^^^', 1) = %(patient)s)"
            " OR e.study_id IN (SELECT s.id FROM studies s JOIN facilities f"
            " ON f.id = s.facility_id WHERE s.dicom_attributes->>'PatientID' = %(patient)s"
            " OR (s.dicom_attributes->>'PatientID') || '^^^' || f.name = %(patient)s))")
    if args.study:
        params["study"] = args.study
        where.append(
            "(e.study_instance_uid = %(study)s OR e.study_id::text = %(study)s"
            " OR e.context->'studies' @> jsonb_build_array(jsonb_build_object("
            "'study_instance_uid', %(study)s::text))"
            " OR e.context->'studies' @> jsonb_build_array(jsonb_build_object("
            "'study_id', %(study)s::text)))")
    if args.user:
        params["user"] = args.user
        params["actor"] = f"user:{args.user}"
        where.append("(e.actor = %(actor)s OR e.context->>'user' = %(user)s"
                     " OR e.context->>'username' = %(user)s)")
    if args.session:
        params["session"] = args.session
        where.append("(e.context->>'session_id' = %(session)s"
                     " OR e.context->>'jti' = %(session)s)")
    since = since_of(args.since)
    if since is not None:
        params["since"] = since
        where.append("e.at >= %(since)s")
    params["limit"] = max(1, min(int(args.limit), MAX_LIMIT))
    sql = ("SELECT e.at, e.type, e.actor, e.facility, e.accession, e.study_instance_uid, "
           "e.study_id, e.context FROM audit_events e WHERE " + " AND ".join(where)
           + " ORDER BY e.at, e.seq LIMIT %(limit)s")
    return sql, params


def trail_row(row: Sequence[Any]) -> dict[str, Any]:
    """One event of the trail as the privacy office reads it."""
    at, kind, actor, facility, accession, uid, study_id, ctx = row
    ctx = ctx or {}
    studies = ctx.get("studies") or []
    if accession or uid:
        study = f"{accession or uid}@{facility}" if facility else (accession or uid)
    elif studies:
        study = f"{len(studies)} studies"
    else:
        study = ""
    patients = sorted({s.get("patient_ref", "") for s in studies} - {""})
    patient = ctx.get("patient_ref") or (", ".join(patients[:3])
                                        + (" …" if len(patients) > 3 else ""))
    user = ctx.get("user") or ctx.get("username") or actor.removeprefix("user:")
    what = ctx.get("what") or kind.split(".", 1)[-1]
    outcome = ctx.get("outcome") or ""
    if ctx.get("status"):
        outcome = f"{outcome} {ctx['status']}".strip()
    if ctx.get("reason"):
        outcome += f" {ctx['reason']}"
    return {"at": at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "type": kind, "user": user, "role": ctx.get("role", ""),
            "session": ctx.get("session_id") or ctx.get("jti") or "",
            "from": ctx.get("client_address") or ctx.get("address") or "",
            "what": what, "study": study, "study_id": str(study_id or ""),
            "study_instance_uid": uid or "", "patient": patient,
            "series": len(ctx.get("series") or []), "count": ctx.get("count", ""),
            "outcome": outcome, "route": ctx.get("route", "")}


def table(rows: list[dict[str, Any]]) -> str:
    cols = [("at", 24), ("type", 20), ("user", 14), ("role", 11), ("session", 8), ("from", 15),
            ("what", 16), ("study", 30), ("patient", 30), ("count", 5), ("outcome", 0)]
    lines = ["  ".join(name.upper().ljust(width) for name, width in cols).rstrip()]
    for r in rows:
        cells = []
        for name, width in cols:
            value = str(r[name])
            if name == "session":
                value = value[:8]
            cells.append(value[:width].ljust(width) if width else value)
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def run_access(args: argparse.Namespace) -> int:
    import psycopg

    from sidecar_core import audit
    from sidecar_core.settings import CommonSettings

    sql, params = access_query(args)
    url = database_url(args, must_exist=True)
    operator = args.operator or _login_name()
    filters = {k: getattr(args, k) for k in ("patient", "study", "user", "session", "since")
               if getattr(args, k)}
    try:
        with psycopg.connect(url) as conn:
            rows = [trail_row(r) for r in conn.execute(sql, params).fetchall()]
            # reading the audit is an access too: recorded before anything is shown
            audit.record_sync(conn, CommonSettings().topology(), "phi.accessed",
                              f"operator:{operator}"[:64], context={
                                  "user": operator, "role": "operator", "what": "audit",
                                  "method": "CLI", "route": "sidecar audit access",
                                  "client_address": "cli", "status": 200, "outcome": "ok",
                                  "count": len(rows), "query": json.dumps(filters)})
            conn.commit()
    except psycopg.OperationalError as exc:
        raise (database_error(exc, url) or exc) from None
    if args.json:
        for r in rows:
            print(json.dumps(r, ensure_ascii=False))
    else:
        print(table(rows))
        print(f"{len(rows)} events")
    return 0


def _login_name() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}"
