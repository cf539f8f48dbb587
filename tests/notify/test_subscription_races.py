"""Races between a Subscription's owner and what is recorded about it (DESIGN §12), on the backend the run uses:
setting a Subscription off, or deleting it, while the worker records the outcome of one of its notifications, or
while a referral's transaction numbers its events. Every side takes the Subscription's row lock before any row of
its queue in the outbox, so neither is aborted (on PostgreSQL the worker's recording and the owner's PUT or DELETE
deadlocked before: one held the notification's outbox row and waited for the Subscription's, the other the
reverse), and whichever commits first decides."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx
import pytest
import respx

from gateway.routing.config import RoutingTable
from gateway.store import Database, UnitOfWork
from gateway.store.subscriptions import SubscriptionRepository
from tests.conftest import load_example
from tests.notify.test_subscriptions import (
    FHIR_JSON,
    HOOK,
    TASK_TOPIC,
    create,
    deliver,
    dispatcher,
    due_now,
    post_referral,
    subscription,
)

NAMES = ("referral-gp.json", "referral-no-gp.json", "referral-social-worker.json")


async def _end(client: httpx.AsyncClient, created: dict[str, Any], end: str) -> httpx.Response:
    url = f"/fhir/Subscription/{created['id']}"
    if end == "off":
        return await client.put(url, json=created | {"status": "off"}, headers=FHIR_JSON)
    return await client.delete(url)


async def _queue_of(database: Database, subscription_id: str) -> dict[str, str]:
    async with UnitOfWork(database, write=False) as uow:
        entries = await uow.outbox.entries(limit=1000)
    return {e.id: e.status for e in sorted(entries, key=lambda e: e.id) if e.destination.endswith(subscription_id)}


@pytest.mark.parametrize("end", ["off", "delete"])
@respx.mock
async def test_ending_a_subscription_while_the_worker_records_its_notification(
    client: httpx.AsyncClient,
    database: Database,
    routing: RoutingTable,
    monkeypatch: pytest.MonkeyPatch,
    end: str,
) -> None:
    respx.post(url__regex=r".*\$process-message").mock(return_value=httpx.Response(200))
    respx.post(HOOK).mock(return_value=httpx.Response(200))
    created = await create(client, subscription(TASK_TOPIC, content="id-only"))
    await post_referral(client)  # its events wait behind the handshake
    # The worker's recording stops for a moment where it has written the handshake's outcome and not yet moved the
    # Subscription's queue on: the owner ends the Subscription then.
    recording, original = asyncio.Event(), SubscriptionRepository.notifications_ended

    async def paused(self: SubscriptionRepository, ended: Sequence[tuple[str, str, str]], now: datetime) -> int:
        if ended and not recording.is_set():
            recording.set()
            await asyncio.sleep(0.3)
        return await original(self, ended, now)

    monkeypatch.setattr(SubscriptionRepository, "notifications_ended", paused)

    async def ending() -> httpx.Response:
        await recording.wait()
        return await _end(client, created, end)

    _, ended = await asyncio.gather(deliver(database, routing), asyncio.wait_for(ending(), 10))
    assert ended.status_code in (200, 204), ended.text
    queue = await _queue_of(database, created["id"])
    handshake, *events = queue.values()
    assert handshake == "delivered"  # the worker's outcome was recorded, not aborted
    assert events and set(events) == {"dead"}  # nothing of an ended Subscription is sent, or left waiting
    async with UnitOfWork(database, write=False) as uow:
        record = await uow.subscriptions.get(created["id"])
    assert (record.status if record else None) == ("off" if end == "off" else None)


@pytest.mark.parametrize("end", ["off", "delete"])
async def test_ending_a_subscription_while_its_events_are_numbered(
    client: httpx.AsyncClient, database: Database, end: str
) -> None:
    rng = random.Random(7)
    for round_number in range(6):
        created = await create(client, subscription(TASK_TOPIC, content="id-only"))
        referral = load_example(NAMES[round_number % len(NAMES)])
        for entry in referral["entry"]:  # a new referral each round (not an idempotent replay)
            if entry["resource"]["resourceType"] == "ServiceRequest":
                entry["resource"]["identifier"][0]["value"] += f"-{end}-{round_number}"
        referral.pop("identifier", None)

        async def stop() -> httpx.Response:
            await asyncio.sleep(rng.uniform(0, 0.05))
            return await _end(client, created, end)  # noqa: B023 (awaited within the round)

        posted, stopped = await asyncio.gather(client.post("/fhir", json=referral, headers=FHIR_JSON), stop())
        assert posted.status_code == 200, posted.text
        assert stopped.status_code in (200, 204), stopped.text
        assert set((await _queue_of(database, created["id"])).values()) == {"dead"}


@respx.mock
async def test_a_task_changed_while_the_worker_records_its_delivery_and_a_notification(
    client: httpx.AsyncClient, database: Database, routing: RoutingTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change locks its Task, then numbers its Subscriptions' events; the worker recording, in one transaction, a
    notification of such a Subscription and the referral's delivery (shown on that Task) takes the Task first too."""
    from tests.routing.test_delivery import _intake_task

    respx.post(url__regex=r".*\$process-message").mock(return_value=httpx.Response(200))
    respx.post(HOOK).mock(return_value=httpx.Response(200))
    created = await create(client, subscription(TASK_TOPIC, ("Task?code=platform-intake",), content="id-only"))
    service_request = await post_referral(client)  # its delivery and the handshake are due together
    task = await _intake_task(database, service_request.split("/")[1])
    locked, original = asyncio.Event(), SubscriptionRepository.lock

    async def paused(self: SubscriptionRepository, destinations: Any) -> None:
        await original(self, destinations)
        if not locked.is_set():
            locked.set()
            await asyncio.sleep(0.3)

    monkeypatch.setattr(SubscriptionRepository, "lock", paused)

    async def change() -> None:
        await locked.wait()
        async with UnitOfWork(database) as uow:
            current = await uow.resources.get_many([("Task", task["id"])], for_update=True)
            stored = current["Task", task["id"]]
            await uow.resources.update_many([(stored, stored.content | {"businessStatus": {"text": "seen"}})])
            await uow.commit()

    async with httpx.AsyncClient() as http:
        from dataclasses import replace

        sender = dispatcher(database, routing, http)
        sender.settings = replace(sender.settings, record_linger=0.05)  # both outcomes in one recording
        await due_now(database)
        await asyncio.gather(sender.deliver_due(), asyncio.wait_for(change(), 10))
    queue = await _queue_of(database, created["id"])
    assert next(iter(queue.values())) == "delivered"  # the handshake's outcome recorded, not aborted
    async with UnitOfWork(database, write=False) as uow:
        record = await uow.subscriptions.get(created["id"])
    assert record is not None and record.events_count == 3  # created; delivered; changed — each numbered once


