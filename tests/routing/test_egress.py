"""What leaves the gateway (DESIGN §11, issue 14 item 6, issue 23 item 1), with authentication on and off:
after an opposition nothing personal about the patient reaches a platform, a peer or a callback; a message
carries only resources of this gateway that the referral's parties may see — an absolute URL elsewhere is
external, never loaded by its id — and a URL on our own base is its relative form (the same 422)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import respx

from gateway.routing.config import RoutingTable
from gateway.routing.delivery import DeliverySettings, Dispatcher
from gateway.routing.messages import minimal_service_request, minimal_task
from gateway.store import Database
from tests.auth.conftest import OTHER_SENDER, SENDER, token_of
from tests.support.fhir_validators import RECEIVED, Emitted, FhirValidators
from tests.support.referrals import INS_NIR, as_message, fresh, resource

BASE = "http://gateway.test/fhir"
FHIR_JSON = {"content-type": "application/fhir+json"}
PLATFORM = "https://dac75.example.org/fhir/$process-message"  # commune 75056: Paris
CALLBACK = "https://logiciel-medecin.example.org/fhir"  # registered for SENDER (tests/auth/conftest.py)


@dataclass
class Gateway:
    """The application with authentication on or off, and how each sender calls it."""

    http: httpx.AsyncClient
    headers: Callable[[Any], Awaitable[dict[str, str]]]
    auth: bool


@pytest.fixture(params=["auth-on", "auth-off"])
async def gateway(
    request: pytest.FixtureRequest, client: httpx.AsyncClient, secure: httpx.AsyncClient
) -> AsyncIterator[Gateway]:
    if request.param == "auth-on":

        async def signed(who: Any) -> dict[str, str]:
            return await token_of(secure, who) | FHIR_JSON

        yield Gateway(secure, signed, True)
    else:

        async def anyone(who: Any) -> dict[str, str]:
            return FHIR_JSON

        yield Gateway(client, anyone, False)


@dataclass
class Sent:
    """What the platform and the sender's callback received."""

    platform: respx.Route
    callback: respx.Route

    def bodies(self, since: tuple[int, int] = (0, 0)) -> list[bytes]:
        return [c.request.content for c in self.platform.calls[since[0] :]] + [
            c.request.content for c in self.callback.calls[since[1] :]
        ]

    @property
    def counts(self) -> tuple[int, int]:
        return len(self.platform.calls), len(self.callback.calls)


@pytest.fixture
def sent(respx_mock: respx.MockRouter) -> Sent:
    return Sent(
        respx_mock.post(PLATFORM).mock(return_value=httpx.Response(200)),
        respx_mock.post(f"{CALLBACK}/$process-message").mock(return_value=httpx.Response(200)),
    )


async def deliver(database: Database, routing: RoutingTable) -> None:
    async with httpx.AsyncClient() as http:
        dispatcher = Dispatcher(database, routing, http, DeliverySettings(base_url=BASE, backoff_base=0.01))
        await dispatcher.deliver_due()
        await dispatcher.drain()


def personal_data(bundle: dict[str, Any]) -> list[str]:
    """The patient's INS, names, birth date, address lines and postal code, as posted."""
    patient = resource(bundle, "Patient")
    values = [i["value"] for i in patient["identifier"] if i["system"] == INS_NIR]
    for name in patient.get("name", []):
        values += [name["family"], *name.get("given", [])]
    values.append(patient["birthDate"])
    for address in patient.get("address", []):
        values += [*address.get("line", []), address["postalCode"]]
    assert len(values) >= 5, values
    return values


def opposition(bundle: dict[str, Any]) -> dict[str, Any]:
    ins = next(i["value"] for i in resource(bundle, "Patient")["identifier"] if i["system"] == INS_NIR)
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"identifier": {"system": INS_NIR, "value": ins}},
        "policyRule": {"text": "CSP art. L1110-12"},
        "provision": {"type": "deny"},
    }


async def post_referral(gateway: Gateway, bundle: dict[str, Any]) -> dict[str, Any]:
    answer = await gateway.http.post(
        "/fhir/$process-message",
        json=as_message(bundle, CALLBACK, str(uuid.uuid4())),
        headers=await gateway.headers(SENDER),
    )
    assert answer.status_code == 200, answer.text
    service_request: dict[str, Any] = answer.json()["entry"][1]["resource"]
    assert service_request["status"] == "active", service_request
    return service_request


