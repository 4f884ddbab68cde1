"""Shared fixtures: a real PostgreSQL (migrated by Alembic) and a real NATS JetStream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.servers import NatsServer, fresh_database, nats_server, postgres_server


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture()
def database_url(pg_admin_url: str) -> Iterator[str]:
    """An empty database brought to head by the Alembic migrations, dropped after the test."""
    from sidecar_core.store.migrate import upgrade

    with fresh_database(pg_admin_url) as url:
        upgrade(url.replace("postgresql://", "postgresql+psycopg://", 1))
        yield url


@pytest.fixture()
def nats() -> Iterator[NatsServer]:
    with nats_server() as server:
        yield server


@pytest.fixture()
async def db(database_url: str) -> AsyncIterator[object]:
    from sidecar_core.db import Database

    database = Database(database_url)
    try:
        yield database
    finally:
        await database.close()
