"""Identity vigilance (référentiel INS, DESIGN §7; issue 17): a known INS with other identity traits is a 422
``ins-traits-mismatch`` naming each trait, never a value, nothing stored; equal traits update the Patient's other
elements as a new version, the identity reliability status kept at the highest seen."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from gateway import Settings, create_app
from gateway.fhir.france import IDENTITY_RELIABILITY_EXTENSION, IDENTITY_STATUS_ORDER, identity_status_rank
from gateway.intake.vigilance import trait_mismatches, updated_patient
from gateway.routing.config import RoutingTable
from gateway.store import Database
from tests.support.auth import TEST_SECRET, SmartClient, write_clients
from tests.support.referrals import fresh, renamed, resource

FHIR_JSON = {"content-type": "application/fhir+json"}
STATUS_SYSTEM = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0445"
TOKEN_URL = "http://gateway.test/auth/token"
FIRST = SmartClient("vigilance-a", "sender", ["system/ServiceRequest.c", "system/*.rs"])
SECOND = SmartClient("vigilance-b", "sender", ["system/ServiceRequest.c", "system/*.rs"])


def _patient(bundle: dict[str, Any]) -> dict[str, Any]:
    return resource(bundle, "Patient")


def _with_status(patient: dict[str, Any], code: str | None) -> None:
    patient["extension"] = [e for e in patient.get("extension", []) if e["url"] != IDENTITY_RELIABILITY_EXTENSION]
    if code is not None:
        patient["extension"].insert(
            0,
            {
                "url": IDENTITY_RELIABILITY_EXTENSION,
                "extension": [{"url": "identityStatus", "valueCoding": {"system": STATUS_SYSTEM, "code": code}}],
            },
        )


async def _post(client: httpx.AsyncClient, bundle: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    return await client.post("/fhir", json=bundle, headers=FHIR_JSON | (headers or {}))


def _location(answer: httpx.Response, resource_type: str) -> str:
    return str(
        next(
            e["response"]["location"]
            for e in answer.json()["entry"]
            if e["response"]["location"].startswith(resource_type)
        )
    )


#: (trait, how the second referral changes it, the FHIRPath of the issue in the posted bundle)
CHANGES = [
    ("birth family name", lambda p: p["name"][0].update(family="DURAND"), "name[0].family"),
    ("birth given names", lambda p: p["name"][0].update(given=["Jeanne"]), "name[0].given"),
    ("gender", lambda p: p.update(gender="male"), "gender"),
    ("birth date", lambda p: p.update(birthDate="1938-11-04"), "birthDate"),
    (
        "birth place",
        lambda p: p["extension"][1]["valueAddress"]["extension"][0]["valueCoding"].update(code="59350"),
        "extension[1].valueAddress",
    ),
]


@pytest.mark.parametrize(("trait", "change", "element"), CHANGES, ids=[c[0] for c in CHANGES])
async def test_a_known_ins_with_another_trait_is_refused_naming_the_trait_and_storing_nothing(
    client: httpx.AsyncClient, trait: str, change: Any, element: str
) -> None:
    first = fresh()
    assert (await _post(client, first)).status_code == 200
    patient_entry = next(i for i, e in enumerate(first["entry"]) if e["resource"]["resourceType"] == "Patient")
    second = renamed(first, "-other-traits")
    stored_values = [str(v) for v in (_patient(second)["name"][0]["family"], _patient(second)["birthDate"])]
    change(_patient(second))
    _patient(second)["telecom"] = [{"system": "phone", "value": "06 00 00 00 99"}]
    answer = await _post(client, second)
    assert answer.status_code == 422, answer.text
    issues = answer.json()["issue"]
    assert [(i["details"]["coding"][0]["code"], i["expression"]) for i in issues] == [
        ("ins-traits-mismatch", [f"Bundle.entry[{patient_entry}].resource.{element}"])
    ]
    assert trait in issues[0]["diagnostics"]
    for value in stored_values:  # neither the record's values nor the posted ones are echoed
        assert value not in answer.text
    # Nothing stored: no second referral, the Patient as it was (one version, the first telecom).
    requests = (await client.get("/fhir/ServiceRequest", params={"_summary": "count"})).json()
    assert requests["total"] == 1
    patients = (await client.get("/fhir/Patient")).json()["entry"]
    assert [p["resource"]["meta"]["versionId"] for p in patients] == ["1"]
    assert patients[0]["resource"]["telecom"] == _patient(first)["telecom"]


async def test_every_differing_trait_is_one_issue(client: httpx.AsyncClient) -> None:
    first = fresh()
    assert (await _post(client, first)).status_code == 200
    second = renamed(first, "-many")
    for _, change, _ in CHANGES:
        change(_patient(second))
    answer = await _post(client, second)
    assert answer.status_code == 422
    assert len(answer.json()["issue"]) == len(CHANGES)
    assert {i["details"]["coding"][0]["code"] for i in answer.json()["issue"]} == {"ins-traits-mismatch"}


async def test_equal_traits_update_the_patient_as_a_new_version(client: httpx.AsyncClient) -> None:
    first = fresh(commune="59350")
    answer = await _post(client, first)
    patient_location = _location(answer, "Patient").split("/_history")[0]
    second = renamed(first, "-moved")
    patient = _patient(second)
    patient["name"][0]["family"] = " dubois "  # the same trait, written otherwise (case, spacing)
    patient["address"] = [{"use": "home", "city": "Quimper", "postalCode": "29000", "district": "29232"}]
    del patient["telecom"]  # not said: kept as on record
    answer = await _post(client, second)
    assert answer.status_code == 200, answer.text
    assert _location(answer, "Patient") == f"{patient_location}/_history/2"
    stored = (await client.get(f"/fhir/{patient_location}")).json()
    assert stored["address"] == patient["address"]
    assert stored["telecom"] == _patient(first)["telecom"]
    assert stored["identifier"] == _patient(first)["identifier"]
    # Routing took the new address: the referral went to Finistère's platform.
    service_request = (await client.get(f"/fhir/{_location(answer, 'ServiceRequest').split('/_history')[0]}")).json()
    assert service_request["performer"][0]["display"] == "DAC Finistère"
    # The new version's Provenance says why.
    provenance = (await client.get("/fhir/Provenance", params={"target": f"{patient_location}/_history/2"})).json()
    assert provenance["total"] == 1
    # The same referral content again: nothing new, no third version.
    third = renamed(second, "-again")
    answer = await _post(client, third)
    assert _location(answer, "Patient") == f"{patient_location}/_history/2"


@pytest.mark.parametrize(
    ("on_record", "posted", "kept"),
    [("VALI", "PROV", "VALI"), ("PROV", "QUAL", "QUAL"), ("RECUP", "VALI", "VALI"), ("QUAL", "RECUP", "QUAL")],
)
async def test_the_reliability_status_is_kept_at_the_highest_seen(
    client: httpx.AsyncClient, on_record: str, posted: str, kept: str
) -> None:
    first = fresh()
    _with_status(_patient(first), on_record)
    answer = await _post(client, first)
    patient_location = _location(answer, "Patient").split("/_history")[0]
    second = renamed(first, "-status")
    _with_status(_patient(second), posted)
    _patient(second)["telecom"] = [{"system": "email", "value": "patient@example.org"}]
    assert (await _post(client, second)).status_code == 200
    stored = (await client.get(f"/fhir/{patient_location}")).json()
    statuses = [e for e in stored["extension"] if e["url"] == IDENTITY_RELIABILITY_EXTENSION]
    assert [s["extension"][0]["valueCoding"]["code"] for s in statuses] == [kept]
    assert stored["telecom"] == _patient(second)["telecom"]


def test_the_reliability_order_is_the_rniv_one() -> None:
    assert IDENTITY_STATUS_ORDER == ("PROV", "RECUP", "VALI", "QUAL")
    ranks = [identity_status_rank(code) for code in ("VIDE", None, "PROV", "RECUP", "VALI", "QUAL")]
    assert ranks == [0, 0, 1, 2, 3, 4]


def test_names_are_compared_as_the_ins_referential_writes_them() -> None:
    """Capitals without accents (the référentiel INS's form, what HL7 v2 feeds send) are the same names; another
    name is not, nor is a hyphen dropped (the référentiel keeps it)."""
    stored = _patient(fresh())
    stored["name"][0].update(family="Lefèvre-Noël", given=["Hélène", "Zoé"])
    posted = copy.deepcopy(stored)
    posted["name"][0].update(family="LEFEVRE-NOEL", given=["HELENE", " ZOE"])
    assert trait_mismatches(posted, stored, "Patient") == []
    posted["name"][0].update(family="LEFEVRE NOEL", given=["HELENA", "ZOE"])
    assert [i.expression for i in trait_mismatches(posted, stored, "Patient")] == [
        "Patient.name[0].family",
        "Patient.name[0].given",
    ]


def test_updated_patient_is_pure_and_says_when_nothing_changed() -> None:
    patient = _patient(fresh())
    assert updated_patient(patient, copy.deepcopy(patient)) is None
    assert trait_mismatches(patient, patient, "Patient") == []
    unknown = copy.deepcopy(patient)
    _with_status(unknown, "VIDE")  # a code outside the four never replaces one
    assert updated_patient(patient, unknown) is None
    none_on_record = copy.deepcopy(patient)
    _with_status(none_on_record, None)
    merged = updated_patient(none_on_record, patient)
    assert merged is not None and IDENTITY_RELIABILITY_EXTENSION in [e["url"] for e in merged["extension"]]


@pytest.fixture
def secure_app(tmp_path: Path, database_url: str, database: Database, routing: RoutingTable) -> FastAPI:
    clients = write_clients(tmp_path, [FIRST, SECOND])
    settings = Settings(database_url=database_url, auth="on", clients=clients, auth_secret=TEST_SECRET)
    return create_app(settings, database, routing)


@pytest.fixture
async def secure(secure_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=secure_app), base_url="http://gateway.test") as c:
        yield c


async def _token(http: httpx.AsyncClient, client: SmartClient) -> dict[str, str]:
    answer = await http.post("/auth/token", data=client.token_form(TOKEN_URL))
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


async def test_with_authentication_another_sender_learns_which_trait_differs_never_its_value(
    secure: httpx.AsyncClient,
) -> None:
    a, b = await _token(secure, FIRST), await _token(secure, SECOND)
    first = fresh()
    assert (await _post(secure, first, a)).status_code == 200
    second = renamed(first, "-b")
    second["identifier"]["value"] += "-b"
    _patient(second)["birthDate"] = "1938-12-25"
    answer = await _post(secure, second, b)
    assert answer.status_code == 422, answer.text
    assert [i["details"]["coding"][0]["code"] for i in answer.json()["issue"]] == ["ins-traits-mismatch"]
    assert "1938-11-03" not in answer.text and "1938-12-25" not in answer.text
    # Equal traits from B: a new version of the shared Patient, which B now reads as a party to its referral.
    third = renamed(first, "-b-equal")
    _patient(third)["telecom"] = [{"system": "phone", "value": "03 20 00 00 01"}]
    answer = await _post(secure, third, b)
    assert answer.status_code == 200, answer.text
    patient = _location(answer, "Patient")
    assert patient.endswith("/_history/2")
    read = await secure.get(f"/fhir/{patient.split('/_history')[0]}", headers=b)
    assert read.json()["telecom"] == _patient(third)["telecom"]
