"""Who sees what, for every read, search and update route: route × role × resource → status.

Two referrals for one patient, both routed to DAC Paris (dac-75): A sent by ``hospital``, B by ``gp-software``.
The Patient is shared: each sender sees it, each sees only its own referral's other resources; the Paris
platform sees both referrals, the Lille platform nothing; the operator everything. What may not be seen is a
404, never a 403, and searches count only what may be seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.auth.conftest import OPERATOR, OTHER_PLATFORM, OTHER_SENDER, PLATFORM, SENDER, token_of
from tests.support.auth import SmartClient
from tests.support.referrals import fresh, renamed

FHIR_JSON = {"Content-Type": "application/fhir+json"}
ROLES: dict[str, SmartClient] = {
    "sender A": SENDER,
    "sender B": OTHER_SENDER,
    "platform Paris": PLATFORM,
    "platform Lille": OTHER_PLATFORM,
    "operator": OPERATOR,
}
#: Which referral's parties see each resource: A's, B's, or both (the shared Patient).
SEES = {
    "sender A": {"A", "both"},
    "sender B": {"B", "both"},
    "platform Paris": {"A", "B", "both"},
    "platform Lille": set(),
    "operator": {"A", "B", "both"},
}


@dataclass
class World:
    resources: dict[str, tuple[str, str]]  # label → (reference, whose: "A" | "B" | "both")
    headers: dict[str, dict[str, str]]  # role → Authorization header


async def _post(http: httpx.AsyncClient, bundle: dict[str, Any], headers: dict[str, str]) -> dict[str, str]:
    answer = await http.post("/fhir", json=bundle, headers=headers | FHIR_JSON)
    assert answer.status_code == 200, answer.text
    references = {}
    for entry in answer.json()["entry"]:
        reference = entry["response"]["location"].split("/_history")[0]
        references.setdefault(reference.split("/")[0], reference)
    return references


@pytest.fixture
async def world(secure: httpx.AsyncClient) -> World:
    headers = {role: await token_of(secure, client) for role, client in ROLES.items()}
    bundle = fresh(commune="75056")
    a = await _post(secure, bundle, headers["sender A"])
    b = await _post(secure, renamed(bundle, "-B"), headers["sender B"])
    assert a["Patient"] == b["Patient"]
    operator = headers["operator"]
    tasks = (await secure.get("/fhir/Task", params={"focus": a["ServiceRequest"]}, headers=operator)).json()
    service_request = (await secure.get(f"/fhir/{a['ServiceRequest']}", headers=operator)).text
    care_team = next(ref for ref in service_request.split('"') if ref.startswith("CareTeam/"))
    resources = {
        "ServiceRequest A": (a["ServiceRequest"], "A"),
        "ServiceRequest B": (b["ServiceRequest"], "B"),
        "Consent A": (a["Consent"], "A"),
        "CareTeam A": (care_team, "A"),
        "Task A": (f"Task/{tasks['entry'][0]['resource']['id']}", "A"),
        "Patient (both)": (a["Patient"], "both"),
    }
    return World(resources, headers)


def _expected(role: str, whose: str) -> bool:
    return whose in SEES[role]


async def _check(world: World, request: Any) -> None:
    """Run ``request(role, reference)`` → (status, visible?) over the table; report every mismatch at once."""
    wrong = []
    for role in ROLES:
        for label, (reference, whose) in world.resources.items():
            seen = await request(role, reference)
            if seen != _expected(role, whose):
                wrong.append(f"{role} on {label}: {'seen' if seen else 'hidden'}")
    assert not wrong, wrong


async def test_read(secure: httpx.AsyncClient, world: World) -> None:
    async def read(role: str, reference: str) -> bool:
        answer = await secure.get(f"/fhir/{reference}", headers=world.headers[role])
        assert answer.status_code in (200, 404), answer.text
        return answer.status_code == 200

    await _check(world, read)


async def test_vread(secure: httpx.AsyncClient, world: World) -> None:
    async def vread(role: str, reference: str) -> bool:
        answer = await secure.get(f"/fhir/{reference}/_history/1", headers=world.headers[role])
        assert answer.status_code in (200, 404), answer.text
        if answer.status_code == 404:  # not "no such version": nothing says the resource exists
            assert answer.json()["issue"][0]["details"]["coding"][0]["code"] == "resource-not-found"
        return answer.status_code == 200

    await _check(world, vread)


async def test_history(secure: httpx.AsyncClient, world: World) -> None:
    async def history(role: str, reference: str) -> bool:
        answer = await secure.get(f"/fhir/{reference}/_history", headers=world.headers[role])
        assert answer.status_code in (200, 404), answer.text
        return answer.status_code == 200

    await _check(world, history)


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_search(secure: httpx.AsyncClient, world: World, method: str) -> None:
    async def search(role: str, reference: str) -> bool:
        resource_type, resource_id = reference.split("/")
        if method == "GET":
            answer = await secure.get(
                f"/fhir/{resource_type}", params={"_id": resource_id}, headers=world.headers[role]
            )
        else:
            answer = await secure.post(
                f"/fhir/{resource_type}/_search", data={"_id": resource_id}, headers=world.headers[role]
            )
        assert answer.status_code == 200, answer.text
        bundle = answer.json()
        assert bundle["total"] == len(bundle.get("entry", []))
        return bool(bundle["total"])

    await _check(world, search)


@pytest.mark.parametrize(
    ("role", "total"),
    [("sender A", 1), ("sender B", 1), ("platform Paris", 2), ("platform Lille", 0), ("operator", 2)],
)
async def test_search_totals_and_pages_count_only_what_is_visible(
    secure: httpx.AsyncClient, world: World, role: str, total: int
) -> None:
    answer = (await secure.get("/fhir/ServiceRequest", params={"_count": 1}, headers=world.headers[role])).json()
    assert answer["total"] == total
    assert len(answer.get("entry", [])) == min(total, 1)
    assert any(link["relation"] == "next" for link in answer["link"]) == (total > 1)


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_update(secure: httpx.AsyncClient, world: World, method: str) -> None:
    """A stale If-Match: 404 for a Task the caller may not see; for one it sees, 403 when the decision is not its
    to make (Task A is A's gp-information Task: its sender and platform only report the GP informed — in progress
    or completed —, never accept it; only the operator does), else 412."""
    reference, whose = world.resources["Task A"]
    task = (await secure.get(f"/fhir/{reference}", headers=world.headers["operator"])).json()
    wrong = []
    for role in ROLES:
        headers = world.headers[role] | {"If-Match": 'W/"99"'}
        if method == "PUT":
            answer = await secure.put(f"/fhir/{reference}", json=task, headers=headers | FHIR_JSON)
        else:
            patch = [{"op": "replace", "path": "/status", "value": "accepted"}]
            answer = await secure.patch(
                f"/fhir/{reference}", json=patch, headers=headers | {"Content-Type": "application/json-patch+json"}
            )
        expected = (412 if role == "operator" else 403) if _expected(role, whose) else 404
        if answer.status_code != expected:
            wrong.append(f"{role}: {answer.status_code}, expected {expected}")
    assert not wrong, wrong


async def test_a_task_made_after_intake_follows_its_referral(secure: httpx.AsyncClient, world: World) -> None:
    """The platform's decision-time Tasks are not registered anywhere: their focus makes them visible."""
    reference, _ = world.resources["Task A"]
    for role, visible in [("sender A", True), ("sender B", False), ("platform Lille", False)]:
        found = await secure.get("/fhir/Task", params={"_id": reference.split("/")[1]}, headers=world.headers[role])
        assert (found.json()["total"] == 1) is visible, role


