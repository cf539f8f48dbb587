"""Search on a real ``gateway serve`` through fhirpy, as an integrator's code calls it (DESIGN §16): ``.count()``
(``_count=0&_totalMethod=count``, total read back), includes, and a walk of every page while referrals are
posted. What the gateway answers is checked by the independent validators too (tests/e2e/conftest.py)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fhirpy import AsyncFHIRClient, SyncFHIRClient

from tests.e2e.conftest import ApiGateway
from tests.e2e.referrals import fresh_referral

pytestmark = pytest.mark.e2e


def _post_referral(gateway: ApiGateway) -> dict[str, str]:
    bundle = fresh_referral()
    gateway.remember(bundle)
    answer = httpx.post(
        gateway.base, content=json.dumps(bundle).encode(), headers={"content-type": "application/fhir+json"}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    references: dict[str, str] = {}
    for entry in answer.json()["entry"]:
        reference = entry["response"]["location"].split("/_history")[0]
        references.setdefault(reference.split("/")[0], reference)
    return references


def _count(api: httpx.Client, resource_type: str, **params: Any) -> int:
    total: int = api.get(f"/{resource_type}", params={"_summary": "count", **params}).json()["total"]
    return total


async def test_fhirpy_count_includes_and_a_walk(api: httpx.Client, api_gateway: ApiGateway) -> None:
    mine = _post_referral(api_gateway)
    sync = SyncFHIRClient(api_gateway.base)
    assert sync.resources("ServiceRequest").count() == _count(api, "ServiceRequest") >= 1
    assert sync.resources("ServiceRequest").search(_id=mine["ServiceRequest"].split("/")[1]).count() == 1
    asynchronous = AsyncFHIRClient(api_gateway.base)
    assert await asynchronous.resources("Task").search(focus=mine["ServiceRequest"]).count() >= 1

    raw = (
        sync.resources("ServiceRequest")
        .search(_id=mine["ServiceRequest"].split("/")[1])
        .include("ServiceRequest", "patient")
        .revinclude("Task", "focus")
        .fetch_raw()
    )
    included = {
        f"{entry['resource']['resourceType']}/{entry['resource']['id']}"
        for entry in raw.entry
        if entry["search"]["mode"] == "include"
    }
    assert mine["Patient"] in included and any(reference.startswith("Task/") for reference in included)

    for _ in range(3):
        _post_referral(api_gateway)
    existing = _count(api, "ServiceRequest")
    seen: list[str] = []
    async for service_request in asynchronous.resources("ServiceRequest").sort("-_lastUpdated").limit(2):
        seen.append(service_request["id"])
        if len(seen) % 2 == 0:
            _post_referral(api_gateway)  # mid-walk: neither repeated nor shifting the pages
    assert len(seen) == len(set(seen)) == existing
