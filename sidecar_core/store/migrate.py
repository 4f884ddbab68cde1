"""Applies the Alembic migrations, the only way the workflow store's schema changes."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

_HERE = Path(__file__).resolve().parent


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Brings the database at `url` to `revision` (a sync SQLAlchemy URL)."""
    command.upgrade(alembic_config(url), revision)
    if revision != "head":
        return
    # The services' role gets its privileges on every upgrade, also when it was created after
    # the migration that first granted them (sidecar_core/store/grants.py).
    from sqlalchemy import create_engine

    from sidecar_core.store.grants import apply_grants

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            apply_grants(conn)
    finally:
        engine.dispose()
