"""What batching adds to delivery: claims of many entries in one statement with per-destination rooms, outcomes of
many attempts recorded in one transaction, and the leases that keep both safe (respx for the platforms)."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import timedelta
from typing import Any

import httpx
import respx

from gateway.fhir.primitives import new_id, utc_now
from gateway.fhir.search import parse_search
from gateway.intake import read_referral, take_in
from gateway.routing.config import RoutingTable
from gateway.routing.delivery import HELD_PER_SLOT, DeliverySettings, Dispatcher
from gateway.store import Database, UnitOfWork
from gateway.store.outbox import DEAD, DELIVERED, PENDING, Finished, OutboxEntry
from tests.routing.test_delivery import _intake_task
from tests.support.referrals import fresh

BASE = "http://gateway.test/fhir"
PARIS = "https://dac75.example.org/fhir/$process-message"
REUNION = "https://dac974.example.org/fhir/$process-message"
LEASE = timedelta(seconds=60)


def _dispatcher(database: Database, routing: RoutingTable, client: httpx.AsyncClient, **overrides: Any) -> Dispatcher:
    settings = DeliverySettings(base_url=BASE, backoff_base=30, backoff_cap=60, **overrides)
    return Dispatcher(database, routing, client, settings, rng=random.Random(7))


async def _referrals(database: Database, routing: RoutingTable, count: int, commune: str = "75056") -> list[str]:
    """``count`` new referrals to the platform of ``commune``; their ServiceRequest ids, oldest first."""
    ids = []
    for n in range(count):
        bundle = fresh("referral-gp.json", commune=commune, tag=f"batch{commune}-{n}")
        ids.append((await take_in(database, read_referral(bundle, "transaction"), routing)).service_request_id)
    return ids


async def _entries(database: Database) -> dict[str, OutboxEntry]:
    """The outbox, by the id of the ServiceRequest each entry delivers."""
    async with UnitOfWork(database, write=False) as uow:
        return {str(entry.payload["focus"]).split("/")[1]: entry for entry in await uow.outbox.entries()}


async def _delivery_status(database: Database, service_request_id: str) -> str:
    return str((await _intake_task(database, service_request_id))["businessStatus"]["coding"][0]["code"])


def _focus(request: httpx.Request) -> str:
    header = json.loads(request.content)["entry"][0]["resource"]
    return str(header["focus"][0]["reference"]).rsplit("/", 1)[-1]


def _enqueue(uow: UnitOfWork, destination: str, count: int, start: int) -> list[str]:
    ids = []
    for n in range(count):
        ids.append(new_id())
        uow.outbox.enqueue(
            id=ids[-1],
            destination=destination,
            endpoint=f"https://{destination}.example.org/fhir",
            event="referral-request",
            payload={"focus": f"ServiceRequest/{destination}-{n}"},
            now=utc_now() - timedelta(seconds=100 - start - n),  # due, in this order
        )
    return ids


# --- the store: claims and outcomes in batches ---


async def test_a_claim_leases_many_in_one_statement_within_each_destinations_room(database: Database) -> None:
    async with UnitOfWork(database) as uow:
        busy = _enqueue(uow, "busy", 5, start=0)  # the oldest: a backlog for one platform
        quiet = _enqueue(uow, "quiet", 2, start=10)
        await uow.commit()
    async with UnitOfWork(database) as uow:
        claimed = await uow.outbox.claim("w1", utc_now(), LEASE, 10, per_destination=2)
        await uow.commit()
    # at most two for each destination: the backlog of one does not fill the claim and hold the other back
    assert [entry.id for entry in claimed] == [*busy[:2], *quiet]
    async with UnitOfWork(database) as uow:  # a destination without room is passed over, the others are not
        again = await uow.outbox.claim("w2", utc_now(), LEASE, 10, per_destination=2, rooms={"busy": 0})
        assert again == []
        again = await uow.outbox.claim("w2", utc_now(), LEASE, 10, per_destination=2, rooms={"busy": 1})
        await uow.commit()
    assert [entry.id for entry in again] == [busy[2]]  # leased rows are not claimed twice


async def test_outcomes_of_a_batch_are_recorded_together_except_a_lease_lost(database: Database) -> None:
    async with UnitOfWork(database) as uow:
        ids = _enqueue(uow, "dac", 4, start=0)
        await uow.commit()
    now = utc_now()
    async with UnitOfWork(database) as uow:
        assert len(await uow.outbox.claim("w1", now, timedelta(seconds=-1), 4)) == 4  # claimed, then w1 stalls
        await uow.commit()
    async with UnitOfWork(database) as uow:  # w1's leases ran out: w2 takes the first entry over
        (taken,) = await uow.outbox.claim("w2", utc_now(), LEASE, 1)
        await uow.commit()
    assert taken.id == ids[0]
    retry_at = now + timedelta(seconds=30)
    async with UnitOfWork(database) as uow:
        recorded = await uow.outbox.finish(
            "w1",
            [
                Finished(ids[0], DELIVERED, 1, now),
                Finished(ids[1], DELIVERED, 1, now),
                Finished(ids[2], PENDING, 1, retry_at, "HTTP 503"),
                Finished(ids[3], DEAD, 1, now, "HTTP 400"),
            ],
        )
        await uow.commit()
    assert recorded == set(ids[1:])
    async with UnitOfWork(database, write=False) as uow:
        entries = {entry.id: entry for entry in await uow.outbox.entries()}
    assert (entries[ids[0]].status, entries[ids[0]].attempts) == (PENDING, 0)  # w2's, untouched
    assert (entries[ids[1]].status, entries[ids[1]].attempts, entries[ids[1]].delivered_at) == (DELIVERED, 1, now)
    assert (entries[ids[2]].status, entries[ids[2]].next_attempt_at, entries[ids[2]].last_error) == (
        PENDING,
        retry_at,
        "HTTP 503",
    )
    assert (entries[ids[3]].status, entries[ids[3]].last_error) == (DEAD, "HTTP 400")


# --- the dispatcher ---


@respx.mock
async def test_mixed_outcomes_each_reach_their_entry_and_task(database: Database, routing: RoutingTable) -> None:
    delivered, retried, refused = await _referrals(database, routing, 3)
    answers = {delivered: httpx.Response(200), retried: httpx.Response(503), refused: httpx.Response(400)}
    route = respx.post(PARIS).mock(side_effect=lambda request: answers[_focus(request)])
    async with httpx.AsyncClient() as client:
        assert await _dispatcher(database, routing, client).deliver_due() == 3
    assert route.call_count == 3
    entries = await _entries(database)
    assert [(entries[sr].status, entries[sr].attempts) for sr in (delivered, retried, refused)] == [
        (DELIVERED, 1),
        (PENDING, 1),
        (DEAD, 1),
    ]
    assert entries[retried].next_attempt_at > utc_now() + timedelta(seconds=10)  # backoff, not at once
    assert [await _delivery_status(database, sr) for sr in (delivered, retried, refused)] == [
        "delivered",
        "queued",
        "failed",
    ]
    # the search index follows the Tasks' new versions: each is found by its new status, none by the old
    for status, service_requests in (("delivered", {delivered}), ("queued", {retried}), ("failed", {refused})):
        async with UnitOfWork(database, write=False) as uow:
            _, tasks = await uow.resources.search(
                parse_search("Task", [("business-status", status)], default_count=10, max_count=10)
            )
        assert {str(task.content["focus"]["reference"]).split("/")[1] for task in tasks} == service_requests


@respx.mock
async def test_a_lease_lost_during_the_attempt_is_left_to_the_worker_that_took_it(
    database: Database, routing: RoutingTable
) -> None:
    first, second = await _referrals(database, routing, 2)
    both_sent = asyncio.Event()
    sent: list[str] = []

    async def platform(request: httpx.Request) -> httpx.Response:
        sent.append(_focus(request))
        if len(sent) == 2:
            # Both attempts are under way and our leases have run out: another worker takes the first over.
            async with UnitOfWork(database) as uow:
                (taken,) = await uow.outbox.claim("other-worker", utc_now(), LEASE, 1)
                await uow.commit()
            assert str(taken.payload["focus"]).endswith(first)
            both_sent.set()
        await both_sent.wait()
        return httpx.Response(200)

    respx.post(PARIS).mock(side_effect=platform)
    async with httpx.AsyncClient() as client:
        await _dispatcher(database, routing, client, lease=timedelta(seconds=-1)).deliver_due()
    entries = await _entries(database)
    assert (entries[second].status, await _delivery_status(database, second)) == (DELIVERED, "delivered")
    # the other worker's lease stands: its own attempt will count, and the Task waits for it
    assert (entries[first].status, entries[first].attempts) == (PENDING, 0)
    assert await _delivery_status(database, first) == "queued"


@respx.mock
async def test_a_crash_between_claim_and_record_is_retaken_after_the_lease(
    database: Database, routing: RoutingTable
) -> None:
    (service_request,) = await _referrals(database, routing, 1)
    hang, on_the_wire = asyncio.Event(), asyncio.Event()
    calls: list[str] = []

    async def platform(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content)["entry"][0]["resource"]["id"])
        if len(calls) == 1:
            on_the_wire.set()
            await hang.wait()  # the first worker dies while its message is on the wire
        return httpx.Response(200)

    respx.post(PARIS).mock(side_effect=platform)
    async with httpx.AsyncClient() as client:
        crashed = _dispatcher(database, routing, client, lease=timedelta(seconds=1))
        assert await crashed.dispatch() == 1
        await asyncio.wait_for(on_the_wire.wait(), 10)
        for task in list(crashed._tasks):  # the process is gone: nothing after the claim is recorded
            task.cancel()
        await crashed.drain()
        survivor = _dispatcher(database, routing, client)
        assert await survivor.deliver_due() == 0  # the lease still holds
        await asyncio.sleep(1.1)
        assert await survivor.deliver_due() == 1
    entry = (await _entries(database))[service_request]
    assert (entry.status, entry.attempts) == (DELIVERED, 1)
    assert calls == [entry.id, entry.id]  # the same MessageHeader id both times: the platform drops the double
    assert await _delivery_status(database, service_request) == "delivered"


@respx.mock
async def test_a_destination_at_its_slot_limit_does_not_hold_back_another_in_the_same_claim(
    database: Database, routing: RoutingTable
) -> None:
    paris = await _referrals(database, routing, HELD_PER_SLOT + 1)  # the oldest: one more than one slot holds
    (reunion,) = await _referrals(database, routing, 1, commune="97411")
    release, paris_sent, reunion_sent = asyncio.Event(), asyncio.Event(), asyncio.Event()
    paris_sending, most_paris_sending = 0, 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal paris_sending, most_paris_sending
        paris_sending += 1
        most_paris_sending = max(most_paris_sending, paris_sending)
        paris_sent.set()
        await release.wait()
        paris_sending -= 1
        return httpx.Response(200)

    def fast(request: httpx.Request) -> httpx.Response:
        reunion_sent.set()
        return httpx.Response(200)

    paris_route = respx.post(PARIS).mock(side_effect=slow)
    respx.post(REUNION).mock(side_effect=fast)
    async with httpx.AsyncClient() as client:
        dispatcher = _dispatcher(database, routing, client, per_destination=1, batch=2 * HELD_PER_SLOT)
        # Leased at once: what Paris's one slot holds (one sending, the others queued behind it), and La Réunion's.
        assert await dispatcher.dispatch() == HELD_PER_SLOT + 1
        await asyncio.wait_for(asyncio.gather(paris_sent.wait(), reunion_sent.wait()), 10)
        assert (dispatcher.in_flight["dac-75"], dispatcher.sending["dac-75"]) == (HELD_PER_SLOT, 1)
        for _ in range(100):  # La Réunion's is recorded while Paris's first attempt still hangs
            if (entries := await _entries(database))[reunion].status == DELIVERED:
                break
            await asyncio.sleep(0.01)
        assert entries[reunion].status == DELIVERED
        assert [entries[sr].status for sr in paris] == [PENDING] * len(paris)
        release.set()
        await dispatcher.drain()  # the queued ones went out as the slot freed
        assert await dispatcher.deliver_due() == 1
    assert paris_route.call_count == len(paris) and most_paris_sending == 1
    assert not dispatcher.in_flight and not dispatcher.sending
    assert {entry.status for entry in (await _entries(database)).values()} == {DELIVERED}


@respx.mock
async def test_each_delivery_that_ends_wakes_the_worker_to_claim_again(
    database: Database, routing: RoutingTable
) -> None:
    """No threshold of free slots: a claim takes long on a loop busy sending, and the queue must not run dry while
    the worker waits for one; what ends during a claim makes the next one's size."""
    await _referrals(database, routing, HELD_PER_SLOT + 1)
    arrivals: asyncio.Queue[None] = asyncio.Queue()
    answers: asyncio.Queue[None] = asyncio.Queue()

    async def platform(request: httpx.Request) -> httpx.Response:
        arrivals.put_nowait(None)
        await answers.get()
        return httpx.Response(200)

    respx.post(PARIS).mock(side_effect=platform)
    async with httpx.AsyncClient() as client:
        dispatcher = _dispatcher(database, routing, client, per_destination=1, batch=2 * HELD_PER_SLOT)
        assert await dispatcher.dispatch() == HELD_PER_SLOT  # one sending, the others queued: the last one waits
        await asyncio.wait_for(arrivals.get(), 10)
        dispatcher.slot_freed.clear()
        answers.put_nowait(None)
        await asyncio.wait_for(arrivals.get(), 10)  # the next one is sent: the first one's delivery is over
        assert dispatcher.slot_freed.is_set()
        assert await dispatcher.dispatch() == 1  # the room it left, at once
        for _ in range(HELD_PER_SLOT):
            answers.put_nowait(None)
        await dispatcher.drain()
    assert {entry.status for entry in (await _entries(database)).values()} == {DELIVERED}


