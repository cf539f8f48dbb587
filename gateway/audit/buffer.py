"""AuditEvents of interactions that change nothing, written in bulk every ~100 ms.

Why buffering is acceptable here and not for changes: a read, a search or a refused request leaves the data as
it was, so at worst a crash loses the record of the last ~100 ms of lookups — never a change without its trace.
Writing each in a transaction of its own would add a write transaction to every read (on SQLite, a turn at the
single writer's lock), the hottest path of the API. A change's AuditEvent is written in the change's own
transaction instead (``gateway.audit.context``): committed together, or rolled back together.
"""

from __future__ import annotations

import asyncio
from collections import deque

import structlog

from gateway.fhir.types import Resource
from gateway.store.database import Database
from gateway.store.unit_of_work import UnitOfWork

log = structlog.get_logger("gateway.audit")
#: Beyond this many waiting events the oldest are dropped and counted, rather than the process growing without
#: bound while the database is unreachable. An event is about 6 KB of Python objects (measured): 10,000 are some
#: 60 MB, what a process under 200 MB can spare (issue 21) — 100,000 would have been 570 MB.
MAX_PENDING = 10_000


class AuditBuffer:
    """Events wait in a bounded deque (the oldest dropped in O(1) when full); a task flushes them every
    ``interval``. ``stop()`` lets a flush under way finish, then writes what is left: nothing is cancelled mid-way,
    so no swapped-out batch is lost."""

    def __init__(self, database: Database, interval: float = 0.1) -> None:
        self._database = database
        self._interval = interval
        self._pending: deque[Resource] = deque(maxlen=MAX_PENDING)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.dropped = 0

    def add(self, event: Resource) -> None:
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1  # append() drops the oldest
        self._pending.append(event)

    async def flush(self) -> None:
        events, self._pending = self._pending, deque(maxlen=MAX_PENDING)
        if not events:
            return
        try:
            async with UnitOfWork(self._database) as uow:
                for event in events:
                    uow.resources.add(event)
                await uow.commit()
        except Exception as exc:  # the database is away: keep them for the next flush, the newest if too many
            log.warning("audit_flush_failed", error_type=type(exc).__name__, events=len(events))
            newer = self._pending
            self._pending = events
            for event in newer:
                self.add(event)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=self._interval)
            except TimeoutError:
                await self.flush()

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Wait for the flush under way (never cancel it), then write what is left."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self.flush()
