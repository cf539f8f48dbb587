"""The console's thin layer over the stores (what the FHIR API does not show): the outbox's depth, oldest age and
dead letters per destination, one referral's deliveries, the replay of a dead letter, and each Subscription's owner
client and notifications — each one unit of work. Destinations are shown as the audit names them: a sender's
callback without its URL's credentials or query."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.routing.destinations import shown_destination
from gateway.store.database import Database
from gateway.store.outbox import DEAD, DELIVERED, PENDING, OutboxEntry
from gateway.store.unit_of_work import UnitOfWork

DEAD_LETTERS_SHOWN = 200


def _time(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z") if moment else None


def delivery(entry: OutboxEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "destination": shown_destination(entry.destination),
        "event": entry.event,
        "status": entry.status,
        "attempts": entry.attempts,
        "last_error": entry.last_error,
        "created_at": _time(entry.created_at),
        "delivered_at": _time(entry.delivered_at),
        "next_attempt_at": _time(entry.next_attempt_at) if entry.status == PENDING else None,
    }


async def outbox_overview(database: Database, now: datetime) -> dict[str, Any]:
    async with UnitOfWork(database, write=False) as uow:
        stats = await uow.outbox.stats(now)
        dead = await uow.outbox.entries(DEAD, DEAD_LETTERS_SHOWN)
    destinations: dict[str, dict[str, Any]] = {}
    for row in stats:
        shown = shown_destination(row["destination"])
        line = destinations.setdefault(
            shown, {"destination": shown, PENDING: 0, DELIVERED: 0, DEAD: 0, "oldest_age_seconds": None}
        )
        line[row["status"]] = line.get(row["status"], 0) + row["count"]
        if row["oldest_age_seconds"] is not None:
            line["oldest_age_seconds"] = max(line["oldest_age_seconds"] or 0.0, row["oldest_age_seconds"])
    return {
        "destinations": sorted(destinations.values(), key=lambda line: str(line["destination"])),
        "dead_letters": [delivery(entry) for entry in dead],
    }


async def subscriptions_overview(database: Database) -> list[dict[str, Any]]:
    """Per Subscription what its FHIR resource does not say: the client owning it, its events and notifications
    counted since it started, when the last was queued, and the outbox destination its notifications go to."""
    async with UnitOfWork(database, write=False) as uow:
        records = await uow.subscriptions.of_owner(None)
    return [
        {
            "id": record.id,
            "owner": record.owner,
            "topic": record.topic,
            "status": record.status,
            "events_count": record.events_count,
            "notifications_count": record.notifications_count,
            "last_queued_at": _time(record.last_queued_at),
            "destination": record.destination,
        }
        for record in records
    ]


async def referral_deliveries(database: Database, service_request_id: str, task_ids: list[str]) -> list[dict[str, Any]]:
    async with UnitOfWork(database, write=False) as uow:
        entries = await uow.outbox.of_referral(f"ServiceRequest/{service_request_id}", task_ids)
    return [delivery(entry) for entry in entries]


async def replay(database: Database, delivery_id: str, now: datetime) -> bool:
    """A dead letter queued again under its id (as ``gateway outbox replay``); False when there is none."""
    async with UnitOfWork(database) as uow:
        entry = await uow.outbox.get(delivery_id)
        if entry is None or entry.status != DEAD:
            return False
        done = await uow.replay_delivery(delivery_id, now)
        await uow.commit()
    return done
