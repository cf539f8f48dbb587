"""X-Provenance with authentication on: a decision's Provenance names the client that made it, never someone else.

A platform acts as its own Organization, a sender as itself (by client id); either may act on behalf of the
Task's owner (the GP) and nobody else; an operator may record other agents and is then named as the enterer.
Anything else is a 403 ``provenance-agent-mismatch``, and the Task is left as it was. Who may decide at all is
``gateway.workflow.permissions``: the platform answers for the GP once the Task is escalated, a sender withdraws.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from gateway.config import EXAMPLE_ROUTING
from gateway.routing.config import load_routing
from gateway.store import Database
from gateway.workflow.deadlines import escalate_due
from tests.auth.conftest import (
    HAINAUT_PLATFORM,
    OPERATOR,
    OTHER_PLATFORM,
    OTHER_SENDER,
    PLATFORM,
    SENDER,
    token_of,
)
from tests.conftest import load_example
from tests.workflow.test_decisions_api import pta_2016_referral

FHIR_JSON = {"Content-Type": "application/fhir+json"}
CLIENT_ID = "https://fhir.dac-gateway.org/client-id"
ROLES = {
    "sender": SENDER,
    "other sender": OTHER_SENDER,
    "lille": OTHER_PLATFORM,
    "paris": PLATFORM,
    "operator": OPERATOR,
}
HAINAUT_FINESS = {"system": "https://finess.esante.gouv.fr", "value": "590000030"}
WITHDRAWAL = {"status": "cancelled", "statusReason": {"text": "withdrawn by the requester"}}


async def _waiting(
    secure: httpx.AsyncClient, database: Database | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """A referral held for the GP (pta-2016, routed to DAC Hainaut): its gp-validation Task — escalated past its
    deadline when ``database`` is given, so that the platform may answer for the GP."""
    headers = {"sender": await token_of(secure, SENDER), "operator": await token_of(secure, OPERATOR)}
    headers["platform"] = await token_of(secure, HAINAUT_PLATFORM)
    answer = await secure.post("/fhir", json=pta_2016_referral(), headers=headers["sender"] | FHIR_JSON)
    assert answer.status_code == 200, answer.text
    location = next(e["response"]["location"] for e in answer.json()["entry"] if "/ServiceRequest/" in e["fullUrl"])
    service_request = location.split("/_history")[0]
    tasks = (await secure.get("/fhir/Task", params={"focus": service_request}, headers=headers["operator"])).json()
    (task,) = [e["resource"] for e in tasks["entry"] if e["resource"]["code"]["coding"][0]["code"] == "gp-validation"]
    if database is not None:
        later = datetime.now(UTC) + timedelta(days=60)
        assert await escalate_due(database, later, routing=load_routing(EXAMPLE_ROUTING)) == 1
        task = (await secure.get(f"/fhir/Task/{task['id']}", headers=headers["operator"])).json()
    return task, headers


def _header(*agents: dict[str, Any]) -> str:
    return json.dumps({"resourceType": "Provenance", "agent": list(agents)})


async def _decide(
    secure: httpx.AsyncClient,
    task: dict[str, Any],
    headers: dict[str, str],
    x_provenance: str | None = None,
    changes: dict[str, Any] | None = None,
) -> httpx.Response:
    extra = {"x-provenance": x_provenance} if x_provenance else {}
    return await secure.put(
        f"/fhir/Task/{task['id']}",
        json=task | (changes or {"status": "completed"}),
        headers=headers | FHIR_JSON | {"if-match": f'W/"{task["meta"]["versionId"]}"'} | extra,
    )


async def _provenance_of(secure: httpx.AsyncClient, task: dict[str, Any], operator: dict[str, str]) -> dict[str, Any]:
    found = (await secure.get("/fhir/Provenance", params={"_count": 200}, headers=operator)).json()
    (provenance,) = [
        e["resource"]
        for e in found.get("entry", [])
        # The decision's: it targets the version after ``task`` (an escalation has a Provenance of its own).
        if any(
            t["reference"] == f"Task/{task['id']}/_history/{int(task['meta']['versionId']) + 1}"
            for t in e["resource"]["target"]
        )
    ]
    return provenance


def _who(provenance: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(agent["type"]["coding"][0]["code"], agent["who"]) for agent in provenance["agent"]]


async def test_a_platform_records_the_gps_answer_as_itself_on_the_gps_behalf(
    secure: httpx.AsyncClient, database: Database
) -> None:
    task, headers = await _waiting(secure, database)
    service_request = (await secure.get(f"/fhir/{task['focus']['reference']}", headers=headers["operator"])).json()
    platform = service_request["performer"][0]["reference"]
    header = _header({"who": {"reference": platform}, "onBehalfOf": task["owner"]})
    answer = await _decide(secure, task, headers["platform"], header)
    assert answer.status_code == 200, answer.text
    provenance = await _provenance_of(secure, task, headers["operator"])
    assert _who(provenance) == [("author", {"reference": platform})]
    assert provenance["agent"][0]["onBehalfOf"] == task["owner"]


async def test_a_platform_may_name_its_organization_by_identifier(
    secure: httpx.AsyncClient, database: Database
) -> None:
    task, headers = await _waiting(secure, database)
    header = _header({"who": {"identifier": HAINAUT_FINESS}, "onBehalfOf": task["owner"]})
    answer = await _decide(secure, task, headers["platform"], header)
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(
    ("who", "on_behalf_of"),
    [
        pytest.param({"reference": "Organization/someone-else"}, None, id="another organization"),
        pytest.param({"identifier": {"system": CLIENT_ID, "value": "hospital"}}, None, id="another client"),
        pytest.param("owner", None, id="the GP itself"),
        pytest.param("platform", "requester", id="on behalf of another than the owner"),
    ],
)
async def test_a_platform_claiming_another_agent_is_refused(
    secure: httpx.AsyncClient, database: Database, who: dict[str, Any] | str, on_behalf_of: str | None
) -> None:
    task, headers = await _waiting(secure, database)
    service_request = (await secure.get(f"/fhir/{task['focus']['reference']}", headers=headers["operator"])).json()
    named = {"owner": task["owner"], "platform": service_request["performer"][0], "requester": task["requester"]}
    agent = {"who": named[who] if isinstance(who, str) else who}
    if on_behalf_of:
        agent["onBehalfOf"] = {"reference": named[on_behalf_of]["reference"]}
    header = _header(agent)
    answer = await _decide(secure, task, headers["platform"], header)
    assert answer.status_code == 403, answer.text
    issue = answer.json()["issue"][0]
    assert issue["details"]["coding"][0]["code"] == "provenance-agent-mismatch"
    assert issue["expression"] == ["Provenance.agent[0]"]
    unchanged = (await secure.get(f"/fhir/Task/{task['id']}", headers=headers["operator"])).json()
    assert unchanged["status"] == "requested" and unchanged["meta"]["versionId"] == task["meta"]["versionId"]


async def test_without_a_header_the_platform_is_the_author(secure: httpx.AsyncClient, database: Database) -> None:
    task, headers = await _waiting(secure, database)
    answer = await _decide(secure, task, headers["platform"])
    assert answer.status_code == 200, answer.text
    service_request = (await secure.get(f"/fhir/{task['focus']['reference']}", headers=headers["operator"])).json()
    provenance = await _provenance_of(secure, task, headers["operator"])
    assert _who(provenance) == [("author", {"reference": service_request["performer"][0]["reference"]})]


async def test_a_sender_acts_as_itself_by_client_id(secure: httpx.AsyncClient) -> None:
    task, headers = await _waiting(secure)
    answer = await _decide(secure, task, headers["sender"], changes=WITHDRAWAL)  # all a sender decides
    assert answer.status_code == 200, answer.text
    provenance = await _provenance_of(secure, task, headers["operator"])
    assert _who(provenance) == [("author", {"identifier": {"system": CLIENT_ID, "value": SENDER.client_id}})]


async def test_a_sender_may_say_it_acts_for_the_gp_but_not_be_the_platform(secure: httpx.AsyncClient) -> None:
    task, headers = await _waiting(secure)
    service_request = (await secure.get(f"/fhir/{task['focus']['reference']}", headers=headers["operator"])).json()
    as_platform = _header({"who": {"reference": service_request["performer"][0]["reference"]}})
    refused = await _decide(secure, task, headers["sender"], as_platform, WITHDRAWAL)
    assert refused.status_code == 403, refused.text
    itself = {"system": CLIENT_ID, "value": SENDER.client_id}
    answer = await _decide(
        secure,
        task,
        headers["sender"],
        _header({"who": {"identifier": itself}, "onBehalfOf": task["owner"]}),
        WITHDRAWAL,
    )
    assert answer.status_code == 200, answer.text
    provenance = await _provenance_of(secure, task, headers["operator"])
    assert provenance["agent"][0]["who"] == {"identifier": itself}
    assert provenance["agent"][0]["onBehalfOf"] == task["owner"]


async def test_an_operator_may_record_others_and_is_named_as_the_enterer(secure: httpx.AsyncClient) -> None:
    task, headers = await _waiting(secure)
    header = _header({"who": task["owner"], "type": {"coding": [{"code": "verifier"}]}})
    answer = await _decide(secure, task, headers["operator"], header)
    assert answer.status_code == 200, answer.text
    provenance = await _provenance_of(secure, task, headers["operator"])
    assert _who(provenance) == [
        ("verifier", task["owner"]),
        ("enterer", {"identifier": {"system": CLIENT_ID, "value": OPERATOR.client_id}}),
    ]


async def test_the_routing_provenance_names_the_sender_and_is_seen_by_the_referrals_parties(
    secure: httpx.AsyncClient,
) -> None:
    headers = {role: await token_of(secure, client) for role, client in ROLES.items()}
    answer = await secure.post(
        "/fhir", json=load_example("referral-hospital-nurse.json"), headers=headers["sender"] | FHIR_JSON
    )
    assert answer.status_code == 200, answer.text
    location = next(e["response"]["location"] for e in answer.json()["entry"] if "/ServiceRequest/" in e["fullUrl"])
    found = await secure.get(
        "/fhir/Provenance", params={"target": location.split("/_history")[0]}, headers=headers["operator"]
    )
    (routing,) = [e["resource"] for e in found.json()["entry"]]
    assert [agent["who"] for agent in routing["agent"]] == [
        {"type": "Device", "display": "DAC Gateway"},
        {"identifier": {"system": CLIENT_ID, "value": SENDER.client_id}},
    ]
    for role, seen in {"sender": True, "lille": True, "paris": False, "other sender": False}.items():
        read = await secure.get(f"/fhir/Provenance/{routing['id']}", headers=headers[role])
        assert read.status_code == (200 if seen else 404), role
