"""What one sender's request may do with another party's referral: replay its answer, adopt or update its
resources, report on it, decide its Tasks. Everything not the caller's is a 404 or a 409/403 that names nothing."""

from __future__ import annotations

import httpx
import pytest

from tests.auth.test_visibility import FHIR_JSON, World, world  # noqa: F401
from tests.support.referrals import as_message, fresh


@pytest.fixture
def parties(world: World) -> World:  # noqa: F811 - the two referrals of test_visibility, A's and B's
    return world


def _locations(answer: httpx.Response) -> list[str]:
    return [entry["response"]["location"] for entry in answer.json().get("entry", []) if "response" in entry]


async def test_a_replay_is_for_its_sender_only(secure: httpx.AsyncClient, parties: World) -> None:
    bundle = fresh(commune="75056")
    a = await secure.post("/fhir", json=bundle, headers=parties.headers["sender A"] | FHIR_JSON)
    assert a.status_code == 200, a.text
    again = await secure.post("/fhir", json=bundle, headers=parties.headers["sender A"] | FHIR_JSON)
    assert _locations(again) == _locations(a)  # the sender's own retry: replayed
    b = await secure.post("/fhir", json=bundle, headers=parties.headers["sender B"] | FHIR_JSON)
    assert b.status_code == 409, b.text
    assert b.json()["issue"][0]["details"]["coding"][0]["code"] == "referral-identifier-taken"
    for location in _locations(a):
        assert location.split("/_history")[0].split("/")[1] not in b.text


async def test_a_message_replay_is_for_its_sender_only(secure: httpx.AsyncClient, parties: World) -> None:
    message = as_message(
        fresh(commune="75056"), "https://sender-a.example/fhir", "7f1d2a9e-0000-4000-8000-00000000a001"
    )
    a = await secure.post("/fhir/$process-message", json=message, headers=parties.headers["sender A"] | FHIR_JSON)
    assert a.status_code == 200, a.text
    service_request = a.json()["entry"][1]["resource"]
    b = await secure.post("/fhir/$process-message", json=message, headers=parties.headers["sender B"] | FHIR_JSON)
    assert b.status_code == 409, b.text
    assert b.json()["issue"][0]["details"]["coding"][0]["code"] == "referral-identifier-taken"
    assert service_request["id"] not in b.text
