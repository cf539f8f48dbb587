"""A GP validation past its deadline on a real ``gateway serve`` with authentication on (DESIGN §3 step 3, §11
"Escalation is told"): a referral held for the GP (pta-2016, a one-second delay in the routing file) is escalated
by the worker, the platform is sent a ``contact-gp`` message carrying the referral (its bearer token, the patient's
INS), can read the referral from then on, and records the GP's answer on the GP's behalf — the referral is then
routed to it as usual."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.auth import TEST_SECRET, SmartClient, write_clients
from tests.support.processes import GatewayProcess, Platform, running, wait_until, write_routing
from tests.support.referrals import INS_NIR, fresh, resource

pytestmark = pytest.mark.e2e
FHIR_JSON = {"content-type": "application/fhir+json"}
EVENT_SYSTEM = "https://fhir.dac-gateway.org/CodeSystem/dac-message-event"
NURSE = SmartClient("hopital-valenciennes", "sender", ["system/ServiceRequest.cr", "system/*.rs", "system/Task.u"])
HAINAUT_APP = SmartClient("dac59-app", "platform", ["system/*.rs", "system/Task.u"], "dac-59")
OPERATOR = SmartClient("ops", "operator", ["system/*.rs"])
PLATFORM_TOKEN = "hainaut-e2e-token"


class Escalating:
    def __init__(self, process: GatewayProcess, platform: Platform) -> None:
        self.process, self.platform = process, platform
        self.tokens: dict[str, str] = {}

    def headers(self, client: SmartClient) -> dict[str, str]:
        if client.client_id not in self.tokens:
            token_url = f"http://127.0.0.1:{self.process.port}/auth/token"
            answer = httpx.post(token_url, data=client.token_form(token_url), timeout=30)
            assert answer.status_code == 200, answer.text
            self.tokens[client.client_id] = answer.json()["access_token"]
        return {"Authorization": f"Bearer {self.tokens[client.client_id]}"}

    def get(self, client: SmartClient, path: str, **params: str) -> httpx.Response:
        return httpx.get(f"{self.process.base}/{path}", params=params, headers=self.headers(client), timeout=30)

    def messages(self, event: str, service_request: str) -> list[tuple[dict[str, Any], dict[str, str]]]:
        """The messages of ``event`` about this referral the platform received, with their HTTP headers."""
        found = []
        for message, headers in zip(list(self.platform.received), list(self.platform.headers), strict=False):
            header = message["entry"][0]["resource"]
            if header["eventCoding"]["code"] == event and header["focus"][0]["reference"].endswith(service_request):
                found.append((message, headers))
        return found


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Escalating]:
    directory = tmp_path_factory.mktemp("escalation")
    platform = Platform()
    hainaut = {
        "endpoint": platform.endpoint,
        "finess": "590000030",
        "policy": "pta-2016",
        "name": "DAC Hainaut",
        "gp_validation_delay": "PT1S",
        "auth": '{ type = "bearer", token_env = "HAINAUT_TOKEN" }',
    }
    routing = write_routing(directory, {"dac-59": hainaut}, {"59": "dac-59"})
    clients = write_clients(directory / "clients", [NURSE, HAINAUT_APP, OPERATOR])
    env = {
        "GATEWAY_AUTH": "on",
        "GATEWAY_CLIENTS": str(clients),
        "GATEWAY_AUTH_SECRET": TEST_SECRET,
        "HAINAUT_TOKEN": PLATFORM_TOKEN,
    }
    process = GatewayProcess(directory, routing, env=env)
    with running(platform, process):
        yield Escalating(process, platform)


def test_the_platform_is_told_reads_the_referral_and_answers_for_the_gp(gateway: Escalating) -> None:
    bundle = fresh(commune="59606")
    ins = next(i["value"] for i in resource(bundle, "Patient")["identifier"] if i["system"] == INS_NIR)
    answer = httpx.post(gateway.process.base, json=bundle, headers=gateway.headers(NURSE) | FHIR_JSON, timeout=30)
    assert answer.status_code == 200, answer.text
    location = next(e["response"]["location"] for e in answer.json()["entry"] if "/ServiceRequest/" in e["fullUrl"])
    service_request = location.split("/_history")[0]

    # Held for the GP, then past its one-second deadline: the worker escalates it and the platform is told.
    found = wait_until(lambda: gateway.messages("contact-gp", service_request), 30, 0.1, "the contact-gp message")
    ((message, headers),) = found
    assert headers["authorization"] == f"Bearer {PLATFORM_TOKEN}"  # outbound authentication, as every delivery
    header = message["entry"][0]["resource"]
    assert header["eventCoding"] == {"system": EVENT_SYSTEM, "code": "contact-gp"}
    carried = [e["resource"] for e in message["entry"][1:]]
    (patient,) = [r for r in carried if r["resourceType"] == "Patient"]
    assert {"system": INS_NIR, "value": ins} in [
        {"system": i["system"], "value": i["value"]} for i in patient["identifier"]
    ]
    tasks = {t["code"]["coding"][0]["code"]: t for t in carried if t["resourceType"] == "Task"}
    assert tasks["gp-validation"]["businessStatus"]["coding"][0]["code"] == "escalated"
    assert tasks["contact-gp"]["partOf"] == [{"reference": f"Task/{tasks['gp-validation']['id']}"}]
    assert not gateway.messages("referral-request", service_request)  # not routed: the GP has not answered

    # From the escalation on, the referral is the platform's to read.
    read = gateway.get(HAINAUT_APP, service_request)
    assert read.status_code == 200, read.text
    assert read.json()["status"] == "draft"
    assert gateway.get(HAINAUT_APP, f"Patient/{patient['id']}").status_code == 200
    task = gateway.get(HAINAUT_APP, f"Task/{tasks['gp-validation']['id']}").json()

    # It reaches the GP and records the answer on the GP's behalf (X-Provenance onBehalfOf the Task's owner).
    platform_organization = read.json()["performer"][0]["reference"]
    relay = {
        "resourceType": "Provenance",
        "agent": [{"who": {"reference": platform_organization}, "onBehalfOf": task["owner"]}],
    }
    decided = httpx.put(
        f"{gateway.process.base}/Task/{task['id']}",
        json=task | {"status": "accepted"},
        headers=gateway.headers(HAINAUT_APP)
        | FHIR_JSON
        | {"If-Match": f'W/"{task["meta"]["versionId"]}"', "X-Provenance": json.dumps(relay)},
        timeout=30,
    )
    assert decided.status_code == 200, decided.text
    assert gateway.get(HAINAUT_APP, service_request).json()["status"] == "active"
    wait_until(lambda: gateway.messages("referral-request", service_request), 30, 0.1, "the referral routed")
    provenances = gateway.get(OPERATOR, "Provenance", target=f"Task/{task['id']}").json()["entry"]
    answered = [p["resource"] for p in provenances if p["resource"]["activity"]["text"] == "Task requested → accepted"]
    (provenance,) = answered
    assert provenance["agent"][0]["who"] == {"reference": platform_organization}
    assert provenance["agent"][0]["onBehalfOf"] == task["owner"]
    # Escalated once: one contact-gp message, whatever the worker's rounds since.
    assert len(gateway.messages("contact-gp", service_request)) == 1
