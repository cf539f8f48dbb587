"""Where two features of issues 14 and 23 meet, with authentication on: what the review of the merge found."""

from __future__ import annotations

import httpx

from tests.auth.conftest import OPERATOR, PEER, token_of
from tests.auth.test_ownership import _locations, _referral_update, parties  # noqa: F401
from tests.auth.test_visibility import FHIR_JSON, World, world  # noqa: F401
from tests.support.referrals import fresh, resource


async def test_another_senders_referral_under_the_same_identifier_does_not_block_the_peers_updates(
    secure: httpx.AsyncClient,
    parties: World,  # noqa: F811
) -> None:
    # Idempotency keys are per client now: sender B may post a referral under the very ServiceRequest identifier
    # of A's referral forwarded to the peer. The peer's referral-update names A's by that identifier: it is the
    # one forwarded to that peer, and B's must not make it ambiguous (a 404 for ever: the update lost).
    bundle = fresh(commune="67482")  # Bas-Rhin: forwarded to the peer gateway dac-67
    a = await secure.post("/fhir", json=bundle, headers=parties.headers["sender A"] | FHIR_JSON)
    assert a.status_code == 200, a.text
    service_request = next(loc.split("/_history")[0] for loc in _locations(a) if loc.startswith("ServiceRequest/"))
    squatting = fresh(commune="75056")  # another patient, routed to Paris
    resource(squatting, "ServiceRequest")["identifier"] = resource(bundle, "ServiceRequest")["identifier"]
    b = await secure.post("/fhir", json=squatting, headers=parties.headers["sender B"] | FHIR_JSON)
    assert b.status_code == 200, b.text
    peer = await token_of(secure, PEER)
    followed = await secure.post(
        "/fhir/$process-message", json=_referral_update(bundle, "revoked"), headers=peer | FHIR_JSON
    )
    assert followed.status_code == 200, followed.text
    operator = parties.headers["operator"]
    assert (await secure.get(f"/fhir/{service_request}", headers=operator)).json()["status"] == "revoked"
    squatter = next(loc.split("/_history")[0] for loc in _locations(b) if loc.startswith("ServiceRequest/"))
    assert (await secure.get(f"/fhir/{squatter}", headers=operator)).json()["status"] != "revoked"


async def test_the_gps_software_reads_no_provenance_of_the_platforms_tasks(secure: httpx.AsyncClient) -> None:
    # Of a referral's Tasks a practitioner sees its professionals' only (DESIGN §11): not the platform's, and so
    # not what the platform decided on them either — a Provenance of a Task is for who may see that Task.
    from tests.auth.conftest import GP_SOFTWARE, HAINAUT_PLATFORM
    from tests.auth.test_practitioner import _decide, _held, _task

    posted, task = await _held(secure)
    gp, platform = await token_of(secure, GP_SOFTWARE), await token_of(secure, HAINAUT_PLATFORM)
    assert (await _decide(secure, gp, task, {"status": "accepted"})).status_code == 200
    intake = await _task(secure, posted["ServiceRequest"], "platform-intake")
    answer = await _decide(secure, platform, intake, {"status": "rejected", "statusReason": {"text": "pas chez nous"}})
    assert answer.status_code == 200, answer.text
    operator = await token_of(secure, OPERATOR)
    about_intake = (
        await secure.get("/fhir/Provenance", params={"target": f"Task/{intake['id']}"}, headers=operator)
    ).json()
    # Those about the platform's Task alone (a Provenance that targets the ServiceRequest too — routing, caused by
    # the GP's decision — is the referral's, which the GP sees).
    only_intake = [
        entry["resource"]["id"]
        for entry in about_intake["entry"]
        if all(t["reference"].startswith(f"Task/{intake['id']}") for t in entry["resource"]["target"])
    ]
    assert only_intake
    for provenance_id in only_intake:
        read = await secure.get(f"/fhir/Provenance/{provenance_id}", headers=gp)
        assert read.status_code == 404, read.text
    searched = (await secure.get("/fhir/Provenance", params={"target": f"Task/{intake['id']}"}, headers=gp)).json()
    assert {e["resource"]["id"] for e in searched.get("entry", [])}.isdisjoint(only_intake)
    # Its own decision's Provenance it still reads, and the platform the one on its Task.
    own = (await secure.get("/fhir/Provenance", params={"target": f"Task/{task['id']}"}, headers=gp)).json()
    assert own["total"] >= 1
    seen = (await secure.get("/fhir/Provenance", params={"target": f"Task/{intake['id']}"}, headers=platform)).json()
    assert seen["total"] == about_intake["total"]


