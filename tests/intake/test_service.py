"""take_in: atomic, idempotent, conditional on national identifiers, safe under concurrency."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from gateway.errors import BusinessRuleViolation, InvalidRequest, PreconditionFailed, ResourceNotFound
from gateway.fhir.search import parse_search
from gateway.intake import read_referral, take_in
from gateway.intake.service import _identity_namespaces
from gateway.referral.careteam import CARETEAM_ROLE_SYSTEM
from gateway.routing.config import RoutingTable
from gateway.store import Database, UnitOfWork
from tests.conftest import load_example
from tests.support.referrals import renamed, resource


async def _count(database: Database, resource_type: str, *params: tuple[str, str]) -> int:
    async with UnitOfWork(database, write=False) as uow:
        total, _ = await uow.resources.search(parse_search(resource_type, list(params), default_count=10, max_count=10))
    return total


async def _get(database: Database, resource_type: str, resource_id: str) -> dict[str, Any]:
    async with UnitOfWork(database, write=False) as uow:
        stored = await uow.resources.get(resource_type, resource_id)
    assert stored is not None
    return stored.content


async def test_referral_is_stored_with_references_rewritten(database: Database, routing: RoutingTable) -> None:
    bundle = load_example("referral-hospital-nurse.json")
    outcome = await take_in(database, read_referral(bundle, "transaction"), routing)
    assert [entry.status for entry in outcome.entries] == ["201 Created"] * len(bundle["entry"])
    service_request = await _get(database, "ServiceRequest", outcome.service_request_id)
    patient_id = next(e.id for e in outcome.entries if e.resource_type == "Patient")
    assert service_request["status"] == "active"
    assert service_request["subject"] == {"reference": f"Patient/{patient_id}"}
    assert service_request["requester"]["reference"].startswith("PractitionerRole/")
    linked = {item["reference"].split("/")[0] for item in service_request["supportingInfo"]}
    assert {"CareTeam", "Consent"} <= linked


async def test_care_team_is_built_when_absent(database: Database, routing: RoutingTable) -> None:
    bundle = load_example("referral-hospital-nurse.json")
    outcome = await take_in(database, read_referral(bundle, "transaction"), routing)
    (made,) = [entry for entry in outcome.generated if entry.resource_type == "CareTeam"]
    care_team = await _get(database, "CareTeam", made.id)
    roles = {
        participant["role"][0]["coding"][0]["code"]: participant["member"]["reference"]
        for participant in care_team["participant"]
    }
    assert all(p["role"][0]["coding"][0]["system"] == CARETEAM_ROLE_SYSTEM for p in care_team["participant"])
    service_request = await _get(database, "ServiceRequest", outcome.service_request_id)
    patient = await _get(database, "Patient", service_request["subject"]["reference"].split("/")[1])
    assert roles["requester"] == service_request["requester"]["reference"]
    assert roles["gp"] == patient["generalPractitioner"][0]["reference"]


async def test_care_team_sent_is_kept(database: Database, routing: RoutingTable) -> None:
    bundle = load_example("referral-social-worker.json")
    outcome = await take_in(database, read_referral(bundle, "transaction"), routing)
    assert "CareTeam" not in {entry.resource_type for entry in outcome.generated}
    care_team_id = next(e.id for e in outcome.entries if e.resource_type == "CareTeam")
    service_request = await _get(database, "ServiceRequest", outcome.service_request_id)
    assert {"reference": f"CareTeam/{care_team_id}"} in service_request["supportingInfo"]


async def test_resubmission_replays_the_outcome(database: Database, routing: RoutingTable) -> None:
    bundle = load_example("referral-gp.json")
    first = await take_in(database, read_referral(bundle, "transaction"), routing)
    again = await take_in(database, read_referral(copy.deepcopy(bundle), "transaction"), routing)
    assert not first.replayed and again.replayed
    assert again.entries == first.entries and again.generated == first.generated
    other_bundle_id = copy.deepcopy(bundle)
    other_bundle_id["identifier"]["value"] += "-retry"
    assert (await take_in(database, read_referral(other_bundle_id, "transaction"), routing)).entries == first.entries
    assert await _count(database, "ServiceRequest") == 1


async def test_same_people_are_one_resource_each(database: Database, routing: RoutingTable) -> None:
    bundle = load_example("referral-gp.json")
    first = await take_in(database, read_referral(bundle, "transaction"), routing)
    second = await take_in(database, read_referral(renamed(bundle, "-2"), "transaction"), routing)
    statuses = {entry.resource_type: entry.status for entry in second.entries}
    assert statuses["ServiceRequest"] == "201 Created"
    assert statuses["Patient"] == statuses["Practitioner"] == statuses["Organization"] == "200 OK"
    assert {e.id for e in first.entries if e.resource_type == "Patient"} == {
        e.id for e in second.entries if e.resource_type == "Patient"
    }
    assert await _count(database, "Patient") == 1
    assert await _count(database, "ServiceRequest") == 2


async def test_concurrent_identical_posts_make_one_referral(database: Database, routing: RoutingTable) -> None:
    bundle = load_example("referral-no-gp.json")
    outcomes = await asyncio.gather(
        *(take_in(database, read_referral(copy.deepcopy(bundle), "transaction"), routing) for _ in range(20))
    )
    assert len({outcome.service_request_id for outcome in outcomes}) == 1
    assert sum(not outcome.replayed for outcome in outcomes) == 1
    assert await _count(database, "ServiceRequest") == 1
    assert await _count(database, "Patient") == 1
    assert await _count(database, "CareTeam") == 1


async def test_concurrent_referrals_for_one_new_patient_share_it(database: Database, routing: RoutingTable) -> None:
    bundle = load_example("referral-overseas.json")
    outcomes = await asyncio.gather(
        *(take_in(database, read_referral(renamed(bundle, f"-{i}"), "transaction"), routing) for i in range(8))
    )
    assert len({outcome.service_request_id for outcome in outcomes}) == 8
    assert await _count(database, "Patient") == 1


async def test_unresolved_server_reference_stores_nothing(database: Database, routing: RoutingTable) -> None:
    bundle = copy.deepcopy(load_example("referral-gp.json"))
    resource(bundle, "ServiceRequest")["performer"] = [{"reference": "Organization/does-not-exist"}]
    with pytest.raises(BusinessRuleViolation) as caught:
        await take_in(database, read_referral(bundle, "transaction"), routing)
    assert caught.value.issues[0].code == "reference-unresolved"
    assert caught.value.issues[0].expression is not None
    assert caught.value.issues[0].expression.endswith(".resource.performer[0].reference")
    for resource_type in ("Patient", "Practitioner", "ServiceRequest", "CareTeam"):
        assert await _count(database, resource_type) == 0


async def test_if_none_exist_matching_several_is_412(database: Database, routing: RoutingTable) -> None:
    async with UnitOfWork(database) as uow:
        for _ in range(2):
            uow.resources.add({"resourceType": "Organization", "name": "Twin"})
        await uow.commit()
    bundle = copy.deepcopy(load_example("referral-gp.json"))
    organization_entry = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Organization")
    organization_entry["request"]["ifNoneExist"] = "name:exact=Twin"
    with pytest.raises(PreconditionFailed) as caught:
        await take_in(database, read_referral(bundle, "transaction"), routing)
    assert caught.value.issues[0].code == "conditional-multiple-matches"
    assert await _count(database, "ServiceRequest") == 0


async def _second_patient(
    database: Database, routing: RoutingTable, condition: str, ins: tuple[str, str] | None = None
) -> tuple[dict[str, Any], int]:
    """The social worker's referral, its Patient entry (at ``index``) under ``condition``, and under ``ins``
    (system, FR Core type) rather than its INS-NIR — after the overseas referral, another patient, was stored."""
    await take_in(database, read_referral(load_example("referral-overseas.json"), "transaction"), routing)
    bundle = copy.deepcopy(load_example("referral-social-worker.json"))
    index, patient_entry = next(
        (i, e) for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == "Patient"
    )
    if ins is not None:
        (identifier,) = patient_entry["resource"]["identifier"]
        identifier["system"], identifier["type"]["coding"][0]["code"] = ins
    patient_entry["request"]["ifNoneExist"] = condition
    return bundle, index


@pytest.mark.parametrize("condition", ["&", "?", "_format=json", "_count=1", "_sort=-_lastUpdated"])
async def test_an_if_none_exist_that_selects_nothing_adopts_no_other_patient(
    database: Database, routing: RoutingTable, condition: str
) -> None:
    """Without a criterion the search matched every Patient stored, and the first one became this referral's
    patient: another patient's record, under another INS. A 400 at the condition, nothing stored."""
    bundle, index = await _second_patient(database, routing, condition)
    with pytest.raises(InvalidRequest) as caught:
        await take_in(database, read_referral(bundle, "transaction"), routing)
    assert caught.value.issues[0].expression == f"Bundle.entry[{index}].request.ifNoneExist"
    assert (await _count(database, "Patient"), await _count(database, "ServiceRequest")) == (1, 1)


