"""The worker's Subscription jobs: heartbeats to Subscriptions nothing was sent to for their heartbeat period, and
the events older than their keeping time purged (``$events`` answers for 7 days)."""

from __future__ import annotations

from datetime import timedelta

from gateway.fhir.primitives import utc_now
from gateway.notify.events import HEARTBEAT, queue_notification
from gateway.store.database import Database
from gateway.store.unit_of_work import UnitOfWork

#: How long events are kept for ``$events``.
EVENTS_KEPT = timedelta(days=7)


async def send_heartbeats(database: Database, base_url: str) -> int:
    """Queue a heartbeat for each active Subscription due one; how many."""
    now = utc_now()
    async with UnitOfWork(database) as uow:
        due = await uow.subscriptions.heartbeats_due(now)
        for record in due:
            await queue_notification(uow, record, base_url, HEARTBEAT, now)
        await uow.commit()
    return len(due)


async def purge_events(database: Database, kept: timedelta = EVENTS_KEPT) -> int:
    async with UnitOfWork(database) as uow:
        purged = await uow.subscriptions.purge_events(utc_now() - kept)
        await uow.commit()
    return purged
