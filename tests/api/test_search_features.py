"""Search over HTTP as FHIR clients use it (DESIGN §16): _summary, _elements, _total, _include / _revinclude,
Prefer: handling=lenient, a _count above the maximum, fhirpy's count. Authentication off here; with it on,
tests/auth/test_visibility.py checks that an include shows only what a read would."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from gateway.fhir.subset import SUBSETTED
from tests.support.referrals import fresh

FHIR_JSON = {"Content-Type": "application/fhir+json"}


async def _referral(client: httpx.AsyncClient) -> dict[str, str]:
    """Post a referral; the reference of each type it stored (the first of each)."""
    answer = await client.post("/fhir", json=fresh(commune="75056"), headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    references: dict[str, str] = {}
    for entry in answer.json()["entry"]:
        reference = entry["response"]["location"].split("/_history")[0]
        references.setdefault(reference.split("/")[0], reference)
    return references


async def _search(client: httpx.AsyncClient, resource_type: str, params: Any, **headers: str) -> dict[str, Any]:
    answer = await client.get(f"/fhir/{resource_type}", params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    bundle: dict[str, Any] = answer.json()
    return bundle


def _by_mode(bundle: dict[str, Any], mode: str) -> list[dict[str, Any]]:
    return [entry for entry in bundle.get("entry", []) if entry["search"]["mode"] == mode]


def _reference(entry: dict[str, Any]) -> str:
    return f"{entry['resource']['resourceType']}/{entry['resource']['id']}"


async def test_summary_and_elements_cut_the_matches_and_say_so(client: httpx.AsyncClient) -> None:
    """R4: _summary=true keeps the elements marked isSummary, text the narrative and mandatory elements, data all
    but the narrative; _elements the elements named and the mandatory ones. Each cut resource is tagged
    SUBSETTED; _summary=false shows it whole."""
    patient_id = (await _referral(client))["Patient"].split("/")[1]
    whole = (await client.get(f"/fhir/Patient/{patient_id}")).json()
    assert {"name", "birthDate", "generalPractitioner"} <= set(whole)

    def shown(bundle: dict[str, Any]) -> dict[str, Any]:
        (entry,) = _by_mode(bundle, "match")
        resource: dict[str, Any] = entry["resource"]
        return resource

    summary = shown(await _search(client, "Patient", {"_id": patient_id, "_summary": "true"}))
    assert {"name", "birthDate", "identifier"} <= set(summary) and "generalPractitioner" not in summary
    assert SUBSETTED in summary["meta"]["tag"] and summary["meta"]["versionId"] == whole["meta"]["versionId"]
    text = shown(await _search(client, "Patient", {"_id": patient_id, "_summary": "text"}))
    assert set(text) <= {"resourceType", "id", "meta", "text"} and SUBSETTED in text["meta"]["tag"]
    data = shown(await _search(client, "Patient", {"_id": patient_id, "_summary": "data"}))
    assert "text" not in data and {key for key in whole if key != "text"} == set(data)
    elements = shown(await _search(client, "Patient", {"_id": patient_id, "_elements": "gender,birthDate"}))
    assert set(elements) == {"resourceType", "id", "meta", "gender", "birthDate"}
    assert SUBSETTED in elements["meta"]["tag"]
    full = shown(await _search(client, "Patient", {"_id": patient_id, "_summary": "false"}))
    assert full == whole

    # A ServiceRequest's mandatory elements (status, intent, subject) stay whatever _elements names.
    request = shown(await _search(client, "ServiceRequest", {"_elements": "code"}))
    assert {"status", "intent", "subject", "code"} <= set(request) and "requester" not in request


async def test_total_and_fhirpy_count(client: httpx.AsyncClient) -> None:
    """_total=none leaves the total out (no count is made); accurate and estimate give it. fhirpy's .count()
    sends _count=0&_totalMethod=count (Aidbox's name) and reads total: it works."""
    for _ in range(2):
        await _referral(client)
    assert "total" not in await _search(client, "ServiceRequest", {"_total": "none"})
    assert (await _search(client, "ServiceRequest", {"_total": "accurate"}))["total"] == 2
    assert (await _search(client, "ServiceRequest", {"_total": "estimate"}))["total"] == 2
    counted = await _search(client, "ServiceRequest", {"_count": "0", "_totalMethod": "count"})
    assert counted["total"] == 2 and "entry" not in counted
    assert (await _search(client, "ServiceRequest", {"_summary": "count"}))["total"] == 2


async def test_a_count_above_the_maximum_is_capped(client: httpx.AsyncClient, settings: Any) -> None:
    """R4: the server may return fewer than asked; the self link says the _count applied."""
    bundle = await _search(client, "ServiceRequest", {"_count": "100000"})
    self_link = next(link["url"] for link in bundle["link"] if link["relation"] == "self")
    assert parse_qs(urlsplit(self_link).query)["_count"] == [str(settings.max_page_size)]


async def test_lenient_handling_ignores_unknown_parameters_and_says_so(client: httpx.AsyncClient) -> None:
    """Strict by default (400: an ignored filter would show more than asked); Prefer: handling=lenient ignores
    an unknown parameter, applies the rest, and says which in an OperationOutcome entry (search.mode outcome)."""
    await _referral(client)
    params = {"colour": "blue", "status": "no-such-status"}
    strict = await client.get("/fhir/ServiceRequest", params=params)
    assert strict.status_code == 400
    assert strict.json()["issue"][0]["details"]["coding"][0]["code"] == "search-parameter-unknown"
    lenient = await _search(client, "ServiceRequest", params, prefer="handling=lenient")
    assert lenient["total"] == 0 and not _by_mode(lenient, "match")  # status still applied
    (outcome,) = _by_mode(lenient, "outcome")
    (issue,) = outcome["resource"]["issue"]
    assert issue["severity"] == "warning" and issue["expression"] == ["colour"]
    assert "colour" in issue["diagnostics"]
    for prefer in ("return=minimal; handling=lenient", "return=minimal, handling=lenient", 'handling="lenient"'):
        assert (await _search(client, "ServiceRequest", {"colour": "blue"}, prefer=prefer))["total"] == 1
    assert (
        await client.get("/fhir/ServiceRequest", params={"colour": "blue"}, headers={"prefer": "handling=strict"})
    ).status_code == 400


async def test_a_referral_with_its_patient_consent_care_team_and_tasks_in_one_call(client: httpx.AsyncClient) -> None:
    """What a platform asks: the ServiceRequest, its Patient and requester, the Consent and CareTeam it names
    (supportingInfo), its Tasks (Task:focus) and the Patient's Consents (iterating from the included Patient) — each
    once, as include entries, none of another referral."""
    mine = await _referral(client)
    other = await _referral(client)
    service_request_id = mine["ServiceRequest"].split("/")[1]
    params = [
        ("_id", service_request_id),
        ("_include", "ServiceRequest:patient"),
        ("_include", "ServiceRequest:requester"),
        ("_include", "ServiceRequest:supporting-info"),
        ("_revinclude", "Task:focus"),
        ("_revinclude:iterate", "Consent:patient"),
    ]
    bundle = await _search(client, "ServiceRequest", params)
    assert [_reference(entry) for entry in _by_mode(bundle, "match")] == [mine["ServiceRequest"]]
    assert bundle["total"] == 1  # includes are not counted
    included = [_reference(entry) for entry in _by_mode(bundle, "include")]
    assert len(included) == len(set(included))
    tasks = await _search(client, "Task", {"focus": mine["ServiceRequest"]})
    care_teams = await _search(client, "CareTeam", {"subject": mine["Patient"]})  # made at intake
    expected = {mine["Patient"], mine["PractitionerRole"], mine["Consent"]}
    expected |= {_reference(entry) for entry in [*tasks["entry"], *care_teams["entry"]]}
    assert set(included) == expected
    assert not set(included) & {other["Patient"], other["Consent"], other["ServiceRequest"]}
    # The links repeat the includes: the next page of a walk includes alike.
    self_link = next(link["url"] for link in bundle["link"] if link["relation"] == "self")
    assert parse_qs(urlsplit(self_link).query)["_revinclude:iterate"] == ["Consent:patient"]

    # From the Patient the other way: its ServiceRequests and Consents.
    patient_id = mine["Patient"].split("/")[1]
    back = await _search(
        client,
        "Patient",
        [("_id", patient_id), ("_revinclude", "ServiceRequest:subject"), ("_revinclude", "Consent:patient")],
    )
    assert {_reference(entry) for entry in _by_mode(back, "include")} == {mine["ServiceRequest"], mine["Consent"]}


@pytest.mark.parametrize(
    ("params", "diagnostics"),
    [
        ({"_include": "Patient:general-practitioner"}, "does not start from ServiceRequest"),
        ({"_include": "ServiceRequest:code"}, "reference parameter"),
        ({"status:contains": "act"}, "modifier :contains is not supported"),
        ({"_summary": "short"}, "_summary supports"),
    ],
)
async def test_unsupported_forms_are_400(client: httpx.AsyncClient, params: dict[str, str], diagnostics: str) -> None:
    answer = await client.get("/fhir/ServiceRequest", params=params)
    assert answer.status_code == 400 and diagnostics in answer.json()["issue"][0]["diagnostics"]


async def test_walking_the_next_links_sees_each_match_once(client: httpx.AsyncClient) -> None:
    """The next links page by keyset (_snapshot, _cursor): followed to the end while referrals are posted, they
    show each ServiceRequest that existed at the first page once, and none posted since."""
    existing = {(await _referral(client))["ServiceRequest"] for _ in range(5)}
    bundle = await _search(client, "ServiceRequest", {"_count": "2", "_sort": "-_lastUpdated"})
    seen: list[str] = []
    while True:
        seen += [_reference(entry) for entry in _by_mode(bundle, "match")]
        assert bundle["total"] == 5
        following = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not following:
            break
        await _referral(client)
        bundle = (await client.get(following[0])).json()
    assert sorted(seen) == sorted(existing)


async def test_the_capability_statement_lists_what_search_takes(client: httpx.AsyncClient) -> None:
    """Every include and reverse include, every modifier (in each parameter's documentation: R4 has no element for
    them) and every result parameter — from the search registry, as data."""
    rest = (await client.get("/fhir/metadata")).json()["rest"][0]
    by_type = {resource["type"]: resource for resource in rest["resource"]}
    service_request = by_type["ServiceRequest"]
    assert {"ServiceRequest:patient", "ServiceRequest:requester", "ServiceRequest:supporting-info"} <= set(
        service_request["searchInclude"]
    )
    assert {"Task:focus", "Provenance:target"} <= set(service_request["searchRevInclude"])
    assert {"Consent:patient", "CareTeam:subject", "ServiceRequest:subject"} <= set(
        by_type["Patient"]["searchRevInclude"]
    )
    documented = {p["name"]: p.get("documentation", "") for p in by_type["Patient"]["searchParam"]}
    assert ":exact, :contains, :missing" in documented["given"] and "accents ignored" in documented["given"]
    assert ":not, :missing" in documented["gender"]
    assert ":identifier, :missing" in documented["general-practitioner"]
    assert "Modifiers" not in documented["_id"]
    # Per type, not in rest.searchParam ("all resources"): the conformance types take none of them.
    assert {p["name"] for p in by_type["Patient"]["searchParam"]} >= {"_count", "_sort", "_summary", "_elements"} | {
        "_total",
        "_include",
        "_revinclude",
    }
    assert "searchParam" not in rest


async def test_includes_and_summaries_in_xml(client: httpx.AsyncClient) -> None:
    """The same Bundle in FHIR XML: included entries and a SUBSETTED match are written (fhir.resources' model)."""
    mine = await _referral(client)
    params = {"_id": mine["ServiceRequest"].split("/")[1], "_include": "ServiceRequest:patient", "_summary": "true"}
    answer = await client.get("/fhir/ServiceRequest", params=params, headers={"accept": "application/fhir+xml"})
    assert answer.status_code == 200, answer.text
    assert answer.text.count('<mode value="include"/>') == 1 and "SUBSETTED" in answer.text


def test_every_served_type_is_cut_with_its_mandatory_elements() -> None:
    """``_elements`` keeps the mandatory elements, ``_summary=true`` the summary ones — from the R4 definitions in
    profiles/r4/, which carry no AuditEvent: its flags were None, ``AuditEvent?_elements=type`` dropped ``recorded``,
    ``agent`` and ``source``, and in XML (written through the R4 model, which requires them) it was a 500. Now a
    type without its definition takes its flags from the R4 model."""
    from gateway.fhir.search import SEARCH_PARAMETERS, Summary
    from gateway.fhir.subset import subset
    from gateway.fhir.xml import resource_to_xml
    from gateway.validation.definitions import element_flags

    for resource_type in SEARCH_PARAMETERS:
        assert element_flags(resource_type) is not None, resource_type
    flags = element_flags("AuditEvent")
    assert flags is not None and {"type", "recorded", "agent", "source"} <= flags.mandatory
    assert {"type", "recorded", "outcome"} <= flags.summary and "entity" not in flags.summary
    audit_event = {
        "resourceType": "AuditEvent",
        "id": "a1",
        "meta": {"versionId": "1", "lastUpdated": "2026-12-07T13:11:57.431Z"},
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
        "action": "C",
        "recorded": "2026-12-07T13:11:57.431Z",
        "outcome": "0",
        "agent": [{"who": {"display": "DAC Gateway"}, "requestor": False}],
        "source": {"observer": {"display": "DAC Gateway"}},
        "entity": [{"what": {"reference": "Patient/p1/_history/1"}}],
    }
    cut = subset(audit_event, Summary.FALSE, ("action",), flags)
    assert set(cut) == {"resourceType", "id", "meta", "type", "action", "recorded", "agent", "source"}
    assert b"<AuditEvent " in resource_to_xml(cut)
    assert "entity" not in subset(audit_event, Summary.TRUE, (), flags)
