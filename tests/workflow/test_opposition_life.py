"""An opposition's whole life (L1110-12, DESIGN §11; issue 17): recorded, bounded by its period, ended by its poster
or an operator (PUT, If-Match), lifted by a later permit of its own — never by a permit inside a referral — and
never reviving what it revoked. With authentication off and on, and a lift racing a new referral."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from gateway import Settings, create_app
from gateway.fhir.primitives import fhir_instant
from gateway.referral.consents import lifts, opposition_in_force
from gateway.routing.config import RoutingTable
from gateway.store import Database
from gateway.workflow.intake import LIFTING
from gateway.workflow.opposition import ENDED_NOTE, LIFT_NOTE, UNIDENTIFIED_NOTE
from tests.support.auth import TEST_SECRET, SmartClient, write_clients
from tests.support.databases import USES_POSTGRESQL
from tests.support.referrals import fresh, renamed, resource

FHIR_JSON = {"content-type": "application/fhir+json"}
OUTCOME = {"prefer": "return=OperationOutcome"}
INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"
INS_NIA = "urn:oid:1.2.250.1.213.1.4.9"
TOKEN_URL = "http://gateway.test/auth/token"
CONSENT_SCOPES = ["system/ServiceRequest.c", "system/*.rs", "system/Consent.cu"]
SENDER_A = SmartClient("life-a", "sender", CONSENT_SCOPES)
SENDER_B = SmartClient("life-b", "sender", CONSENT_SCOPES)
PLATFORM = SmartClient("life-dac75", "platform", [*CONSENT_SCOPES, "system/Task.u"], "dac-75")
OPERATOR = SmartClient("life-ops", "operator", ["system/*.rs", "system/Consent.u", "system/AuditEvent.rs"])
NOW = datetime.now(UTC)


def _ins(bundle: dict[str, Any]) -> str:
    return str(next(i["value"] for i in resource(bundle, "Patient")["identifier"] if i["system"] == INS_NIR))


def _consent(bundle: dict[str, Any], kind: str, when: datetime, **extra: Any) -> dict[str, Any]:
    """A Consent posted on its own for the bundle's patient, naming it by a contained Patient (INS + traits)."""
    patient = copy.deepcopy(resource(bundle, "Patient"))
    patient.pop("generalPractitioner", None)
    patient["id"] = "p"
    return {
        "resourceType": "Consent",
        "contained": [patient],
        "status": "active",
        "scope": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "#p"},
        "dateTime": fhir_instant(when),
        "policyRule": {"text": "Code de la santé publique, art. L1110-12"},
        "provision": {"type": kind, **extra},
    }