@pytest.mark.parametrize("ins", [None, ("urn:oid:1.2.250.1.213.1.4.9", "INS-NIA")])
async def test_an_if_none_exist_matching_a_patient_under_another_ins_is_refused(
    database: Database, routing: RoutingTable, ins: tuple[str, str] | None
) -> None:
    """A condition on other elements than the INS may find a patient registered under another one — another
    INS-NIR, or an INS-NIA (two numbers of one kind: a patient has one INS): adopting it would make two patients
    one (adopted, the posted INS dropped)."""
    bundle, index = await _second_patient(database, routing, "_lastUpdated=ge2000-01-01", ins)
    with pytest.raises(BusinessRuleViolation) as caught:
        await take_in(database, read_referral(bundle, "transaction"), routing)
    assert caught.value.issues[0].code == "identifier-change-forbidden"
    assert caught.value.issues[0].expression == f"Bundle.entry[{index}].request.ifNoneExist"
    assert (await _count(database, "Patient"), await _count(database, "ServiceRequest")) == (1, 1)


async def test_put_with_if_match(database: Database, routing: RoutingTable) -> None:
    first = await take_in(database, read_referral(load_example("referral-gp.json"), "transaction"), routing)
    patient_id = next(e.id for e in first.entries if e.resource_type == "Patient")
    bundle = renamed(load_example("referral-gp.json"), "-update")
    patient_entry = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    patient_entry["resource"]["telecom"] = [{"system": "phone", "value": "0102030405"}]

    stale = copy.deepcopy(bundle)
    stale_entry = next(e for e in stale["entry"] if e["resource"]["resourceType"] == "Patient")
    stale_entry["request"] = {"method": "PUT", "url": f"Patient/{patient_id}", "ifMatch": 'W/"7"'}
    with pytest.raises(PreconditionFailed) as caught:
        await take_in(database, read_referral(stale, "transaction"), routing)
    assert caught.value.issues[0].code == "version-mismatch"
    assert 'W/"1"' in caught.value.issues[0].diagnostics

    patient_entry["request"] = {"method": "PUT", "url": f"Patient/{patient_id}", "ifMatch": 'W/"1"'}
    outcome = await take_in(database, read_referral(bundle, "transaction"), routing)
    updated = next(e for e in outcome.entries if e.resource_type == "Patient")
    assert (updated.id, updated.version_id, updated.status) == (patient_id, 2, "200 OK")
    assert (await _get(database, "Patient", patient_id))["telecom"][0]["value"] == "0102030405"


