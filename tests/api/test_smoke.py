from __future__ import annotations

import httpx

from tests.conftest import load_example

FHIR_JSON = {"content-type": "application/fhir+json"}


async def test_post_example_and_read_back(client: httpx.AsyncClient) -> None:
    bundle = load_example("referral-gp.json")
    response = await client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["type"] == "transaction-response"
    assert len(answer["entry"]) == len(bundle["entry"])