def check_r4(validators: FhirValidators | None, bodies: list[bytes]) -> None:
    """Each message checked by the independent validators (R4; our profiles where the message claims them)."""
    if validators is None:
        return
    with validators.apart():
        found = validators.check(
            [Emitted(f"{RECEIVED}{PLATFORM}", body, "application/fhir+json") for body in bodies]
        ).failures
    assert not found, "\n".join(found)


@pytest.mark.parametrize("delivered_first", [True, False], ids=["already-delivered", "not-yet-delivered"])
async def test_after_an_opposition_no_personal_data_leaves(
    gateway: Gateway,
    database: Database,
    routing: RoutingTable,
    sent: Sent,
    fhir_validators: FhirValidators | None,
    delivered_first: bool,
) -> None:
    bundle = fresh(commune="75056", tag="egress")
    secrets = personal_data(bundle)
    service_request = await post_referral(gateway, bundle)
    if delivered_first:
        await deliver(database, routing)
        assert sent.counts[0] == 1  # (the callback hears it was delivered)
        assert all(value.encode() in sent.platform.calls[0].request.content for value in secrets)  # it had them
    before = sent.counts
    answer = await gateway.http.post("/fhir/Consent", json=opposition(bundle), headers=await gateway.headers(SENDER))
    assert answer.status_code == 201, answer.text
    await deliver(database, routing)
    after = sent.bodies(before)
    leaked = [(value, body[:200]) for body in after for value in secrets if value.encode() in body]
    assert not leaked
    events = [json.loads(body)["entry"][0]["resource"]["eventCoding"]["code"] for body in after]
    # The platform hears of the revocation only if it had the referral; the sender's callback always.
    assert sent.counts[0] == before[0] + (1 if delivered_first else 0)
    assert sent.counts[1] > before[1]
    assert events == ["referral-update"] * len(after)
    for body in after:
        message = json.loads(body)
        types = sorted(e["resource"]["resourceType"] for e in message["entry"])
        assert types.count("ServiceRequest") == 1 and set(types) <= {"MessageHeader", "ServiceRequest", "Task"}
        cut = next(e["resource"] for e in message["entry"] if e["resource"]["resourceType"] == "ServiceRequest")
        assert cut["id"] == service_request["id"] and cut["status"] == "revoked"
        assert set(cut) <= {"resourceType", "id", "meta", "extension", "identifier", "status", "intent", "code",
                            "authoredOn", "requester", "subject"}  # fmt: skip
        assert set(cut["subject"]) == {"reference"}
    check_r4(fhir_validators, after)


async def _other_senders_referral(gateway: Gateway) -> tuple[dict[str, Any], dict[str, str]]:
    """Another sender's referral: its bundle, and its stored Consent, Patient and a Task (type → id)."""
    bundle = fresh(commune="75056", tag="other")
    answer = await gateway.http.post("/fhir", json=bundle, headers=await gateway.headers(OTHER_SENDER))
    assert answer.status_code == 200, answer.text
    stored: dict[str, str] = {}
    for entry in answer.json()["entry"]:
        reference = entry["response"]["location"].split("/_history")[0]
        kind, _, identifier = reference.partition("/")
        stored.setdefault(kind, identifier)
    tasks = await gateway.http.get(
        "/fhir/Task",
        params={"focus": f"ServiceRequest/{stored['ServiceRequest']}"},
        headers=await gateway.headers(OTHER_SENDER),
    )
    stored["Task"] = tasks.json()["entry"][0]["resource"]["id"]
    assert {"Consent", "Patient", "Task"} <= set(stored), stored
    return bundle, stored


def _supporting(bundle: dict[str, Any], references: list[str]) -> dict[str, Any]:
    service_request = resource(bundle, "ServiceRequest")
    service_request["supportingInfo"] = [
        *service_request.get("supportingInfo", []),
        *({"reference": r} for r in references),
    ]
    return bundle


async def test_an_absolute_reference_elsewhere_is_never_loaded(
    gateway: Gateway, database: Database, routing: RoutingTable, sent: Sent
) -> None:
    others, stored = await _other_senders_referral(gateway)
    elsewhere = [f"https://any.host/fhir/{kind}/{stored[kind]}" for kind in ("Consent", "Patient", "Task")]
    mine = _supporting(fresh(commune="75056", tag="absolute"), elsewhere)
    service_request = await post_referral(gateway, mine)
    # Kept as written: external, not resolved here.
    assert [r for r in elsewhere if r in json.dumps(service_request)] == elsewhere
    await deliver(database, routing)
    # The other sender's referral went to Paris too, in messages of its own: those about ours are looked at.
    bodies = [
        body
        for body in sent.bodies()
        if json.loads(body)["entry"][0]["resource"]["focus"][0]["reference"].endswith(service_request["id"])
    ]
    assert bodies
    shipped = [
        (entry["resource"]["resourceType"], entry["resource"].get("id"))
        for body in bodies
        for entry in json.loads(body)["entry"]
    ]
    theirs = {(kind, stored[kind]) for kind in ("Consent", "Patient", "Task")}
    assert not theirs & set(shipped), shipped
    # (fresh() changes the INS alone: the names and birth date are the same in both referrals.)
    ins = personal_data(others)[0]
    assert not [body for body in bodies if ins.encode() in body]


