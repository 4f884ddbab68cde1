"""The Alembic migrations build the schema the models describe, on an empty real PostgreSQL."""

from __future__ import annotations

import psycopg
import pytest

pytestmark = pytest.mark.integration


def test_migrations_create_every_table(database_url: str) -> None:
    from sidecar_core.store.models import Base

    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select table_name from information_schema.tables where table_schema='public'"
        ).fetchall()
    tables = {r[0] for r in rows}
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_models_match_migrations(database_url: str) -> None:
    """Autogenerate finds nothing to add: the models and the migrations agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import create_engine

    from sidecar_core.store.models import Base

    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []
