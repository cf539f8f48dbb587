"""Delivering the outbox: lease due entries, POST each message to ``{endpoint}/$process-message``, record what
happened, and show it on the ``platform-intake`` Task.

Each destination has its own concurrency slots and each entry its own backoff, so a platform that is down,
slow or refusing only delays its own messages. The dispatcher is given its ``httpx.AsyncClient``: tests hand
it a mock transport (respx), production a pooled client with timeouts.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import orjson
import structlog

from gateway import metrics
from gateway.audit.events import delivery_event
from gateway.fhir.primitives import fhir_instant, utc_now
from gateway.fhir.types import Resource
from gateway.routing.config import RoutingTable
from gateway.routing.messages import NothingToSend, build_message
from gateway.routing.retry import AttemptResult, Verdict, backoff, judge_response
from gateway.routing.schedule import REFERRAL_REQUEST, delivery_status, schedule_update
from gateway.store.database import Database
from gateway.store.outbox import OutboxEntry
from gateway.store.unit_of_work import UnitOfWork
from gateway.workflow.transitions import FINAL

log = structlog.get_logger("gateway.delivery")
FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    base_url: str  # our FHIR base, for MessageHeader.source and fullUrls
    max_attempts: int = 12
    backoff_base: float = 2.0
    backoff_cap: float = 3600.0
    lease: timedelta = timedelta(seconds=120)
    batch: int = 64
    per_destination: int = 8


def http_client(timeout: float = 20.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=5.0),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=50),
        headers={"User-Agent": "dac-gateway"},
    )


class Dispatcher:
    def __init__(
        self,
        database: Database,
        routing: RoutingTable,
        client: httpx.AsyncClient,
        settings: DeliverySettings,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.database = database
        self.routing = routing
        self.client = client
        self.settings = settings
        self.owner = f"worker-{uuid.uuid4().hex[:12]}"
        self.rng = rng or random.Random()
        self.in_flight: Counter[str] = Counter()
        self.slot_freed = asyncio.Event()  # set when a delivery ends: the worker can lease more at once
        self._tasks: set[asyncio.Task[None]] = set()

    async def dispatch(self) -> int:
        """Lease what is due and start sending it (without waiting); returns how many were started."""
        saturated = [d for d, n in self.in_flight.items() if n >= self.settings.per_destination]
        room = self.settings.batch - sum(self.in_flight.values())
        if room <= 0:
            return 0
        async with UnitOfWork(self.database) as uow:
            entries = await uow.outbox.claim(self.owner, utc_now(), self.settings.lease, room, saturated)
            await uow.commit()
        started = 0
        for entry in entries:
            if self.in_flight[entry.destination] >= self.settings.per_destination:
                await self._release(entry)  # over this destination's share: someone (or the next round) takes it
                continue
            self.in_flight[entry.destination] += 1
            task = asyncio.create_task(self._deliver(entry))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started += 1
        return started

    async def drain(self) -> None:
        """Wait for every delivery started so far."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def deliver_due(self) -> int:
        """Send everything due now, and wait for the answers (tests, the CLI)."""
        total = 0
        while started := await self.dispatch():
            total += started
            await self.drain()
        await self.drain()
        return total

    async def _release(self, entry: OutboxEntry) -> None:
        async with UnitOfWork(self.database) as uow:
            await uow.outbox.mark_retry(entry.id, self.owner, utc_now(), entry.attempts, entry.last_error or "")
            await uow.commit()

    def _headers(self, entry: OutboxEntry) -> dict[str, str]:
        headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
        platform = self.routing.platforms.get(entry.destination)
        if platform is not None and platform.auth.type == "bearer" and platform.auth.token_env:
            token = os.environ.get(platform.auth.token_env)
            if token:
                headers["Authorization"] = f"Bearer {token}"
        return headers

    async def _attempt(self, entry: OutboxEntry) -> AttemptResult:
        try:
            async with UnitOfWork(self.database, write=False) as uow:
                message = await build_message(uow, entry, self.settings.base_url)
        except NothingToSend as exc:
            return AttemptResult(Verdict.DEAD, str(exc))
        url = f"{entry.endpoint.rstrip('/')}/$process-message"
        try:
            response = await self.client.post(url, content=orjson.dumps(message), headers=self._headers(entry))
        except httpx.TimeoutException as exc:
            return AttemptResult(Verdict.RETRY, f"timeout ({type(exc).__name__})")
        except httpx.HTTPError as exc:
            return AttemptResult(Verdict.RETRY, f"network error ({type(exc).__name__})")
        except (httpx.InvalidURL, ValueError) as exc:  # will never work: a dead letter, visible, not a loop
            return AttemptResult(Verdict.DEAD, f"invalid endpoint ({type(exc).__name__})")
        return judge_response(response.status_code, response.headers.get("retry-after"), response.text, utc_now())

    async def _deliver(self, entry: OutboxEntry) -> None:
        try:
            started = time.perf_counter()
            result = await self._attempt(entry)
            metrics.delivery_latency.labels(entry.destination).observe(time.perf_counter() - started)
            metrics.deliveries.labels(entry.destination, result.verdict.value).inc()
            await self._record(entry, result)
        except Exception as exc:  # the lease expires and the entry is taken again: nothing is lost
            log.error("delivery_crashed", delivery_id=entry.id, error_type=type(exc).__name__)
        finally:
            self.in_flight[entry.destination] -= 1
            if self.in_flight[entry.destination] <= 0:
                del self.in_flight[entry.destination]
            self.slot_freed.set()

    async def _record(self, entry: OutboxEntry, result: AttemptResult) -> None:
        now = utc_now()
        attempts = entry.attempts + 1
        verdict = result.verdict
        if verdict is Verdict.RETRY and attempts >= self.settings.max_attempts:
            verdict = Verdict.DEAD
        async with UnitOfWork(self.database) as uow:
            if verdict is Verdict.DELIVERED:
                recorded = await uow.outbox.mark_delivered(entry.id, self.owner, now, attempts)
            elif verdict is Verdict.RETRY:
                delay = backoff(
                    attempts,
                    base=self.settings.backoff_base,
                    cap=self.settings.backoff_cap,
                    retry_after=result.retry_after,
                    rng=self.rng,
                )
                recorded = await uow.outbox.mark_retry(
                    entry.id, self.owner, now + timedelta(seconds=delay), attempts, result.error or ""
                )
            else:
                recorded = await uow.outbox.mark_dead(entry.id, self.owner, attempts, result.error or "")
            if not recorded:  # our lease ran out and another worker has it: its outcome will count
                return
            uow.resources.add(_audit(entry, verdict, now))
            if entry.task_id and verdict is not Verdict.RETRY:
                await _show_on_task(uow, entry.task_id, verdict, result.error, now)
                if entry.event == REFERRAL_REQUEST:
                    focus = str(entry.payload.get("focus", ""))
                    await schedule_update(uow, focus, now, "delivered" if verdict is Verdict.DELIVERED else "failed")
            await uow.commit()
        log.info(
            "delivery",
            delivery_id=entry.id,
            destination=entry.destination,
            verdict=verdict.value,
            attempts=attempts,
            error=result.error,
        )