async def test_a_reference_on_our_own_base_is_its_relative_form(gateway: Gateway) -> None:
    _, stored = await _other_senders_referral(gateway)
    for kind in ("Consent", "Patient", "Task"):
        answers = []
        for reference in (f"{kind}/{stored[kind]}", f"{BASE}/{kind}/{stored[kind]}"):
            bundle = _supporting(fresh(commune="75056", tag="own-base"), [reference])
            answers.append(await gateway.http.post("/fhir", json=bundle, headers=await gateway.headers(SENDER)))
        relative, absolute = answers
        assert relative.status_code == absolute.status_code == (422 if gateway.auth else 200), absolute.text
        if gateway.auth:  # another sender's resource: the same 422, same words, same element
            assert absolute.json()["issue"] == relative.json()["issue"]
        else:  # stored in its relative form
            sr = next(e for e in absolute.json()["entry"] if e["response"]["location"].startswith("ServiceRequest/"))
            read = await gateway.http.get(f"/fhir/{sr['response']['location'].split('/_history')[0]}")
            assert {"reference": f"{kind}/{stored[kind]}"} in read.json()["supportingInfo"]


def test_the_minimal_update_cuts_to_what_design_lists() -> None:
    service_request = resource(fresh(), "ServiceRequest") | {
        "status": "revoked",
        "extension": [
            {"url": "http://example.org/other", "valueString": "Mme DUBOIS"},
            {"url": "http://hl7.org/fhir/StructureDefinition/request-statusReason", "valueCodeableConcept": {}},
        ],
        "subject": {"reference": "Patient/p", "display": "Mme DUBOIS"},
        "requester": {"reference": "PractitionerRole/r", "display": "Dr X"},
        "note": [{"text": "Mme DUBOIS vit seule"}],
        "reasonCode": [{"text": "chutes"}],
        "performer": [{"reference": "Organization/o"}],
        "supportingInfo": [{"reference": "Consent/c"}],
        "meta": {"profile": ["https://fhir.dac-gateway.org/StructureDefinition/dac-servicerequest", "http://x/p"]},
    }
    cut = minimal_service_request(service_request | {"id": "s"})
    assert set(cut) == {"resourceType", "id", "meta", "extension", "identifier", "status", "intent", "code",
                        "authoredOn", "requester", "subject"} - ({"authoredOn"} - set(service_request))  # fmt: skip
    assert cut["subject"] == {"reference": "Patient/p"} and cut["requester"] == {"reference": "PractitionerRole/r"}
    assert [e["url"] for e in cut["extension"]] == ["http://hl7.org/fhir/StructureDefinition/request-statusReason"]
    assert cut["meta"] == {"profile": ["https://fhir.dac-gateway.org/StructureDefinition/dac-servicerequest"]}
    task = {
        "resourceType": "Task", "id": "t", "meta": {"profile": ["x"]}, "identifier": [{"value": "1"}],
        "status": "cancelled", "statusReason": {"text": "opposition"}, "businessStatus": {"text": "cancelled"},
        "intent": "order", "code": {"text": "platform-intake"},
        "focus": {"reference": "ServiceRequest/s", "display": "d"},
        "for": {"reference": "Patient/p"}, "owner": {"reference": "Organization/o"}, "note": [{"text": "n"}],
        "restriction": {"period": {"end": "2026-12-01"}}, "input": [{"type": {"text": "x"}, "valueString": "y"}],
    }  # fmt: skip
    assert minimal_task(task) == {
        "resourceType": "Task", "id": "t", "identifier": [{"value": "1"}], "status": "cancelled",
        "statusReason": {"text": "opposition"}, "businessStatus": {"text": "cancelled"}, "intent": "order",
        "code": {"text": "platform-intake"}, "focus": {"reference": "ServiceRequest/s"},
    }  # fmt: skip
