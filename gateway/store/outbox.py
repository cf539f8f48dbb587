"""The outbox: deliveries written in the transaction of the change they announce, then leased by workers.

A lease is a time-limited claim (``lease_owner``, ``lease_expires_at``): a worker that dies mid-delivery loses
nothing, its rows are taken again when the lease expires. On PostgreSQL claims use ``FOR UPDATE SKIP LOCKED``
so several workers never wait on each other; on SQLite the single writer serialises claims.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.store.repository import PendingWrites, as_utc
from gateway.store.tables import outbox, referral_origins

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    id: str
    destination: str
    endpoint: str
    event: str
    payload: dict[str, Any]
    task_id: str | None
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None = None
    created_at: datetime | None = None
    delivered_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Any) -> OutboxEntry:
        return cls(
            row.id,
            row.destination,
            row.endpoint,
            row.event,
            orjson.loads(row.payload),
            row.task_id,
            row.status,
            row.attempts,
            as_utc(row.next_attempt_at),
            row.last_error,
            as_utc(row.created_at) if row.created_at else None,
            as_utc(row.delivered_at) if row.delivered_at else None,
        )


class OutboxRepository:
    def __init__(self, connection: AsyncConnection, pending: PendingWrites, *, skip_locked: bool) -> None:
        self._connection = connection
        self._pending = pending
        self._skip_locked = skip_locked

    async def _execute(self, statement: sa.Executable) -> sa.CursorResult[Any]:
        await self._pending.flush(self._connection)
        return await self._connection.execute(statement)

    def enqueue(
        self,
        *,
        id: str,
        destination: str,
        endpoint: str,
        event: str,
        payload: dict[str, Any],
        now: datetime,
        task_id: str | None = None,
    ) -> None:
        self._pending.add(
            outbox,
            {
                "id": id,
                "destination": destination,
                "endpoint": endpoint,
                "event": event,
                "payload": orjson.dumps(payload).decode(),
                "task_id": task_id,
                "status": PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "lease_owner": None,
                "lease_expires_at": None,
                "last_error": None,
                "created_at": now,
                "delivered_at": None,
            },
        )

    async def claim(
        self, owner: str, now: datetime, lease: timedelta, limit: int, skip_destinations: Sequence[str] = ()
    ) -> list[OutboxEntry]:
        """Lease up to ``limit`` due deliveries (oldest first), none for the destinations to skip."""
        o = outbox.c
        query = (
            sa.select(outbox)
            .where(
                o.status == PENDING,
                o.next_attempt_at <= now,
                sa.or_(o.lease_expires_at.is_(None), o.lease_expires_at < now),
            )
            .order_by(o.next_attempt_at)
            .limit(limit)
        )
        if skip_destinations:
            query = query.where(o.destination.not_in(list(skip_destinations)))
        if self._skip_locked:
            query = query.with_for_update(skip_locked=True)
        rows = (await self._execute(query)).all()
        if not rows:
            return []
        await self._connection.execute(
            sa.update(outbox)
            .where(o.id.in_([row.id for row in rows]))
            .values(lease_owner=owner, lease_expires_at=now + lease)
        )
        return [OutboxEntry.from_row(row) for row in rows]

    async def _finish(self, entry_id: str, owner: str, **values: Any) -> bool:
        o = outbox.c
        result = await self._execute(
            sa.update(outbox)
            .where(o.id == entry_id, o.lease_owner == owner, o.status == PENDING)
            .values(lease_owner=None, lease_expires_at=None, **values)
        )
        return bool(result.rowcount == 1)

    async def mark_delivered(self, entry_id: str, owner: str, now: datetime, attempts: int) -> bool:
        return await self._finish(
            entry_id, owner, status=DELIVERED, delivered_at=now, attempts=attempts, last_error=None
        )

    async def mark_retry(self, entry_id: str, owner: str, next_attempt_at: datetime, attempts: int, error: str) -> bool:
        return await self._finish(entry_id, owner, next_attempt_at=next_attempt_at, attempts=attempts, last_error=error)

    async def mark_dead(self, entry_id: str, owner: str, attempts: int, error: str) -> bool:
        return await self._finish(entry_id, owner, status=DEAD, attempts=attempts, last_error=error)

    async def get(self, entry_id: str) -> OutboxEntry | None:
        row = (await self._execute(sa.select(outbox).where(outbox.c.id == entry_id))).first()
        return OutboxEntry.from_row(row) if row else None

    async def entries(self, status: str | None = None, limit: int = 100) -> list[OutboxEntry]:
        query = sa.select(outbox).order_by(outbox.c.created_at.desc()).limit(limit)
        if status:
            query = query.where(outbox.c.status == status)
        return [OutboxEntry.from_row(row) for row in await self._execute(query)]

    async def replay(self, entry_id: str, now: datetime) -> bool:
        """Put a dead (or delivered) entry back in the queue, with its id — receivers drop duplicates by it."""
        result = await self._execute(
            sa.update(outbox)
            .where(outbox.c.id == entry_id)
            .values(status=PENDING, attempts=0, next_attempt_at=now, lease_owner=None, lease_expires_at=None)
        )
        return bool(result.rowcount == 1)

    async def stats(self, now: datetime) -> builtins.list[dict[str, Any]]:
        """Per destination and status: how many, and the age of the oldest waiting (for operators, metrics)."""
        o = outbox.c
        rows: Any = await self._execute(
            sa.select(o.destination, o.status, sa.func.count(), sa.func.min(o.created_at)).group_by(
                o.destination, o.status
            )
        )
        stats = []
        for row in rows:
            destination, status, count, oldest = row[0], row[1], row[2], row[3]
            age = (now - (as_utc(oldest) if oldest else now)).total_seconds() if status == PENDING else None
            stats.append({"destination": destination, "status": status, "count": count, "oldest_age_seconds": age})
        return stats

    # --- where updates go back ---

    def record_origin(self, service_request_id: str, endpoint: str) -> None:
        self._pending.add(referral_origins, {"service_request_id": service_request_id, "endpoint": endpoint})

    async def origin_of(self, service_request_id: str) -> str | None:
        r = referral_origins.c
        row = (await self._execute(sa.select(r.endpoint).where(r.service_request_id == service_request_id))).first()
        return str(row.endpoint) if row else None
