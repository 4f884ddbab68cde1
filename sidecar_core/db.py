"""Database engines and the unit of work (async SQLAlchemy 2 on psycopg 3)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def sqlalchemy_url(url: str) -> str:
    """Turns a libpq-style URL (postgresql://...) into the psycopg 3 dialect URL."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError("SIDECAR_DATABASE_URL must start with postgresql://")


class Database:
    """Owns the async engine; `unit_of_work()` commits on success and rolls back on error."""

    def __init__(self, url: str, pool_size: int = 5, pre_ping: bool = True) -> None:
        """`pre_ping=False` saves the round trip that tests a pooled connection before each
        unit of work; a caller choosing it retries a unit that fails on a dropped connection
        (`DBAPIError.connection_invalidated`)."""
        self.url = sqlalchemy_url(url)
        self.engine: AsyncEngine = create_async_engine(
            self.url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=pre_ping,
            pool_recycle=1800,
        )
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.libpq_url = "postgresql://" + self.url.removeprefix("postgresql+psycopg://")

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            yield session

    async def close(self) -> None:
        await self.engine.dispose()

