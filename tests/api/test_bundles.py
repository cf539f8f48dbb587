"""Searchset and history Bundles (gateway/api/bundles.py)."""

from __future__ import annotations

import httpx

NOTHING = {"identifier": "https://nowhere.example.org/referral-id|none"}


async def test_a_search_that_finds_nothing_has_no_entry(client: httpx.AsyncClient) -> None:
    # FHIR JSON has no empty arrays (json.html; ele-1): "entry": [] is invalid, the element is left out.
    for params in (NOTHING, NOTHING | {"_summary": "count"}):
        response = await client.get("/fhir/ServiceRequest", params=params)
        assert response.status_code == 200, response.text
        bundle = response.json()
        assert bundle["type"] == "searchset" and bundle["total"] == 0 and "entry" not in bundle
        assert bundle["link"][0]["relation"] == "self"