async def test_a_decisions_provenance_is_seen_by_the_referrals_parties(secure: httpx.AsyncClient, world: World) -> None:
    reference, _ = world.resources["Task A"]
    operator = world.headers["operator"]  # A's gp-information Task: the operator may accept it
    task = (await secure.get(f"/fhir/{reference}", headers=operator)).json()
    decided = await secure.put(
        f"/fhir/{reference}",
        json=task | {"status": "accepted"},
        headers=operator | FHIR_JSON | {"If-Match": f'W/"{task["meta"]["versionId"]}"'},
    )
    assert decided.status_code == 200, decided.text
    provenance = await secure.get("/fhir/Provenance", params={"target": reference}, headers=world.headers["operator"])
    (entry,) = provenance.json()["entry"]
    wrong = []
    for role in ROLES:
        answer = await secure.get(f"/fhir/Provenance/{entry['resource']['id']}", headers=world.headers[role])
        if (answer.status_code == 200) != _expected(role, "A"):
            wrong.append(f"{role}: {answer.status_code}")
    assert not wrong, wrong


#: Every include a platform fetching referrals would ask for, and the reverse ones that reach across referrals
#: through the shared Patient (its other referrals' Consents, CareTeams, ServiceRequests, Tasks).
_INCLUDES = {
    "ServiceRequest": [
        ("_include", "ServiceRequest:patient"),
        ("_include", "ServiceRequest:requester"),
        ("_include", "ServiceRequest:supporting-info"),
        ("_revinclude", "Task:focus"),
        ("_revinclude:iterate", "Consent:patient"),
        ("_revinclude:iterate", "CareTeam:subject"),
    ],
    "Patient": [
        ("_revinclude", "Consent:patient"),
        ("_revinclude", "CareTeam:subject"),
        ("_revinclude", "ServiceRequest:subject"),
        ("_revinclude", "Task:patient"),
        ("_include:iterate", "ServiceRequest:supporting-info"),
    ],
}


