"""The database: one async engine, SQLite or PostgreSQL, and the units of work opened on it.

Async SQLAlchemy (aiosqlite / asyncpg) because the whole gateway is one asyncio program — FastAPI routes, the
delivery worker and its httpx client share the event loop — so a blocking driver would stall every request
while one waits on the database.

SQLite allows one writer at a time. Write transactions start with ``BEGIN IMMEDIATE`` (so two never deadlock
upgrading read locks), and inside one process they also queue on an ``asyncio.Lock`` (so they wait their turn
instead of spinning in SQLite's busy handler). Reads never wait: WAL lets them run beside the writer.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from gateway.config import async_database_url

_IMMEDIATE = "gateway_sqlite_immediate"


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves (pysqlite's implicit transactions do not know IMMEDIATE).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=NORMAL",
            "PRAGMA busy_timeout=10000",
            "PRAGMA foreign_keys=ON",
        ):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get(_IMMEDIATE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = async_database_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        # hide_parameters: a failing statement's error never carries the values (patients' names, INS) into a log.
        options: dict[str, Any] = {"echo": echo, "hide_parameters": True}
        if not self.is_sqlite:
            options |= {"pool_size": 10, "max_overflow": 10, "pool_pre_ping": True}
        self.engine = create_async_engine(self.url, **options)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self._write_lock: asyncio.Lock | None = None

    @property
    def write_lock(self) -> asyncio.Lock | None:
        """Serialises this process's SQLite writers; None on PostgreSQL, which needs no such thing."""
        if not self.is_sqlite:
            return None
        if self._write_lock is None:
            self._write_lock = asyncio.Lock()
        return self._write_lock

    async def connect(self, *, write: bool) -> AsyncConnection:
        connection = await self.engine.connect()
        if write and self.is_sqlite:
            await connection.execution_options(**{_IMMEDIATE: True})
        return connection

    async def dispose(self) -> None:
        await self.engine.dispose()
