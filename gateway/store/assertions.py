"""The replay cache of client assertions: each ``jti`` is accepted once per client, until it expires."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.store.tables import client_assertions


class AssertionRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def remember(self, client_id: str, jti: str, expires_at: datetime) -> None:
        """Record a used ``jti``; a second use of it fails the transaction with ``DuplicateKey``."""
        await self._connection.execute(
            sa.insert(client_assertions).values(client_id=client_id, jti=jti, expires_at=expires_at)
        )

    async def prune(self, now: datetime) -> None:
        """Forget the expired ones: an expired assertion is refused for its ``exp`` anyway."""
        await self._connection.execute(sa.delete(client_assertions).where(client_assertions.c.expires_at < now))
