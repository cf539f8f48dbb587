"""A Subscription's dead letter and its replay (DESIGN §12: every event once, in order, with no gap): a notification
dead-lettered holds the ones queued after it — they wait, the Subscription's ``error`` says why — until it is
replayed; replayed, it goes first, and the rest follow in order."""

from __future__ import annotations

import httpx
import respx

from gateway.fhir.primitives import utc_now
from gateway.routing.config import RoutingTable
from gateway.store import Database, UnitOfWork
from tests.notify.test_subscriptions import HOOK, create, deliver, post_referral, received, status_of, subscription

NAMES = ("referral-gp.json", "referral-no-gp.json", "referral-social-worker.json")


async def _queue(database: Database, subscription_id: str) -> list[tuple[str, str]]:
    """(id, status) of the Subscription's event notifications, in its order."""
    async with UnitOfWork(database, write=False) as uow:
        entries = await uow.outbox.entries(limit=1000)
    return sorted(
        (e.id, e.status)
        for e in entries
        if e.destination == f"subscription/{subscription_id}" and e.event == "subscription-event-notification"
    )


@respx.mock
async def test_a_replayed_dead_letter_goes_first_and_the_rest_follow_in_order(
    client: httpx.AsyncClient, database: Database, routing: RoutingTable
) -> None:
    respx.post(url__regex=r".*\$process-message").mock(return_value=httpx.Response(200))
    up = {"up": True}
    hook = respx.post(HOOK).mock(side_effect=lambda request: httpx.Response(200 if up["up"] else 503))
    created = await create(client, subscription(content="id-only"))
    await deliver(database, routing)  # the handshake
    up["up"] = False
    for name in NAMES:
        await post_referral(client, name)
    await deliver(database, routing, rounds=4)  # max_attempts 3: the first is a dead letter
    first, *later = await _queue(database, created["id"])
    assert first[1] == "dead"
    assert [status for _, status in later] == ["waiting", "waiting"]  # held behind it, not sent past it
    read = (await client.get(f"/fhir/Subscription/{created['id']}")).json()
    assert read["status"] == "active" and "replayed" in read["error"] and read["meta"]["versionId"] == "3"
    up["up"] = True
    before = len(hook.calls)
    await deliver(database, routing, rounds=2)
    assert len(hook.calls) == before  # back up, but nothing goes past the dead letter until it is replayed
    async with UnitOfWork(database) as uow:
        assert await uow.replay_delivery(first[0], utc_now())
        await uow.commit()
    await deliver(database, routing, rounds=4)
    after = [status_of(body) for body in received(hook)[before:]]
    assert [int(s["events"][0]["event-number"]) for s in after] == [1, 2, 3]  # each once, in order, no gap
    assert {status for _, status in await _queue(database, created["id"])} == {"delivered"}
    read = (await client.get(f"/fhir/Subscription/{created['id']}")).json()
    assert "error" not in read and read["meta"]["versionId"] == "4"


@respx.mock
async def test_a_replay_waits_behind_what_is_being_sent_and_an_ended_subscription_is_not_replayed(
    client: httpx.AsyncClient, database: Database, routing: RoutingTable
) -> None:
    respx.post(url__regex=r".*\$process-message").mock(return_value=httpx.Response(200))
    hook = respx.post(HOOK).mock(return_value=httpx.Response(200))
    created = await create(client, subscription(content="id-only"))
    await deliver(database, routing)
    for name in NAMES[:2]:
        await post_referral(client, name)
    await deliver(database, routing, rounds=3)
    (one, _), (two, _) = await _queue(database, created["id"])
    await post_referral(client, NAMES[2])  # event 3: pending (nothing before it is)
    async with UnitOfWork(database) as uow:  # event 1 replayed (delivered already: receivers drop it by its id)
        assert await uow.replay_delivery(one, utc_now())
        await uow.commit()
    queue = dict(await _queue(database, created["id"]))
    assert queue[one] == "waiting"  # behind the one being sent: never two of one Subscription at once
    before = len(hook.calls)
    await deliver(database, routing, rounds=3)
    assert [int(status_of(b)["events"][0]["event-number"]) for b in received(hook)[before:]] == [3, 1]
    off = await client.put(f"/fhir/Subscription/{created['id']}", json=created | {"status": "off"})
    assert off.status_code == 200, off.text
    async with UnitOfWork(database) as uow:
        assert not await uow.replay_delivery(two, utc_now())  # off: its owner stopped it


