"""The worker: what its jobs change is audited in the same transaction, with the gateway as agent."""

from __future__ import annotations

import asyncio
import gc
from datetime import timedelta
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from gateway import cli, worker
from gateway.config import Settings
from gateway.fhir.primitives import utc_now
from gateway.routing.config import RoutingTable
from gateway.store import Database
from gateway.workflow.deadlines import escalate_due
from tests.audit.test_audit import audit_events
from tests.conftest import EXAMPLE_ROUTING
from tests.support.databases import USES_POSTGRESQL
from tests.workflow.test_decisions_api import _gp_validation


async def test_a_deadline_escalation_by_the_worker_is_audited(
    client: httpx.AsyncClient,
    database: Database,
    routing: RoutingTable,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, task = await _gp_validation(client)
    later = utc_now() + timedelta(days=30)
    escalated = asyncio.Event()

    async def escalate_later(db: Database, *, routing: RoutingTable) -> int:
        count = await escalate_due(db, later, routing=routing)
        escalated.set()
        return count

    monkeypatch.setattr(worker, "escalate_due", escalate_later)
    before = {event["id"] for event in await audit_events(database)}
    stop = asyncio.Event()
    no_network = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(503)))
    running = asyncio.create_task(worker.run_worker(database, routing, settings, stop, no_network))
    await asyncio.wait_for(escalated.wait(), timeout=10)
    stop.set()
    await asyncio.wait_for(running, timeout=10)
    await no_network.aclose()

    new: list[dict[str, Any]] = [e for e in await audit_events(database) if e["id"] not in before]
    (event,) = [e for e in new if any(f"Task/{task['id']}/_history/" in str(x) for x in e.get("entity", []))]
    assert event["subtype"][0]["code"] == "update" and event["outcome"] == "0"
    assert event["agent"][0]["who"]["identifier"]["value"] == "dac-gateway"
    entities = [entity["what"]["reference"] for entity in event["entity"]]
    assert f"Task/{task['id']}/_history/2" in entities
    assert any(reference.startswith("Task/") and reference != f"Task/{task['id']}/_history/2" for reference in entities)


def test_messages_are_on_the_configured_base_else_the_served_address() -> None:
    """What the worker sends answers no request: GATEWAY_BASE_URL, else where `gateway serve` listens."""
    served = Settings(auth="off", listen_url="http://localhost:8080/fhir")
    assert worker.delivery_settings(served).base_url == "http://localhost:8080/fhir"
    configured = served.model_copy(update={"base_url": "https://dac.example.fr/fhir/"})
    assert worker.delivery_settings(configured).base_url == "https://dac.example.fr/fhir"


@pytest.mark.skipif(not USES_POSTGRESQL, reason="`gateway worker` needs PostgreSQL")
def test_a_separate_worker_settles_its_heap_before_it_delivers(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``gateway worker`` freezes what its start-up built, as ``gateway serve`` does (``settle_heap``): unfrozen, the
    collector took 0.22 ms of a delivery's ~1.9 ms there."""
    seen: list[int] = []

    async def started(*_: Any, **__: Any) -> None:
        seen.append(gc.get_freeze_count())

    monkeypatch.setattr(worker, "run_worker", started)
    monkeypatch.setattr(cli, "configure_logging", lambda *_, **__: None)  # not onto the runner's own output
    monkeypatch.setenv("GATEWAY_DATABASE_URL", database_url)
    monkeypatch.setenv("GATEWAY_ROUTING", str(EXAMPLE_ROUTING))
    monkeypatch.setenv("GATEWAY_AUTH", "off")
    gc.unfreeze()
    try:
        result = CliRunner().invoke(cli.app, ["worker"])
    finally:
        gc.unfreeze()
    assert result.exit_code == 0, result.output
    (frozen,) = seen
    assert frozen > 10_000  # the compiled profiles alone are tens of thousands of objects