@respx.mock
async def test_a_stopping_worker_gives_back_what_waits_behind_busy_slots(
    database: Database, routing: RoutingTable
) -> None:
    await _referrals(database, routing, HELD_PER_SLOT + 1)
    release, sent = asyncio.Event(), asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        sent.set()
        await release.wait()
        return httpx.Response(200)

    route = respx.post(PARIS).mock(side_effect=slow)
    async with httpx.AsyncClient() as client:
        dispatcher = _dispatcher(database, routing, client, per_destination=1, batch=2 * HELD_PER_SLOT)
        assert await dispatcher.dispatch() == HELD_PER_SLOT  # one sending, the others queued behind it
        await asyncio.wait_for(sent.wait(), 10)
        assert await dispatcher.release_queued() == HELD_PER_SLOT - 1
        leased = [entry for entry in (await _entries(database)).values() if entry.status == PENDING]
        async with UnitOfWork(database) as uow:  # those given back are due at once, for any worker
            taken = await uow.outbox.claim("another", utc_now(), LEASE, 100)
            await uow.commit()
        assert len(leased) == HELD_PER_SLOT + 1 and len(taken) == HELD_PER_SLOT  # those, and the last, never claimed
        release.set()
        await dispatcher.drain()
    assert route.call_count == 1 and not dispatcher.in_flight


@respx.mock
async def test_an_entry_queued_until_too_little_of_its_lease_is_left_is_given_back_not_sent(
    database: Database, routing: RoutingTable
) -> None:
    await _referrals(database, routing, 2)

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.6)  # the entry queued behind it has less than an attempt's time left
        return httpx.Response(200)

    route = respx.post(PARIS).mock(side_effect=slow)
    async with httpx.AsyncClient() as client:
        dispatcher = _dispatcher(
            database, routing, client, per_destination=1, batch=8, lease=timedelta(seconds=1), attempt_time=0.5
        )
        assert await dispatcher.dispatch() == 2
        await dispatcher.drain()
    assert route.call_count == 1 and not dispatcher.in_flight
    statuses = sorted((entry.status, entry.attempts) for entry in (await _entries(database)).values())
    assert statuses == [(DELIVERED, 1), (PENDING, 0)]
    async with UnitOfWork(database) as uow:  # given back: due at once, for any worker
        assert len(await uow.outbox.claim("another", utc_now(), LEASE, 10)) == 1
        await uow.commit()