async def _included(secure: httpx.AsyncClient, headers: dict[str, str], resource_type: str) -> set[str]:
    answer = await secure.get(f"/fhir/{resource_type}", params=_INCLUDES[resource_type], headers=headers)
    assert answer.status_code == 200, answer.text
    entries = answer.json().get("entry", [])
    return {"/".join(e["fullUrl"].split("/")[-2:]) for e in entries if e["search"]["mode"] == "include"}


@pytest.mark.parametrize("resource_type", ["ServiceRequest", "Patient"])
async def test_includes_show_only_what_a_read_shows(
    secure: httpx.AsyncClient, world: World, resource_type: str
) -> None:
    """_include and _revinclude never leak: each role is given exactly those of the operator's inclusions it may
    read — sender B not sender A's Consent, CareTeam or Tasks through the Patient they share, platform Lille
    nothing."""
    everything = await _included(secure, world.headers["operator"], resource_type)
    assert sum(reference.startswith("Consent/") for reference in everything) == 2  # one per referral
    assert world.resources["Consent A"][0] in everything and world.resources["CareTeam A"][0] in everything
    wrong = []
    for role in ROLES:
        readable = set()
        for reference in everything:
            answer = await secure.get(f"/fhir/{reference}", headers=world.headers[role])
            if answer.status_code == 200:
                readable.add(reference)
        if (included := await _included(secure, world.headers[role], resource_type)) != readable:
            wrong.append(f"{role}: included {sorted(included - readable)}, left out {sorted(readable - included)}")
    assert not wrong, wrong
    sender_b = await _included(secure, world.headers["sender B"], resource_type)
    assert world.resources["Consent A"][0] not in sender_b and world.resources["Task A"][0] not in sender_b


async def test_includes_stay_within_the_token_scopes(secure: httpx.AsyncClient) -> None:
    """A token scoped to ServiceRequest alone (``system/ServiceRequest.rs``) may not read a Patient (403), and got
    the Patient, its requester, CareTeam, Consent and Tasks all the same through ``_include`` / ``_revinclude``:
    the scope was checked on the searched type only. Now what an include adds is, as in system history, only of
    the types the token may read."""
    sender = await token_of(secure, SENDER)
    posted = await secure.post(
        "/fhir", json=fresh(tag="scoped-include"), headers=sender | {"content-type": "application/fhir+json"}
    )
    assert posted.status_code == 200, posted.text
    params = [
        ("_include", "ServiceRequest:patient"),
        ("_include", "ServiceRequest:requester"),
        ("_include", "ServiceRequest:supporting-info"),
        ("_revinclude", "Task:focus"),
    ]

    async def included(headers: dict[str, str]) -> set[str]:
        answer = await secure.get("/fhir/ServiceRequest", params=params, headers=headers)
        assert answer.status_code == 200, answer.text
        entries = answer.json()["entry"]
        assert [e["resource"]["resourceType"] for e in entries if e["search"]["mode"] == "match"] == ["ServiceRequest"]
        return {e["resource"]["resourceType"] for e in entries if e["search"]["mode"] == "include"}

    assert await included(sender) == {"Patient", "PractitionerRole", "CareTeam", "Consent", "Task"}
    narrow = await token_of(secure, SENDER, "system/ServiceRequest.rs")
    assert (await secure.get("/fhir/Patient", headers=narrow)).status_code == 403
    assert await included(narrow) == set()
    with_patients = await token_of(secure, SENDER, "system/ServiceRequest.rs system/Patient.rs")
    assert await included(with_patients) == {"Patient"}
