"""`sidecar audit verify`: walks the audit's hash chains and names the first event that does
not match (docs/audit.md)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from sidecar_app.admin_db import database_url
from sidecar_app.errors import UserError, database_error


def add_parsers(sub: argparse._SubParsersAction,  # type: ignore[type-arg]
                db_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    aud = sub.add_parser("audit", help="audit tools: verify the hash chains").add_subparsers(
        dest="action", required=True)
    p = aud.add_parser("verify", help="walk every audit chain; exit 1 naming the first event "
                       "whose hash, position or link does not match")
    db_flags(p)


def run_audit(args: argparse.Namespace) -> int:
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