@respx.mock
async def test_an_event_after_a_lone_dead_letter_waits_behind_it(
    client: httpx.AsyncClient, database: Database, routing: RoutingTable
) -> None:
    """The dead letter was the last of its queue: the next event, queued after it died, is held too — not sent past
    it (then event 1 replayed after event 2)."""
    respx.post(url__regex=r".*\$process-message").mock(return_value=httpx.Response(200))
    up = {"up": False}
    hook = respx.post(HOOK).mock(side_effect=lambda request: httpx.Response(200 if up["up"] else 503))
    created = await create(client, subscription(content="id-only"))
    up["up"] = True
    await deliver(database, routing)  # the handshake
    up["up"] = False
    await post_referral(client, NAMES[0])
    await deliver(database, routing, rounds=4)  # event 1: a dead letter, nothing behind it
    ((first, state),) = await _queue(database, created["id"])
    assert state == "dead"
    up["up"] = True
    before = len(hook.calls)
    await post_referral(client, NAMES[1])  # event 2, queued after the dead letter
    await deliver(database, routing, rounds=2)
    assert len(hook.calls) == before  # held behind event 1
    async with UnitOfWork(database) as uow:
        assert await uow.replay_delivery(first, utc_now())
        await uow.commit()
    await deliver(database, routing, rounds=4)
    assert [int(status_of(b)["events"][0]["event-number"]) for b in received(hook)[before:]] == [1, 2]
    assert "error" not in (await client.get(f"/fhir/Subscription/{created['id']}")).json()


@respx.mock
async def test_replaying_a_delivered_notification_does_not_release_the_queue_held_by_a_dead_letter(
    client: httpx.AsyncClient, database: Database, routing: RoutingTable
) -> None:
    respx.post(url__regex=r".*\$process-message").mock(return_value=httpx.Response(200))
    up = {"up": True}
    hook = respx.post(HOOK).mock(side_effect=lambda request: httpx.Response(200 if up["up"] else 503))
    created = await create(client, subscription(content="id-only"))
    await deliver(database, routing)
    await post_referral(client, NAMES[0])
    await deliver(database, routing)  # event 1 delivered
    up["up"] = False
    for name in NAMES[1:]:
        await post_referral(client, name)
    await deliver(database, routing, rounds=4)  # event 2 dead, event 3 held
    (one, _), (two, dead), (_, waiting) = await _queue(database, created["id"])
    assert (dead, waiting) == ("dead", "waiting")
    up["up"] = True
    before = len(hook.calls)
    async with UnitOfWork(database) as uow:  # event 1 again (receivers drop it by its id)
        assert await uow.replay_delivery(one, utc_now())
        await uow.commit()
    await deliver(database, routing, rounds=3)
    assert [int(status_of(b)["events"][0]["event-number"]) for b in received(hook)[before:]] == [1]
    assert "replayed" in (await client.get(f"/fhir/Subscription/{created['id']}")).json()["error"]
    async with UnitOfWork(database) as uow:
        assert await uow.replay_delivery(two, utc_now())
        await uow.commit()
    await deliver(database, routing, rounds=4)
    assert [int(status_of(b)["events"][0]["event-number"]) for b in received(hook)[before:]] == [1, 2, 3]


