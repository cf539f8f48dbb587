"""The worker: the gateway's background jobs — deliveries from the outbox, GP validation deadlines.

``gateway worker`` runs it alone (several may share one PostgreSQL database: claims are leases taken with
``SKIP LOCKED``, escalations are version-checked); ``gateway serve`` runs it beside the API in one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta

import httpx
import structlog

from gateway.config import Settings
from gateway.routing.config import RoutingTable
from gateway.routing.delivery import DeliverySettings, Dispatcher, http_client
from gateway.store.database import Database
from gateway.workflow.deadlines import escalate_due

log = structlog.get_logger("gateway.worker")
DEFAULT_BASE_URL = "http://127.0.0.1:8080/fhir"


def delivery_settings(settings: Settings) -> DeliverySettings:
    return DeliverySettings(
        base_url=(settings.base_url or DEFAULT_BASE_URL).rstrip("/"),
        max_attempts=settings.delivery_max_attempts,
        backoff_base=settings.delivery_backoff_base,
        backoff_cap=settings.delivery_backoff_cap,
        lease=timedelta(seconds=settings.delivery_lease),
    )


async def run_worker(
    database: Database,
    routing: RoutingTable,
    settings: Settings,
    stop: asyncio.Event,
    client: httpx.AsyncClient | None = None,
) -> None:
    own_client = client is None
    client = client or http_client(settings.delivery_timeout)
    dispatcher = Dispatcher(database, routing, client, delivery_settings(settings))
    last_deadlines = float("-inf")
    log.info("worker_started", worker=dispatcher.owner)
    try:
        while not stop.is_set():
            try:
                if time.monotonic() - last_deadlines >= settings.scheduler_interval:
                    last_deadlines = time.monotonic()
                    await escalate_due(database)
                await dispatcher.dispatch()
            except Exception as exc:  # a failing round must not kill the worker; the next one retries
                log.error("worker_round_failed", error_type=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=settings.delivery_poll_interval)
        await dispatcher.drain()
    finally:
        if own_client:
            await client.aclose()
        log.info("worker_stopped", worker=dispatcher.owner)
