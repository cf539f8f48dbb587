"""Throw-away databases for tests: a SQLite file, or a fresh PostgreSQL database beside the one configured.

``GATEWAY_DATABASE_URL`` chooses the backend for the whole run (unset: SQLite). On PostgreSQL each session — and
each gateway process an end-to-end test starts — gets a database of its own, dropped afterwards, so reruns and
parallel runs never see each other's rows.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

CONFIGURED_URL = os.environ.get("GATEWAY_DATABASE_URL", "")
USES_POSTGRESQL = CONFIGURED_URL.startswith(("postgresql", "postgres:"))


def _plain_dsn(url: str, database: str | None = None) -> str:
    parts = urlsplit(url.replace("+asyncpg", ""))
    path = f"/{database}" if database is not None else parts.path
    return urlunsplit(("postgresql", parts.netloc, path, parts.query, ""))


async def _admin(sql: str, configured: str = CONFIGURED_URL) -> None:
    connection = await asyncpg.connect(_plain_dsn(configured))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def scratch_database_url(directory: Path, configured: str = CONFIGURED_URL) -> str:
    """A new, empty database of the configured backend (``configured``: a PostgreSQL URL, else SQLite)."""
    if not configured.startswith(("postgresql", "postgres:")):
        return f"sqlite:///{directory / f'gateway-{uuid.uuid4().hex[:8]}.db'}"
    name = f"gw_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"', configured))
    return _plain_dsn(configured, name)


def drop_scratch_database(url: str) -> None:
    if url.startswith("postgresql"):
        name = urlsplit(url).path.lstrip("/")
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', _plain_dsn(url, "postgres")))
