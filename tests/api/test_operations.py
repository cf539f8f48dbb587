from __future__ import annotations

import httpx

from tests.conftest import load_example


async def test_health_and_ready(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    ready = await client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


async def test_metrics_show_requests_referrals_and_queue_health(client: httpx.AsyncClient) -> None:
    await client.post("/fhir", json=load_example("referral-gp.json"), headers={"content-type": "application/fhir+json"})
    text = (await client.get("/metrics")).text
    assert 'gateway_http_requests_total{method="POST",route="/fhir",status="200"}' in text
    assert 'gateway_referrals_total{outcome="stored"}' in text
    assert 'gateway_outbox_entries{destination="dac-75",status="pending"} 1.0' in text
    assert 'gateway_outbox_oldest_pending_seconds{destination="dac-75"}' in text