@respx.mock
async def test_a_notification_still_queued_is_not_replayed(
    client: httpx.AsyncClient, database: Database, routing: RoutingTable
) -> None:
    """``gateway outbox replay`` names a notification waiting behind a dead letter: refused, not sent past it."""
    respx.post(url__regex=r".*\$process-message").mock(return_value=httpx.Response(200))
    up = {"up": True}
    hook = respx.post(HOOK).mock(side_effect=lambda request: httpx.Response(200 if up["up"] else 503))
    created = await create(client, subscription(content="id-only"))
    await deliver(database, routing)
    up["up"] = False
    for name in NAMES[:2]:
        await post_referral(client, name)
    await deliver(database, routing, rounds=4)
    (first, _), (second, waiting) = await _queue(database, created["id"])
    assert waiting == "waiting"
    up["up"] = True
    before = len(hook.calls)
    async with UnitOfWork(database) as uow:
        assert not await uow.replay_delivery(second, utc_now())
        await uow.commit()
    await deliver(database, routing, rounds=2)
    assert len(hook.calls) == before and dict(await _queue(database, created["id"]))[second] == "waiting"
    async with UnitOfWork(database) as uow:
        assert await uow.replay_delivery(first, utc_now())
        await uow.commit()
    await deliver(database, routing, rounds=4)
    assert [int(status_of(b)["events"][0]["event-number"]) for b in received(hook)[before:]] == [1, 2]


@respx.mock
async def test_a_dead_letter_of_an_ended_queue_is_not_replayed_after_a_new_handshake(
    client: httpx.AsyncClient, database: Database, routing: RoutingTable
) -> None:
    """Set off and requested again, the Subscription starts anew (its subscriber fills the gap with ``$events``):
    a dead letter from before, replayed, would come after the events delivered since, out of order."""
    respx.post(url__regex=r".*\$process-message").mock(return_value=httpx.Response(200))
    up = {"up": True}
    hook = respx.post(HOOK).mock(side_effect=lambda request: httpx.Response(200 if up["up"] else 503))
    created = await create(client, subscription(content="id-only"))
    await deliver(database, routing)
    up["up"] = False
    await post_referral(client, NAMES[0])
    await deliver(database, routing, rounds=4)  # event 1 dead
    ((first, state),) = await _queue(database, created["id"])
    assert state == "dead"
    url = f"/fhir/Subscription/{created['id']}"
    for status in ("off", "requested"):
        current = (await client.get(url)).json()
        assert (await client.put(url, json=current | {"status": status})).status_code == 200
    up["up"] = True
    await deliver(database, routing)  # the new handshake
    await post_referral(client, NAMES[1])
    await deliver(database, routing)  # event 2 delivered
    before = len(hook.calls)
    async with UnitOfWork(database) as uow:
        assert not await uow.replay_delivery(first, utc_now())
        await uow.commit()
    await deliver(database, routing, rounds=2)
    assert len(hook.calls) == before


@respx.mock
async def test_a_dead_heartbeat_holds_nothing(
    client: httpx.AsyncClient, database: Database, routing: RoutingTable
) -> None:
    """A heartbeat carries no event: dead-lettered (the receiver down while nothing happened), the events queued
    behind it or after it are sent once the receiver is back, with no replay to ask for."""
    from datetime import timedelta

    import sqlalchemy as sa

    from gateway.notify.jobs import send_heartbeats
    from gateway.store.tables import subscriptions
    from tests.notify.test_subscriptions import BACKPORT

    respx.post(url__regex=r".*\$process-message").mock(return_value=httpx.Response(200))
    up = {"up": True}
    hook = respx.post(HOOK).mock(side_effect=lambda request: httpx.Response(200 if up["up"] else 503))
    period = {"url": f"{BACKPORT}/backport-heartbeat-period", "valueUnsignedInt": 60}
    created = await create(client, subscription(content="id-only", extension=[period]))
    await deliver(database, routing)
    up["up"] = False
    async with database.engine.begin() as connection:
        await connection.execute(sa.update(subscriptions).values(last_queued_at=utc_now() - timedelta(seconds=61)))
    assert await send_heartbeats(database, "http://gateway.test/fhir") == 1
    await deliver(database, routing)  # the heartbeat refused once
    await post_referral(client, NAMES[0])  # event 1, behind it
    await deliver(database, routing, rounds=3)  # the heartbeat dead
    await post_referral(client, NAMES[1])  # event 2, after it
    up["up"] = True
    before = len(hook.calls)
    await deliver(database, routing, rounds=3)
    assert [int(status_of(b)["events"][0]["event-number"]) for b in received(hook)[before:]] == [1, 2]
    assert "error" not in (await client.get(f"/fhir/Subscription/{created['id']}")).json()
