"""With authentication on, type and system history show only what the caller may see, as search does."""

from __future__ import annotations

import httpx

from tests.auth.conftest import OPERATOR, OTHER_SENDER, READ_ONLY, SENDER, token_of
from tests.support.referrals import fresh

FHIR_JSON = {"content-type": "application/fhir+json"}


async def test_history_shows_what_the_caller_may_see(secure: httpx.AsyncClient) -> None:
    sender, other = await token_of(secure, SENDER), await token_of(secure, OTHER_SENDER)
    posted = await secure.post("/fhir", json=fresh(tag="hist-auth"), headers=FHIR_JSON | sender)
    assert posted.status_code == 200, posted.text
    mine = (await secure.get("/fhir/_history", params={"_count": 500}, headers=sender)).json()
    assert {"Patient", "ServiceRequest", "Task"} <= {e["resource"]["resourceType"] for e in mine["entry"]}
    assert (await secure.get("/fhir/_history", headers=other)).json()["total"] == 0
    assert (await secure.get("/fhir/Patient/_history", headers=other)).json()["total"] == 0
    everything = (await secure.get("/fhir/_history", headers=await token_of(secure, OPERATOR))).json()
    assert everything["total"] >= mine["total"] > 0
    # A client whose scopes cover ServiceRequest alone sees the history of that type only.
    reader = (await secure.get("/fhir/_history", headers=await token_of(secure, READ_ONLY))).json()
    assert {e["resource"]["resourceType"] for e in reader.get("entry", [])} <= {"ServiceRequest"}
    denied = await secure.get("/fhir/Patient/_history", headers=await token_of(secure, READ_ONLY))
    assert denied.status_code == 403
    assert (await secure.get("/fhir/_history")).status_code == 401