async def test_an_opposition_message_needs_the_scope_a_posted_consent_needs(
    secure: httpx.AsyncClient,
    parties: World,  # noqa: F811
) -> None:
    # POST /fhir/Consent needs system/Consent.c; the same opposition as a message must too — else a client allowed
    # to refer only (sender B: ServiceRequest.c, no Consent.c) stores a Consent and revokes referrals.
    from tests.auth.test_ownership import _opposition

    operator = parties.headers["operator"]
    bundle = fresh(commune="75056")
    b = await secure.post("/fhir", json=bundle, headers=parties.headers["sender B"] | FHIR_JSON)
    assert b.status_code == 200, b.text
    service_request = next(loc.split("/_history")[0] for loc in _locations(b) if loc.startswith("ServiceRequest/"))
    consents_before = (await secure.get("/fhir/Consent", headers=operator)).json()["total"]
    refused = await secure.post(
        "/fhir/$process-message", json=_opposition(bundle), headers=parties.headers["sender B"] | FHIR_JSON
    )
    assert refused.status_code == 403, refused.text
    assert refused.json()["issue"][0]["details"]["coding"][0]["code"] == "scope-insufficient"
    assert (await secure.get(f"/fhir/{service_request}", headers=operator)).json()["status"] == "active"
    assert (await secure.get("/fhir/Consent", headers=operator)).json()["total"] == consents_before
    # Sender A holds system/Consent.c: its opposition message is taken.
    a = await secure.post(
        "/fhir", json=(other := fresh(commune="75056")), headers=parties.headers["sender A"] | FHIR_JSON
    )
    assert a.status_code == 200, a.text
    taken = await secure.post(
        "/fhir/$process-message", json=_opposition(other), headers=parties.headers["sender A"] | FHIR_JSON
    )
    assert taken.status_code == 200, taken.text


async def test_a_task_decision_names_another_partys_resource_by_our_absolute_url_as_by_its_id(
    secure: httpx.AsyncClient,
    parties: World,  # noqa: F811
) -> None:
    # One rule for every element (issue 23): a URL on this gateway's own base is its relative form — a decision
    # adding http://gateway.test/fhir/ServiceRequest/<B's> is the 422 its relative form gets, nothing stored.
    from tests.auth.test_ownership import _decide

    sender = parties.headers["sender A"]
    answer = await secure.post("/fhir", json=fresh(commune="75056"), headers=sender | FHIR_JSON)  # dac-2022
    assert answer.status_code == 200, answer.text
    mine = {loc.split("/")[0]: loc.split("/_history")[0] for loc in _locations(answer)}
    tasks = await secure.get(
        "/fhir/Task", params={"focus": mine["ServiceRequest"], "code": "gp-information"}, headers=sender
    )
    task = f"Task/{tasks.json()['entry'][0]['resource']['id']}"
    of_b = parties.resources["ServiceRequest B"][0]
    absolute = f"http://gateway.test/fhir/{of_b}"
    output = {"output": [{"type": {"text": "GP informed"}, "valueReference": {"reference": absolute}}]}
    decided = await _decide(secure, sender, task, {"status": "in-progress"} | output)
    assert decided.status_code == 422, decided.text
    issue = decided.json()["issue"][0]
    assert issue["details"]["coding"][0]["code"] == "reference-unresolved"
    assert issue["expression"] == ["Task.output[0].valueReference.reference"]
    assert (await secure.get(f"/fhir/{task}", headers=sender)).json()["meta"]["versionId"] == "1"
    # Elsewhere, it is external: kept as written.
    elsewhere = {
        "output": [
            {"type": {"text": "GP informed"}, "valueReference": {"reference": f"https://other.example/fhir/{of_b}"}}
        ]
    }
    assert (await _decide(secure, sender, task, {"status": "in-progress"} | elsewhere)).status_code == 200
