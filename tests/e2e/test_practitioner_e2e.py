"""The GP validation workflow under pta-2016 on a real ``gateway serve`` with authentication on (DESIGN §11): the
GP's own software (a ``practitioner`` client) finds the referrals held for its GP, accepts one — routed and
delivered —, rejects another — revoked —; the requester relays the GP's acceptance of a third on the GP's behalf;
the platform sees a referral only once it is routed; another physician's software sees none of it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.support.auth import TEST_SECRET, SmartClient, write_clients
from tests.support.processes import GatewayProcess, Platform, running, wait_until, write_routing
from tests.support.referrals import fresh

pytestmark = pytest.mark.e2e
FHIR_JSON = {"content-type": "application/fhir+json"}
CLIENT_ID = "https://fhir.dac-gateway.org/client-id"
NURSE = SmartClient("hopital-valenciennes", "sender", ["system/ServiceRequest.cr", "system/*.rs", "system/Task.u"])
HAINAUT_APP = SmartClient("dac59-app", "platform", ["system/*.rs", "system/Task.u"], "dac-59")
# The GP of the examples' patients (RPPS 10100345676), and another physician.
GP = SmartClient("cabinet-lilas", "practitioner", ["system/*.rs", "system/Task.u"], rpps=["10100345676"])
OTHER_GP = SmartClient("cabinet-tilleuls", "practitioner", ["system/*.rs", "system/Task.u"], rpps=["10100246809"])
OPERATOR = SmartClient("ops", "operator", ["system/*.rs"])


@dataclass
class SecureGateway:
    process: GatewayProcess
    platform: Platform
    tokens: dict[str, str] = field(default_factory=dict)  # client id → access token (they last 5 minutes)

    def headers(self, client: SmartClient) -> dict[str, str]:
        """The client-credentials dance, once per client: an assertion signed with its key, for an access token."""
        if client.client_id not in self.tokens:
            token_url = f"http://127.0.0.1:{self.process.port}/auth/token"
            answer = httpx.post(token_url, data=client.token_form(token_url), timeout=30)
            assert answer.status_code == 200, answer.text
            self.tokens[client.client_id] = answer.json()["access_token"]
        return {"Authorization": f"Bearer {self.tokens[client.client_id]}"}

    def get(self, client: SmartClient, path: str, **params: str) -> httpx.Response:
        return httpx.get(f"{self.process.base}/{path}", params=params, headers=self.headers(client), timeout=30)

    def post(self, bundle: dict[str, Any]) -> str:
        """A nurse's referral: its ServiceRequest's reference."""
        answer = httpx.post(self.process.base, json=bundle, headers=self.headers(NURSE) | FHIR_JSON, timeout=30)
        assert answer.status_code == 200, answer.text
        location = next(e["response"]["location"] for e in answer.json()["entry"] if "/ServiceRequest/" in e["fullUrl"])
        return str(location.split("/_history")[0])

    def decide(
        self, client: SmartClient, task: dict[str, Any], changes: dict[str, Any], x_provenance: Any = None
    ) -> httpx.Response:
        headers = self.headers(client) | FHIR_JSON | {"If-Match": f'W/"{task["meta"]["versionId"]}"'}
        if x_provenance is not None:
            headers["X-Provenance"] = json.dumps(x_provenance)
        return httpx.put(f"{self.process.base}/Task/{task['id']}", json=task | changes, headers=headers, timeout=30)

    def task(self, service_request: str, code: str) -> dict[str, Any]:
        (task,) = [e["resource"] for e in self.get(OPERATOR, "Task", focus=service_request, code=code).json()["entry"]]
        return task

    def delivered(self, service_request: str) -> bool:
        """The platform received the referral, and its platform-intake Task says so."""
        received = any(
            e["resource"]["resourceType"] == "ServiceRequest"
            and f"ServiceRequest/{e['resource']['id']}" == service_request
            for message in list(self.platform.received)
            for e in message["entry"]
        )
        status = self.task(service_request, "platform-intake")["businessStatus"]["coding"][0]["code"]
        return received and status == "delivered"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureGateway]:
    directory = tmp_path_factory.mktemp("gp-workflow")
    platform = Platform()
    hainaut = {"endpoint": platform.endpoint, "finess": "590000030", "policy": "pta-2016", "name": "DAC Hainaut"}
    routing = write_routing(directory, {"dac-59": hainaut}, {"59": "dac-59"})
    clients = write_clients(directory / "clients", [NURSE, HAINAUT_APP, GP, OTHER_GP, OPERATOR])
    env = {"GATEWAY_AUTH": "on", "GATEWAY_CLIENTS": str(clients), "GATEWAY_AUTH_SECRET": TEST_SECRET}
    process = GatewayProcess(directory, routing, env=env)
    with running(platform, process):
        yield SecureGateway(process, platform)


def _held_for_the_gp(gateway: SecureGateway) -> tuple[str, dict[str, Any]]:
    """A nurse's referral for a patient of Valenciennes (pta-2016): held, not the platform's, listed by the GP's
    software among the Tasks waiting for its GP."""
    service_request = gateway.post(fresh(commune="59606"))
    assert gateway.get(NURSE, service_request).json()["status"] == "draft"
    assert gateway.get(HAINAUT_APP, service_request).status_code == 404
    assert gateway.get(HAINAUT_APP, "Task", focus=service_request).json()["total"] == 0
    waiting = gateway.get(GP, "Task", code="gp-validation", status="requested").json()
    (task,) = [e["resource"] for e in waiting["entry"] if e["resource"]["focus"]["reference"] == service_request]
    mine = gateway.get(GP, "Task", owner=task["owner"]["reference"], code="gp-validation", status="requested").json()
    assert task["id"] in [e["resource"]["id"] for e in mine["entry"]]
    assert gateway.get(GP, service_request).json()["status"] == "draft"  # what the GP is asked to validate
    return service_request, task


def test_the_gps_software_accepts_and_the_referral_is_delivered(gateway: SecureGateway) -> None:
    service_request, task = _held_for_the_gp(gateway)
    accepted = gateway.decide(GP, task, {"status": "accepted"})
    assert accepted.status_code == 200, accepted.text
    assert gateway.get(GP, service_request).json()["status"] == "active"
    wait_until(lambda: gateway.delivered(service_request), 20, 0.2, "the validated referral delivered")
    assert gateway.get(HAINAUT_APP, service_request).status_code == 200  # routed: the platform's now
    provenance = gateway.get(OPERATOR, "Provenance", target=f"Task/{task['id']}").json()["entry"][-1]["resource"]
    assert provenance["agent"][0]["who"]["reference"].startswith("Practitioner/")
    assert provenance["agent"][1]["who"] == {"identifier": {"system": CLIENT_ID, "value": GP.client_id}}
    # Another physician's software: the Task does not exist for it.
    assert gateway.get(OTHER_GP, f"Task/{task['id']}").status_code == 404
    assert gateway.get(OTHER_GP, "Task").json()["total"] == 0


def test_the_gps_software_rejects_and_the_referral_is_revoked(gateway: SecureGateway) -> None:
    service_request, task = _held_for_the_gp(gateway)
    assert gateway.decide(GP, task, {"status": "rejected"}).status_code == 422  # a rejection says why
    rejected = gateway.decide(GP, task, {"status": "rejected", "statusReason": {"text": "patient suivi au cabinet"}})
    assert rejected.status_code == 200, rejected.text
    revoked = gateway.get(NURSE, service_request).json()
    assert revoked["status"] == "revoked"
    assert "gp-rejected" in json.dumps(revoked["extension"])
    assert gateway.get(HAINAUT_APP, service_request).status_code == 404  # never routed, never the platform's
    assert gateway.get(OPERATOR, "Task", focus=service_request, code="platform-intake").json()["total"] == 0


def test_the_requester_relays_the_gps_acceptance(gateway: SecureGateway) -> None:
    service_request, task = _held_for_the_gp(gateway)
    refused = gateway.decide(NURSE, task, {"status": "accepted"})  # not on the GP's behalf: not its answer
    assert refused.status_code == 403
    assert refused.json()["issue"][0]["details"]["coding"][0]["code"] == "decision-not-allowed"
    itself = {"identifier": {"system": CLIENT_ID, "value": NURSE.client_id}}
    forged = {"resourceType": "Provenance", "agent": [{"who": itself, "onBehalfOf": task["requester"]}]}
    mismatch = gateway.decide(NURSE, task, {"status": "accepted"}, forged)
    assert mismatch.status_code == 403
    assert mismatch.json()["issue"][0]["details"]["coding"][0]["code"] == "provenance-agent-mismatch"
    relay = {"resourceType": "Provenance", "agent": [{"who": itself, "onBehalfOf": task["owner"]}]}
    accepted = gateway.decide(NURSE, task, {"status": "accepted"}, relay)
    assert accepted.status_code == 200, accepted.text
    wait_until(lambda: gateway.delivered(service_request), 20, 0.2, "the relayed acceptance delivered")
    assert gateway.decide(OTHER_GP, accepted.json(), {"status": "completed"}).status_code == 404