async def test_put_of_an_unknown_id_is_404(database: Database, routing: RoutingTable) -> None:
    bundle = copy.deepcopy(load_example("referral-gp.json"))
    patient_entry = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    patient_entry["request"] = {"method": "PUT", "url": "Patient/nobody"}
    with pytest.raises(ResourceNotFound):
        await take_in(database, read_referral(bundle, "transaction"), routing)
    assert await _count(database, "ServiceRequest") == 0


def test_a_test_ins_is_not_the_real_ins_of_the_same_number() -> None:
    """All INS systems share one number format: a test identity's number can be a real one's. Only the same
    identifier (system and number) makes two registrations one patient."""
    number = "150028100403144"
    real = {"resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": number}]}
    test = {"resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.10", "value": number}]}
    assert not _identity_namespaces("Patient", real)["ins"] & _identity_namespaces("Patient", test)["ins"]
    assert _identity_namespaces("Patient", real)["ins"] & _identity_namespaces("Patient", real | {"id": "x"})["ins"]


async def test_directory_records_are_used_as_on_file_and_changed_by_the_operator(
    database: Database, routing: RoutingTable
) -> None:
    """Issue 23, item 4, authentication off (the caller is the development operator): a platform's Organization a
    bundle carries first is stored as the routing file says; a later referral naming a known Practitioner with
    other names leaves it as on file and says so; a PUT entry (the operator's) changes it, with a Provenance."""
    bundle = load_example("referral-hospital-nurse.json")
    bundle["entry"].append(
        {
            "fullUrl": "urn:uuid:9d0e4c55-0000-4000-8000-0000000000aa",
            "resource": {
                "resourceType": "Organization",
                "identifier": [{"system": "https://finess.esante.gouv.fr", "value": "750000010"}],
                "name": "Not DAC Paris",
                "telecom": [{"system": "url", "value": "https://elsewhere.example/fhir"}],
            },
            "request": {"method": "POST", "url": "Organization"},
        }
    )
    first = await take_in(database, read_referral(bundle, "transaction"), routing)
    platform_organization = await _get(database, "Organization", first.entries[-1].id)
    assert platform_organization["name"] == "DAC Paris"
    assert platform_organization["telecom"] == [{"system": "url", "value": routing.platforms["dac-75"].endpoint}]
    index = next(i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == "Practitioner")
    practitioner = first.entries[index]
    on_file = await _get(database, "Practitioner", practitioner.id)

    other = renamed(load_example("referral-hospital-nurse.json"), "-other")
    other["entry"][index]["resource"]["name"] = [{"use": "official", "family": "PIRATE", "given": ["Eve"]}]
    second = await take_in(database, read_referral(other, "transaction"), routing)
    assert second.entries[index].id == practitioner.id
    assert any(f"Practitioner/{practitioner.id} was matched" in note for note in second.notes)
    assert await _get(database, "Practitioner", practitioner.id) == on_file

    rewrite = renamed(load_example("referral-hospital-nurse.json"), "-rewrite")
    rewrite["entry"][index]["resource"] |= {"id": practitioner.id, "name": [{"use": "official", "family": "NOUVEAU"}]}
    rewrite["entry"][index]["request"] = {"method": "PUT", "url": f"Practitioner/{practitioner.id}"}
    third = await take_in(database, read_referral(rewrite, "transaction"), routing)
    assert (await _get(database, "Practitioner", practitioner.id))["name"][0]["family"] == "NOUVEAU"
    provenances = [entry for entry in third.generated if entry.resource_type == "Provenance"]
    targets = [(await _get(database, "Provenance", entry.id))["target"] for entry in provenances]
    assert [{"reference": f"Practitioner/{practitioner.id}/_history/2"}] in targets
