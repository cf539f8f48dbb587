"""Deliveries leave when they are committed, not at the worker's next poll: the transaction that enqueues them
wakes this process's worker, and on PostgreSQL notifies (LISTEN/NOTIFY) the workers of every other process."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import respx

from gateway import worker
from gateway.config import Settings
from gateway.routing.config import RoutingTable
from gateway.store import Database, UnitOfWork
from tests.routing.test_delivery_batches import _enqueue, _referrals
from tests.support.databases import USES_POSTGRESQL

PARIS = "https://dac75.example.org/fhir/$process-message"


async def test_a_commit_that_enqueues_wakes_this_processs_workers(database: Database) -> None:
    woken = database.outbox_event()
    try:
        async with UnitOfWork(database) as uow:  # rolled back: nothing to deliver, nobody woken
            _enqueue(uow, "dac-75", 1, 0)
        assert not woken.is_set()
        async with UnitOfWork(database) as uow:  # committed without deliveries: nobody woken either
            await uow.commit()
        assert not woken.is_set()
        async with UnitOfWork(database) as uow:
            _enqueue(uow, "dac-75", 1, 1)
            await uow.commit()
        assert woken.is_set()
    finally:
        database.drop_outbox_event(woken)


@pytest.mark.skipif(not USES_POSTGRESQL, reason="LISTEN/NOTIFY is PostgreSQL's")
async def test_another_process_commit_reaches_a_listening_worker(database: Database, database_url: str) -> None:
    listening = Database(database_url)  # another process's view: its own engine, its own events
    woken, stop = listening.outbox_event(), asyncio.Event()
    own = database.outbox_event()
    # Each process runs its listener (the worker starts it): it notifies the others of this process's commits.
    listeners = [asyncio.create_task(db.listen_outbox(stop)) for db in (database, listening)]
    try:
        for n in range(200):  # until both LISTENs are in place: a notification before that is not queued
            async with UnitOfWork(database) as uow:
                _enqueue(uow, "dac-75", 1, n)
                await uow.commit()
            try:
                await asyncio.wait_for(woken.wait(), 0.05)
                break
            except TimeoutError:
                continue
        assert woken.is_set()
        await asyncio.sleep(1.0)  # the notifications of the loop's earlier commits may still be on their way
        woken.clear()
        await asyncio.sleep(0.3)
        assert not woken.is_set()  # nothing more: no echo bouncing between the processes
        own.clear()
        async with UnitOfWork(database) as uow:  # each later commit with deliveries reaches it
            _enqueue(uow, "dac-75", 1, 1000)
            await uow.commit()
        assert own.is_set()  # this process's worker at once, without the round trip
        await asyncio.wait_for(woken.wait(), 5)
        own.clear()
        async with UnitOfWork(listening) as uow:  # and the other way round
            _enqueue(uow, "dac-75", 1, 2000)
            await uow.commit()
        await asyncio.wait_for(own.wait(), 5)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*listeners), 10)
        listening.drop_outbox_event(woken)
        database.drop_outbox_event(own)
        await listening.dispose()


@respx.mock
async def test_a_referral_is_delivered_at_once_not_at_the_next_poll(
    database: Database, routing: RoutingTable, settings: Settings
) -> None:
    received = asyncio.Event()

    def platform(request: httpx.Request) -> httpx.Response:
        received.set()
        return httpx.Response(200)

    respx.post(PARIS).mock(side_effect=platform)
    slow_polls = settings.model_copy(update={"delivery_poll_interval": 60.0})
    stop = asyncio.Event()
    async with httpx.AsyncClient() as client:
        running = asyncio.create_task(worker.run_worker(database, routing, slow_polls, stop, client))
        try:
            await asyncio.sleep(0.2)  # the worker's first look found nothing: it now waits up to a minute
            assert not received.is_set()
            await _referrals(database, routing, 1)
            await asyncio.wait_for(received.wait(), 5)
        finally:
            stop.set()
            await asyncio.wait_for(running, 10)
