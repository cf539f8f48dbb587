"""The replay cache of client assertions: each ``jti`` is accepted once per client, until it expires.

A row is kept until its ``exp`` plus the clock leeway the verifier tolerates (``LEEWAY_SECONDS``, the same
constant): an assertion is still accepted that long after ``exp``, so its ``jti`` must still be known."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.auth.assertions import LEEWAY_SECONDS
from gateway.store.tables import client_assertions

#: How long after its ``exp`` a used ``jti`` is remembered: as long as the verifier still accepts the assertion.
KEPT_AFTER_EXPIRY = timedelta(seconds=LEEWAY_SECONDS)


class AssertionRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def remember(self, client_id: str, jti: str, expires_at: datetime) -> None:
        """Record a used ``jti``; a second use of it fails the transaction with ``DuplicateKey``."""
        await self._connection.execute(
            sa.insert(client_assertions).values(client_id=client_id, jti=jti, expires_at=expires_at)
        )

    async def prune(self, now: datetime) -> None:
        """Forget the ones the verifier refuses anyway: ``exp`` passed by more than the leeway."""
        await self._connection.execute(
            sa.delete(client_assertions).where(client_assertions.c.expires_at < now - KEPT_AFTER_EXPIRY)
        )
