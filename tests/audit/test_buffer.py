"""The audit buffer: bounded (the oldest dropped and counted), and stopped without losing a batch in flight."""

from __future__ import annotations

import asyncio
import tracemalloc
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.audit import buffer as buffer_module
from gateway.audit.buffer import AuditBuffer
from gateway.audit.events import AuditedInteraction, audit_event
from gateway.store import Database, UnitOfWork
from tests.audit.test_audit import audit_events


def _event(n: int) -> dict[str, Any]:
    return {"resourceType": "AuditEvent", "recorded": "2026-11-29T00:00:00Z", "id": f"e{n}"}


async def test_stop_lets_the_flush_under_way_finish(database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    flushing = asyncio.Event()

    class SlowUnitOfWork(UnitOfWork):
        async def commit(self) -> None:
            flushing.set()
            await asyncio.sleep(0.2)  # stop() arrives while this batch is being written
            await super().commit()

    monkeypatch.setattr(buffer_module, "UnitOfWork", SlowUnitOfWork)
    buffer = AuditBuffer(database, interval=0.01)
    buffer.add(_event(1))
    buffer.start()
    await asyncio.wait_for(flushing.wait(), timeout=5)
    buffer.add(_event(2))  # arrives during the flush: written by stop()'s last flush
    await buffer.stop()
    assert len(await audit_events(database)) == 2


async def test_a_full_buffer_drops_its_oldest_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(buffer_module, "MAX_PENDING", 3)
    buffer = AuditBuffer(Database("sqlite:////nonexistent-directory/audit.db"))
    for n in range(5):
        buffer.add(_event(n))
    assert [e["id"] for e in buffer._pending] == ["e2", "e3", "e4"] and buffer.dropped == 2
    await buffer.flush()  # fails: kept, still bounded, newer events win
    buffer.add(_event(5))
    assert [e["id"] for e in buffer._pending] == ["e3", "e4", "e5"] and buffer.dropped == 3


def test_a_full_buffer_stays_well_under_a_process_budget() -> None:
    """Issue 21: a process stays under 200 MB. The buffer full of search events (what reads leave) while the
    database is away: at most MAX_PENDING of them, and they take less than 80 MB."""
    buffer = AuditBuffer(Database("sqlite:////nonexistent-directory/audit.db"))
    now = datetime.now(UTC)
    tracemalloc.start()
    try:
        for n in range(buffer_module.MAX_PENDING + 100):
            interaction = AuditedInteraction(
                "search-type", "dac75-app", now, entities=(f"Task/{n:036d}",), query="status=requested&_count=50"
            )
            buffer.add(audit_event(replace(interaction, query_type="Task")))
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(buffer._pending) == buffer_module.MAX_PENDING and buffer.dropped == 100
    assert used < 80 * 2**20, f"{used / 2**20:.0f} MB"