@respx.mock
async def test_the_worker_numbers_events_while_a_change_numbers_the_same_subscriptions(
    client: httpx.AsyncClient, database: Database, routing: RoutingTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's recording holds a notification's Subscription, and its delivery shown on a Task makes events for
    another one, of a smaller id; meanwhile a change of another Task numbers both, in the order of their ids. The
    worker takes both Subscriptions' rows before any (the ones its Tasks' changes will number too), so neither
    transaction waits for the other in a circle."""
    import sqlalchemy as sa

    from gateway.store.tables import outbox, subscriptions
    from tests.routing.test_delivery import _intake_task

    respx.post(url__regex=r".*\$process-message").mock(return_value=httpx.Response(200))
    respx.post(HOOK).mock(return_value=httpx.Response(200))
    first, second = sorted(
        [(await create(client, subscription(TASK_TOPIC, content="id-only")))["id"] for _ in range(2)]
    )
    async with database.engine.begin() as connection:  # the first's handshake went: only the second's is due
        await connection.execute(sa.update(subscriptions).where(subscriptions.c.id == first).values(status="active"))
        await connection.execute(
            sa.update(outbox).where(outbox.c.destination == f"subscription/{first}").values(status="delivered")
        )
    # Another referral's Task (its delivery done), then the referral whose delivery the worker records.
    other = await _intake_task(database, (await post_referral(client, "referral-no-gp.json")).split("/")[1])
    async with database.engine.begin() as connection:
        await connection.execute(sa.update(outbox).where(outbox.c.task_id == other["id"]).values(status="delivered"))
    await post_referral(client)
    async with database.engine.begin() as connection:
        await connection.execute(
            sa.update(outbox).where(outbox.c.destination == f"subscription/{first}").values(status="delivered")
        )
    locked, original = asyncio.Event(), SubscriptionRepository.lock

    async def paused(self: SubscriptionRepository, destinations: Any) -> None:
        await original(self, destinations)
        if not locked.is_set():
            locked.set()
            await asyncio.sleep(0.3)

    monkeypatch.setattr(SubscriptionRepository, "lock", paused)

    async def change() -> None:
        await locked.wait()
        async with UnitOfWork(database) as uow:
            current = await uow.resources.get_many([("Task", other["id"])], for_update=True)
            stored = current["Task", other["id"]]
            await uow.resources.update_many([(stored, stored.content | {"businessStatus": {"text": "seen"}})])
            await uow.commit()

    async with httpx.AsyncClient() as http:
        from dataclasses import replace

        sender = dispatcher(database, routing, http)
        sender.settings = replace(sender.settings, record_linger=0.05)
        await due_now(database)
        await asyncio.gather(sender.deliver_due(), asyncio.wait_for(change(), 10))
    async with UnitOfWork(database, write=False) as uow:
        heard = [[e.focus_id for e in await uow.subscriptions.events(i, 1, 100)] for i in (first, second)]
    # Both heard of everything, once, numbered without gaps: the other Task created and changed (the transaction
    # that waited), the intake Task created and delivered (the worker's).
    assert heard[0] == heard[1]
    assert heard[0].count(other["id"]) == 2 and heard[0][-1] == other["id"]
    intake = next(focus for focus in heard[0] if focus != other["id"] and heard[0].count(focus) == 2)
    assert heard[0].index(intake) > heard[0].index(other["id"])
