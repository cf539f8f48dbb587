from __future__ import annotations

import gc

import httpx

from gateway import Settings, create_app
from gateway.routing.config import RoutingTable
from gateway.store import Database
from tests.conftest import load_example

FHIR_JSON = {"content-type": "application/fhir+json"}


async def test_post_example_and_read_back(client: httpx.AsyncClient) -> None:
    bundle = load_example("referral-gp.json")
    response = await client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["type"] == "transaction-response"
    assert len(answer["entry"]) == len(bundle["entry"])


async def test_start_up_freezes_what_it_built(settings: Settings, database: Database, routing: RoutingTable) -> None:
    """What start-up builds lives as long as the process: frozen, full garbage collections stop walking it."""
    app = create_app(settings, database, routing)
    gc.unfreeze()
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() > 10_000  # the compiled profiles alone are tens of thousands of objects