def _audit(entry: OutboxEntry, verdict: Verdict, now: datetime) -> Resource:
    """The attempt's AuditEvent, in the transaction that records its outcome."""
    focus = entry.payload.get("focus")
    references = tuple(
        reference
        for reference in (f"Task/{entry.task_id}" if entry.task_id else None, focus if isinstance(focus, str) else None)
        if reference
    )
    outcome = {Verdict.DELIVERED: "0", Verdict.RETRY: "4"}.get(verdict, "8")
    return delivery_event(entry.id, entry.destination, references, outcome, now)


async def _show_on_task(
    uow: UnitOfWork, task_id: str, verdict: Verdict, error: str | None, now: datetime, tries: int = 3
) -> None:
    for _ in range(tries):
        current = await uow.resources.get("Task", task_id)
        if current is None or current.content.get("status") in FINAL:
            return  # a cancelled Task (the patient objected) keeps saying why
        task = dict(current.content)
        task["businessStatus"] = delivery_status("delivered" if verdict is Verdict.DELIVERED else "failed")
        task["lastModified"] = fhir_instant(now)
        if error:
            task["note"] = [*task.get("note", []), {"time": fhir_instant(now), "text": f"Delivery failed: {error}"}]
        if await uow.resources.update(current, task) is not None:
            return
