"""An opposition's life on a real ``gateway serve`` with authentication on (DESIGN §11, issue 17): the sender records
it and its referrals are revoked; another sender cannot touch it; its poster ends it (PUT, If-Match) and the next
referral is delivered to the platform, the revoked one staying revoked; a later permit of another sender lifts a
second opposition; a known INS with other identity traits is refused."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from gateway.fhir.primitives import fhir_instant
from gateway.workflow.opposition import ENDED_NOTE, LIFT_NOTE
from tests.support.auth import TEST_SECRET, SmartClient, write_clients
from tests.support.processes import GatewayProcess, Platform, running, wait_until, write_routing
from tests.support.referrals import fresh, renamed, resource

pytestmark = pytest.mark.e2e
FHIR_JSON = {"content-type": "application/fhir+json"}
SCOPES = ["system/ServiceRequest.c", "system/*.rs", "system/Consent.cu"]
SENDER = SmartClient("hospital-e2e", "sender", SCOPES)
OTHER = SmartClient("cabinet-e2e", "sender", SCOPES)


@dataclass
class Secure:
    process: GatewayProcess
    platform: Platform

    def headers(self, client: SmartClient) -> dict[str, str]:
        token_url = f"http://127.0.0.1:{self.process.port}/auth/token"
        answer = httpx.post(token_url, data=client.token_form(token_url), timeout=30)
        assert answer.status_code == 200, answer.text
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}

    def refer(self, client: SmartClient, bundle: dict[str, Any]) -> dict[str, Any]:
        headers = self.headers(client)
        answer = httpx.post(self.process.base, json=bundle, headers=FHIR_JSON | headers, timeout=30)
        assert answer.status_code == 200, answer.text
        location = next(e["response"]["location"] for e in answer.json()["entry"] if "/ServiceRequest/" in e["fullUrl"])
        read = httpx.get(f"{self.process.base}/{location.split('/_history')[0]}", headers=headers, timeout=30)
        return dict(read.json())

    def delivered(self, service_request_id: str) -> bool:
        return any(
            e["resource"]["resourceType"] == "ServiceRequest" and e["resource"]["id"] == service_request_id
            for message in list(self.platform.received)
            for e in message["entry"]
        )


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    directory = tmp_path_factory.mktemp("opposition-e2e")
    platform = Platform()
    routing = write_routing(
        directory, {"dac-75": {"endpoint": platform.endpoint, "finess": "750000010"}}, {"75": "dac-75"}
    )
    clients = write_clients(directory / "clients", [SENDER, OTHER])
    env = {"GATEWAY_AUTH": "on", "GATEWAY_CLIENTS": str(clients), "GATEWAY_AUTH_SECRET": TEST_SECRET}
    process = GatewayProcess(directory, routing, env=env)
    with running(platform, process):
        yield Secure(process, platform)


def _consent(bundle: dict[str, Any], kind: str, when: datetime) -> dict[str, Any]:
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
        "provision": {"type": kind},
    }


def test_an_opposition_recorded_ended_by_its_poster_and_lifted_by_a_later_permit(secure: Secure) -> None:
    base, now = secure.process.base, datetime.now(UTC)
    sender, other = secure.headers(SENDER), secure.headers(OTHER)
    bundle = fresh(commune="75056")
    before = secure.refer(SENDER, bundle)
    wait_until(lambda: secure.delivered(before["id"]), what="the first referral delivered")

    posted = httpx.post(
        f"{base}/Consent", json=_consent(bundle, "deny", now - timedelta(hours=1)), headers=FHIR_JSON | sender
    )
    assert posted.status_code == 201, posted.text
    opposition = posted.json()
    assert httpx.get(f"{base}/ServiceRequest/{before['id']}", headers=sender).json()["status"] == "revoked"
    assert secure.refer(SENDER, renamed(bundle, "-held"))["status"] == "revoked"

    ended = {k: v for k, v in opposition.items() if k != "meta"} | {"status": "inactive"}
    url = f"{base}/Consent/{opposition['id']}"
    match = {"if-match": 'W/"1"', "prefer": "return=OperationOutcome"}
    assert httpx.put(url, json=ended, headers=FHIR_JSON | match | other).status_code == 404
    answer = httpx.put(url, json=ended, headers=FHIR_JSON | match | sender)
    assert answer.status_code == 200, answer.text
    assert ENDED_NOTE in [issue["diagnostics"] for issue in answer.json()["issue"]]
    after = secure.refer(SENDER, renamed(bundle, "-after"))
    assert after["status"] == "active"
    wait_until(lambda: secure.delivered(after["id"]), what="the referral after the lift delivered")
    assert httpx.get(f"{base}/ServiceRequest/{before['id']}", headers=sender).json()["status"] == "revoked"

    # A second opposition, then the other sender's later permit (with the five traits) lifts it.
    again = httpx.post(f"{base}/Consent", json=_consent(bundle, "deny", now), headers=FHIR_JSON | sender).json()
    permit = httpx.post(
        f"{base}/Consent",
        json=_consent(bundle, "permit", now + timedelta(minutes=1)),
        headers=FHIR_JSON | other | {"prefer": "return=OperationOutcome"},
    )
    assert permit.status_code == 201, permit.text
    assert LIFT_NOTE in [issue["diagnostics"] for issue in permit.json()["issue"]]
    assert httpx.get(f"{base}/Consent/{again['id']}", headers=sender).json()["status"] == "inactive"
    assert secure.refer(OTHER, renamed(bundle, "-other"))["status"] == "active"

    # Identity vigilance: the same INS with another birth date is refused, naming the trait only.
    mismatch = renamed(bundle, "-mismatch")
    resource(mismatch, "Patient")["birthDate"] = "1901-01-01"
    refused = httpx.post(base, json=mismatch, headers=FHIR_JSON | other)
    assert refused.status_code == 422
    assert [i["details"]["coding"][0]["code"] for i in refused.json()["issue"]] == ["ins-traits-mismatch"]
    assert "1901-01-01" not in refused.text and resource(bundle, "Patient")["birthDate"] not in refused.text
