"""The worker: the gateway's background jobs — GP validation deadlines now, deliveries to the platforms next.

``gateway worker`` runs it alone (several may share one PostgreSQL database: every job is safe to run twice);
``gateway serve`` runs it beside the API in the same event loop.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from gateway.store.database import Database
from gateway.workflow.deadlines import escalate_due

log = structlog.get_logger("gateway.worker")


async def run_once(database: Database) -> None:
    await escalate_due(database)


async def run_worker(database: Database, interval: float, stop: asyncio.Event) -> None:
    log.info("worker_started", interval_seconds=interval)
    while not stop.is_set():
        try:
            await run_once(database)
        except Exception as exc:  # a failing round must not kill the worker; the next one retries
            log.error("worker_round_failed", error_type=type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
    log.info("worker_stopped")
