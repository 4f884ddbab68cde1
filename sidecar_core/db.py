"""Database engines and the unit of work (async SQLAlchemy 2 on psycopg 3)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
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
        """`pre_ping=False` saves a round trip per checkout on hot paths (ingest)."""
        self.url = sqlalchemy_url(url)
        self.engine: AsyncEngine = create_async_engine(
            self.url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=pre_ping,
            pool_recycle=1800,
        )
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.libpq_url = "postgresql://" + self.url.removeprefix("postgresql+psycopg://")
        self._raw_idle: list[psycopg.AsyncConnection[Any]] = []
        self._raw_max = pool_size

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            yield session

    @asynccontextmanager
    async def raw(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A plain psycopg connection (no ORM, no greenlet hop) for hot paths.

        The caller commits; anything left uncommitted is rolled back. A connection that fails
        is closed instead of being returned to the pool.
        """
        try:
            conn = self._raw_idle.pop()
        except IndexError:
            conn = await psycopg.AsyncConnection.connect(self.libpq_url)
        try:
            yield conn
        except BaseException:
            await _close_quietly(conn)
            raise
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            await conn.rollback()
        if len(self._raw_idle) < self._raw_max:
            self._raw_idle.append(conn)
        else:
            await conn.close()

    async def close(self) -> None:
        while self._raw_idle:
            await _close_quietly(self._raw_idle.pop())
        await self.engine.dispose()


async def _close_quietly(conn: psycopg.AsyncConnection[Any]) -> None:
    with contextlib.suppress(Exception):
        await conn.close()
