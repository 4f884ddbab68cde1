"""The services' least-privilege database role: all they need, and audit rows insert-only."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, text

# The login role the services connect as (the embedded default creates it; elsewhere the DBA
# does, docs/deployment.md). The migrations run as the schema's owner.
APP_ROLE = "sidecar_app"
# Tables whose rows the services may only add and read.
INSERT_ONLY = ("audit_events", "audit_chain_heads")


def grant_statements(role: str = APP_ROLE) -> list[str]:
    """What the role may do: read and write the workflow tables, also those later migrations
    add (default privileges of the owner), and only INSERT and SELECT on the audit."""
    quoted = '"' + role.replace('"', '""') + '"'
    audit = ", ".join(INSERT_ONLY)
    return [
        f"GRANT USAGE ON SCHEMA public TO {quoted}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {quoted}",
        f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {quoted}",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE "
        f"ON TABLES TO {quoted}",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE "
        f"ON SEQUENCES TO {quoted}",
        f"REVOKE UPDATE, DELETE, TRUNCATE, TRIGGER, REFERENCES ON {audit} FROM PUBLIC",
        f"REVOKE UPDATE, DELETE, TRUNCATE, TRIGGER, REFERENCES ON {audit} FROM {quoted}",
        # The chain heads are written by the chain's trigger (as the owner), never directly.
        f"REVOKE INSERT ON audit_chain_heads FROM {quoted}",
        # The schema's version is the migrations' business.
        f"REVOKE INSERT, UPDATE, DELETE ON alembic_version FROM {quoted}",
    ]


def apply_grants(conn: Any, role: str = APP_ROLE) -> bool:
    """Grants the role its privileges on a SQLAlchemy connection when the role exists; False
    when it does not (a deployment whose services connect as the owner) or when it is the
    role connected (the services' own URL given to `sidecar migrate`: nothing to grant)."""
    exists = conn.execute(text("SELECT rolname <> current_user FROM pg_roles WHERE rolname = :r"),
                          {"r": role}).first()
    if exists is None or not exists[0]:
        return False
    if _in_place(conn, role):
        return True  # nothing to change: no catalogue writes on every start
    for statement in grant_statements(role):
        conn.execute(text(statement))
    return True


def _in_place(conn: Any, role: str) -> bool:
    """Whether the role already has its grants: it reads every table, writes no audit row."""
    row = conn.execute(text("""
        SELECT count(*) FILTER (WHERE NOT has_table_privilege(:r, c.oid, 'SELECT')),
               count(*) FILTER (WHERE c.relname IN :audit AND (
                   has_table_privilege(:r, c.oid, 'UPDATE')
                   OR has_table_privilege(:r, c.oid, 'DELETE')
                   OR has_table_privilege(:r, c.oid, 'TRUNCATE'))),
               count(*) FILTER (WHERE c.relname = 'audit_events'
                                AND has_table_privilege(:r, c.oid, 'INSERT'))
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
    """).bindparams(bindparam("audit", expanding=True)),
        {"r": role, "audit": list(INSERT_ONLY)}).one()
    return bool(row[0] == 0 and row[1] == 0 and row[2] == 1)