async def _refer(client: httpx.AsyncClient, bundle: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    answer = await client.post("/fhir", json=bundle, headers=FHIR_JSON | (headers or {}))
    assert answer.status_code == 200, answer.text
    entry = next(e for e in answer.json()["entry"] if "/ServiceRequest/" in e["fullUrl"])
    reference = entry["response"]["location"].split("/_history")[0]
    stored = (await client.get(f"/fhir/{reference}", headers=headers or {})).json()
    return stored, [issue["diagnostics"] for issue in entry["response"]["outcome"]["issue"]]


async def _record(
    client: httpx.AsyncClient, consent: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Post a Consent, asking for the OperationOutcome: the stored Consent (read back) and the answer's notes."""
    answer = await client.post("/fhir/Consent", json=consent, headers=FHIR_JSON | OUTCOME | (headers or {}))
    assert answer.status_code == 201, answer.text
    location = answer.headers["location"].split("/fhir/", 1)[1].split("/_history")[0]
    stored = (await client.get(f"/fhir/{location}", headers=headers or {})).json()
    return stored, [issue["diagnostics"] for issue in answer.json()["issue"]]


async def _put(
    client: httpx.AsyncClient,
    consent: dict[str, Any],
    headers: dict[str, str] | None = None,
    version: str | None = None,
) -> httpx.Response:
    match = {"if-match": f'W/"{version or consent["meta"]["versionId"]}"'}
    return await client.put(
        f"/fhir/Consent/{consent['id']}", json=consent, headers=FHIR_JSON | OUTCOME | match | (headers or {})
    )


async def _provenances(
    client: httpx.AsyncClient, target: str, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """The Provenances the caller reads whose target is exactly this version (a search by target matches any)."""
    found = (await client.get("/fhir/Provenance", params={"target": target}, headers=headers or {})).json()
    return [
        e["resource"] for e in found.get("entry", []) if target in [t["reference"] for t in e["resource"]["target"]]
    ]


def _ended(consent: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in consent.items() if k != "meta"} | {"status": "inactive"}


# --- the rule, pure ---------------------------------------------------------------------------------------------


def test_an_opposition_is_in_force_within_its_period_only() -> None:
    deny = {"status": "active", "provision": {"type": "deny"}}
    assert opposition_in_force(deny, NOW)
    assert not opposition_in_force(deny | {"status": "inactive"}, NOW)
    assert not opposition_in_force({"status": "active", "provision": {"type": "permit"}}, NOW)
    bounded = copy.deepcopy(deny)
    bounded["provision"]["period"] = {"start": "2026-01-01", "end": "2026-12-31"}
    assert opposition_in_force(bounded, datetime(2026, 12, 31, 22, tzinfo=UTC))  # all of its last day (Paris)
    assert not opposition_in_force(bounded, datetime(2027, 1, 1, 12, tzinfo=UTC))
    assert not opposition_in_force(bounded, datetime(2025, 12, 31, 12, tzinfo=UTC))


def test_a_permit_lifts_only_what_it_postdates() -> None:
    deny = {"status": "active", "provision": {"type": "deny"}, "dateTime": "2026-12-07"}
    permit = {"status": "active", "provision": {"type": "permit"}}
    assert not lifts(permit | {"dateTime": "2026-12-07T18:00:00+01:00"}, deny)  # maybe before: the same day
    assert lifts(permit | {"dateTime": "2026-12-08"}, deny)
    assert not lifts(permit, deny)  # undated
    assert not lifts(permit | {"dateTime": "2026-12-08", "status": "inactive"}, deny)
    undated = {"status": "active", "provision": {"type": "deny"}, "meta": {"lastUpdated": "2026-12-07T10:00:00Z"}}
    assert lifts(permit | {"dateTime": "2026-12-07T10:00:01Z"}, undated)


# --- authentication off -----------------------------------------------------------------------------------------


async def test_its_poster_ends_an_opposition_and_new_referrals_proceed_but_none_is_revived(
    client: httpx.AsyncClient,
) -> None:
    bundle = fresh(commune="75056")
    before, _ = await _refer(client, bundle)
    assert before["status"] == "active"
    opposition, notes = await _record(client, _consent(bundle, "deny", NOW - timedelta(hours=1)))
    assert (await client.get(f"/fhir/ServiceRequest/{before['id']}")).json()["status"] == "revoked"
    held, notes = await _refer(client, renamed(bundle, "-held"))
    assert held["status"] == "revoked"
    assert LIFTING in notes  # how to lift it, told to the sender
    # If-Match is required and must be the current version; the patient is not changed by an update.
    no_match = await client.put(f"/fhir/Consent/{opposition['id']}", json=_ended(opposition), headers=FHIR_JSON)
    assert no_match.status_code == 428
    assert (await _put(client, _ended(opposition), version="7")).status_code == 412
    moved = _ended(opposition) | {"patient": {"identifier": {"system": INS_NIR, "value": _ins(fresh())}}}
    refused = await _put(client, moved, version="1")
    assert refused.status_code == 422 and "identifier-change-forbidden" in refused.text
    wrong_id = await client.put(
        "/fhir/Consent/other", json=_ended(opposition), headers=FHIR_JSON | {"if-match": 'W/"1"'}
    )
    assert wrong_id.status_code == 400

    ended = await _put(client, _ended(opposition), version="1")
    assert ended.status_code == 200, ended.text
    assert ENDED_NOTE in [issue["diagnostics"] for issue in ended.json()["issue"]]
    stored = (await client.get(f"/fhir/Consent/{opposition['id']}")).json()
    assert (stored["status"], stored["meta"]["versionId"], stored["patient"]) == (
        "inactive",
        "2",
        opposition["patient"],
    )
    after, _ = await _refer(client, renamed(bundle, "-after"))
    assert after["status"] == "active"
    for revoked in (before, held):  # not revived
        assert (await client.get(f"/fhir/ServiceRequest/{revoked['id']}")).json()["status"] == "revoked"
    # Audited, with a Provenance.
    target = f"Consent/{opposition['id']}/_history/2"
    provenances = await _provenances(client, target)
    assert len(provenances) == 1 and "ended" in provenances[0]["activity"]["text"]
    metadata = (await client.get("/fhir/metadata")).json()
    (consent_type,) = [r for r in metadata["rest"][0]["resource"] if r["type"] == "Consent"]
    assert "update" in [i["code"] for i in consent_type["interaction"]]
    updates = (await client.get("/fhir/AuditEvent", params={"subtype": "update"})).json()
    assert any(
        entity["what"]["reference"] == target for e in updates["entry"] for entity in e["resource"].get("entity", [])
    )


async def test_an_opposition_set_in_force_again_revokes_the_open_referrals(client: httpx.AsyncClient) -> None:
    bundle = fresh(commune="75056")
    opposition, _ = await _record(client, _consent(bundle, "deny", NOW - timedelta(hours=1)))
    assert (await _put(client, _ended(opposition), version="1")).status_code == 200
    open_one, _ = await _refer(client, bundle)
    assert open_one["status"] == "active"
    again = {k: v for k, v in opposition.items() if k != "meta"}
    answer = await _put(client, again, version="2")
    assert answer.status_code == 200, answer.text
    assert (await client.get(f"/fhir/ServiceRequest/{open_one['id']}")).json()["status"] == "revoked"


async def test_a_later_permit_of_its_own_lifts_an_opposition_an_earlier_one_does_not(
    client: httpx.AsyncClient,
) -> None:
    bundle = fresh(commune="75056")
    opposition, _ = await _record(client, _consent(bundle, "deny", NOW - timedelta(hours=2)))
    _, notes = await _record(client, _consent(bundle, "permit", NOW - timedelta(hours=3)))
    assert LIFT_NOTE in notes
    assert (await client.get(f"/fhir/Consent/{opposition['id']}")).json()["status"] == "active"
    held, _ = await _refer(client, bundle)
    assert held["status"] == "revoked"

    later, notes = await _record(client, _consent(bundle, "permit", NOW - timedelta(hours=1)))
    assert LIFT_NOTE in notes
    lifted = (await client.get(f"/fhir/Consent/{opposition['id']}")).json()
    assert (lifted["status"], lifted["meta"]["versionId"]) == ("inactive", "2")
    (provenance,) = await _provenances(client, f"Consent/{opposition['id']}/_history/2")
    assert [entity["what"]["reference"] for entity in provenance["entity"]] == [f"Consent/{later['id']}"]
    proceeding, _ = await _refer(client, renamed(bundle, "-after-permit"))
    assert proceeding["status"] == "active"
    assert (await client.get(f"/fhir/ServiceRequest/{held['id']}")).json()["status"] == "revoked"


async def test_a_permit_inside_a_referral_lifts_nothing_and_says_how(client: httpx.AsyncClient) -> None:
    bundle = fresh("referral-opposition.json", commune="75056")
    _, notes = await _refer(client, bundle)
    later = renamed(bundle, "-permit")
    resource(later, "Consent")["provision"]["type"] = "permit"
    resource(later, "Consent")["dateTime"] = fhir_instant(NOW)
    stored, notes = await _refer(client, later)
    assert stored["status"] == "revoked"
    assert LIFTING in notes


async def test_an_opposition_holds_within_its_period_only(client: httpx.AsyncClient) -> None:
    expired, future, current = fresh(commune="75056"), fresh(commune="75056"), fresh(commune="75056")
    day = timedelta(days=1)
    past = {"period": {"start": fhir_instant(NOW - 30 * day), "end": fhir_instant(NOW - day)}}
    later = {"period": {"start": fhir_instant(NOW + day)}}
    now = {"period": {"start": fhir_instant(NOW - day), "end": fhir_instant(NOW + 30 * day)}}
    open_one, _ = await _refer(client, expired)
    await _record(client, _consent(expired, "deny", NOW - 30 * day, **past))
    assert (await client.get(f"/fhir/ServiceRequest/{open_one['id']}")).json()["status"] == "active"  # revoked nothing
    assert (await _refer(client, renamed(expired, "-again")))[0]["status"] == "active"
    await _record(client, _consent(future, "deny", NOW, **later))
    assert (await _refer(client, future))[0]["status"] == "active"
    await _record(client, _consent(current, "deny", NOW, **now))
    assert (await _refer(client, current))[0]["status"] == "revoked"
    # An expired deny inside a referral stops nothing either.
    inside = fresh("referral-opposition.json", commune="75056")
    resource(inside, "Consent")["provision"] |= past
    assert (await _refer(client, inside))[0]["status"] != "revoked"


# --- authentication on ------------------------------------------------------------------------------------------


@pytest.fixture
def secure_app(tmp_path: Path, database_url: str, database: Database, routing: RoutingTable) -> FastAPI:
    clients = write_clients(tmp_path, [SENDER_A, SENDER_B, PLATFORM, OPERATOR])
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


async def test_with_authentication_the_poster_or_an_operator_updates_a_consent_no_one_else(
    secure: httpx.AsyncClient,
) -> None:
    a, b, platform, operator = [await _token(secure, c) for c in (SENDER_A, SENDER_B, PLATFORM, OPERATOR)]
    bundle = fresh(commune="75056")
    opposition, _ = await _record(secure, _consent(bundle, "deny", NOW - timedelta(hours=1)), a)
    # Another sender: the 404 of a Consent that does not exist — nothing tells it this one does.
    theirs = await _put(secure, _ended(opposition), b, version="1")
    nowhere = await _put(secure, _ended(opposition) | {"id": "nowhere"}, b, version="1")
    assert theirs.status_code == nowhere.status_code == 404
    assert theirs.json()["issue"][0]["details"] == nowhere.json()["issue"][0]["details"]
    # A client that sees a Consent it did not post (the platform, a routed referral's permit): 403.
    routed = fresh("referral-gp.json", commune="75056")
    stored, _ = await _refer(secure, routed, a)
    consent_id = next(i["reference"] for i in stored["supportingInfo"] if i["reference"].startswith("Consent/"))
    seen = (await secure.get(f"/fhir/{consent_id}", headers=platform)).json()
    assert seen["resourceType"] == "Consent", seen
    refused = await _put(secure, _ended(seen), platform, version=seen["meta"]["versionId"])
    assert refused.status_code == 403 and "consent-update-not-allowed" in refused.text
    # Its poster ends it; the operator corrects it back.
    assert (await _put(secure, _ended(opposition), a, version="1")).status_code == 200
    assert (await _refer(secure, renamed(bundle, "-a"), a))[0]["status"] == "active"
    again = {k: v for k, v in opposition.items() if k != "meta"}
    assert (await _put(secure, again, operator, version="2")).status_code == 200
    assert (await _refer(secure, renamed(bundle, "-b"), b))[0]["status"] == "revoked"
    # A deny inside a referral is its sender's to end too.
    inside = fresh("referral-opposition.json", commune="75056")
    revoked, _ = await _refer(secure, inside, a)
    deny_id = next(i["reference"] for i in revoked["supportingInfo"] if i["reference"].startswith("Consent/"))
    deny = (await secure.get(f"/fhir/{deny_id}", headers=a)).json()
    assert (await _put(secure, _ended(deny), b, version="1")).status_code == 404
    assert (await _put(secure, _ended(deny), a, version="1")).status_code == 200
    after = renamed(inside, "-after")
    resource(after, "Consent")["provision"]["type"] = "permit"  # the patient informed again, and not objecting
    assert (await _refer(secure, after, a))[0]["status"] != "revoked"
    # The poster reads the Provenances of its Consent's changes; the other sender does not.
    for version in ("2", "3"):
        target = f"Consent/{opposition['id']}/_history/{version}"
        assert len(await _provenances(secure, target, a)) == 1
        assert await _provenances(secure, target, b) == []


async def test_with_authentication_another_partys_permit_lifts_an_opposition_without_seeing_it(
    secure: httpx.AsyncClient,
) -> None:
    a, b = await _token(secure, SENDER_A), await _token(secure, SENDER_B)
    bundle = fresh(commune="75056")
    opposition, _ = await _record(secure, _consent(bundle, "deny", NOW - timedelta(hours=2)), a)
    # By INS alone, B names the patient too weakly to lift anything, and is told so.
    weak = _consent(bundle, "permit", NOW - timedelta(hours=1))
    weak.pop("contained")
    weak["patient"] = {"identifier": {"system": INS_NIR, "value": _ins(bundle)}}
    _, notes = await _record(secure, weak, b)
    assert UNIDENTIFIED_NOTE in notes
    assert (await secure.get(f"/fhir/Consent/{opposition['id']}", headers=a)).json()["status"] == "active"
    # With the five traits it lifts A's opposition, and its answer is the one it would get with none on record.
    permit, notes = await _record(secure, _consent(bundle, "permit", NOW - timedelta(hours=1)), b)
    assert notes[1:] == [LIFT_NOTE]
    assert opposition["id"] not in str(permit)
    assert (await secure.get(f"/fhir/Consent/{opposition['id']}", headers=b)).status_code == 404
    assert (await secure.get(f"/fhir/Consent/{opposition['id']}", headers=a)).json()["status"] == "inactive"
    target = f"Consent/{opposition['id']}/_history/2"
    (lifted,) = await _provenances(secure, target, a)
    assert "entity" not in lifted and "life-b" not in str(lifted)  # B's permit and B are not A's to know
    assert await _provenances(secure, target, b) == []
    # The operator finds who lifted it in the permit's AuditEvent, which lists the opposition's new version.
    operator = await _token(secure, OPERATOR)
    creates = (await secure.get("/fhir/AuditEvent", params={"subtype": "create"}, headers=operator)).json()
    (event,) = [
        e["resource"]
        for e in creates["entry"]
        if target in [entity["what"]["reference"] for entity in e["resource"].get("entity", [])]
    ]
    assert "life-b" in str(event["agent"])
    assert (await _refer(secure, bundle, b))[0]["status"] == "active"


# --- a lift racing a new referral -------------------------------------------------------------------------------


@pytest.mark.parametrize("lift", ["put", "permit"])
async def test_a_lift_racing_a_new_referral_leaves_a_consistent_outcome(client: httpx.AsyncClient, lift: str) -> None:
    """Either the referral saw the opposition (revoked, nothing routed) or it saw the lift (routed): never routed
    while the opposition stands, never revoked without its reason, whatever the interleaving."""
    outcomes = set()
    for round_ in range(6):
        bundle = fresh(commune="75056")
        opposition, _ = await _record(client, _consent(bundle, "deny", NOW - timedelta(hours=1)))
        lifting = (
            _put(client, _ended(opposition), version="1")
            if lift == "put"
            else client.post("/fhir/Consent", json=_consent(bundle, "permit", NOW), headers=FHIR_JSON)
        )
        referring = client.post("/fhir", json=renamed(bundle, "-race"), headers=FHIR_JSON)
        if round_ % 2:  # either starts first: on SQLite (one writer) each order is one of the two outcomes
            referred, lifted = await asyncio.gather(referring, lifting)
        else:
            lifted, referred = await asyncio.gather(lifting, referring)
        assert lifted.status_code in (200, 201) and referred.status_code == 200, (lifted.text, referred.text)
        location = next(
            e["response"]["location"] for e in referred.json()["entry"] if "/ServiceRequest/" in e["fullUrl"]
        )
        service_request = (await client.get(f"/fhir/{location.split('/_history')[0]}")).json()
        tasks = (await client.get("/fhir/Task", params={"focus": f"ServiceRequest/{service_request['id']}"})).json()
        codes = {e["resource"]["code"]["coding"][0]["code"] for e in tasks.get("entry", [])}
        assert (await client.get(f"/fhir/Consent/{opposition['id']}")).json()["status"] == "inactive"
        if service_request["status"] == "revoked":
            assert "patient-opposition" in str(service_request["extension"])
            assert "platform-intake" not in codes and "performer" not in service_request
        else:
            assert service_request["status"] == "active" and "platform-intake" in codes
        outcomes.add(service_request["status"])
        # Whatever the race decided, the next referral proceeds.
        assert (await _refer(client, renamed(bundle, "-next")))[0]["status"] == "active"
    assert outcomes <= {"revoked", "active"}
    if not USES_POSTGRESQL:  # one writer: the order each round starts them in decides, both are seen
        assert outcomes == {"revoked", "active"}


async def test_with_authentication_a_permit_lifts_only_its_own_patients_oppositions(
    secure: httpx.AsyncClient,
) -> None:
    """A permit naming a patient the caller may see, whose Patient also carries another patient's INS (an INS-NIA
    beside its INS-NIR), lifts no opposition of that other patient: a lift goes by the patient on record, not by
    every identifier posted."""
    a, b = await _token(secure, SENDER_A), await _token(secure, SENDER_B)
    theirs, mine = fresh(commune="75056"), fresh(commune="75056")
    nia = {"system": INS_NIA, "value": _ins(theirs)}
    resource(theirs, "Patient")["identifier"] = [
        nia if i["system"] == INS_NIR else i for i in resource(theirs, "Patient")["identifier"]
    ]
    opposition, _ = await _record(secure, _consent(theirs, "deny", NOW - timedelta(hours=2)), a)
    await _refer(secure, mine, b)  # B sees its own referral's patient
    permit = _consent(mine, "permit", NOW - timedelta(hours=1))
    permit["contained"][0]["identifier"].append(nia)
    answer = await secure.post("/fhir/Consent", json=permit, headers=FHIR_JSON | OUTCOME | b)
    assert answer.status_code in (201, 422), answer.text
    assert (await secure.get(f"/fhir/Consent/{opposition['id']}", headers=a)).json()["status"] == "active"
    assert (await _refer(secure, renamed(theirs, "-later"), a))[0]["status"] == "revoked"


async def test_with_authentication_an_update_never_makes_an_opposition_of_a_patient_named_by_ins_alone(
    secure: httpx.AsyncClient,
) -> None:
    """An opposition names its patient as strongly as a referral does (a Patient one sees, or INS and traits): a
    permit — or an ended deny — posted by INS alone, then updated into an opposition in force, would revoke every
    party's referrals for a patient its poster only knows the number of."""
    a, b = await _token(secure, SENDER_A), await _token(secure, SENDER_B)
    bundle = fresh(commune="75056")
    referral, _ = await _refer(secure, bundle, a)
    by_number = {"identifier": {"system": INS_NIR, "value": _ins(bundle)}}
    for kind, status in (("permit", "active"), ("deny", "inactive")):
        weak = _consent(bundle, kind, NOW - timedelta(hours=1))
        weak.pop("contained")
        weak |= {"patient": by_number, "status": status}
        answer = await secure.post("/fhir/Consent", json=weak, headers=FHIR_JSON | OUTCOME | b)
        if answer.status_code == 201:
            stored = (await secure.get(answer.headers["location"].split("/_history")[0], headers=b)).json()
            opposed = {k: v for k, v in stored.items() if k != "meta"} | {"status": "active"}
            opposed["provision"] = opposed["provision"] | {"type": "deny"}
            changed = await _put(secure, opposed, b, version=stored["meta"]["versionId"])
            assert changed.status_code == 422 and "patient-identity-required" in changed.text, changed.text
        else:
            assert answer.status_code == 422 and "patient-identity-required" in answer.text, answer.text
    again = (await secure.get(f"/fhir/ServiceRequest/{referral['id']}", headers=a)).json()
    assert again["status"] == "active"
