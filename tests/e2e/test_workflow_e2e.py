"""The GP validation workflow on a real gateway process: deadline escalation, validation, then delivery."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.databases import USES_POSTGRESQL
from tests.support.processes import GATEWAY, GatewayProcess, Platform, running, wait_until, write_routing
from tests.support.referrals import fresh

pytestmark = pytest.mark.e2e
FHIR_JSON = {"content-type": "application/fhir+json"}


def _post(gateway: GatewayProcess, bundle: dict[str, object]) -> str:
    response = httpx.post(gateway.base, json=bundle, headers=FHIR_JSON, timeout=30)
    assert response.status_code == 200, response.text
    location = next(e["response"]["location"] for e in response.json()["entry"] if "/ServiceRequest/" in e["fullUrl"])
    return str(location.split("/_history")[0])


def _tasks(gateway: GatewayProcess, service_request: str) -> dict[str, dict[str, object]]:
    found = httpx.get(f"{gateway.base}/Task", params={"focus": service_request}).json()
    return {e["resource"]["code"]["coding"][0]["code"]: e["resource"] for e in found.get("entry", [])}


def test_escalation_then_validation_on_behalf_then_delivery(tmp_path: Path) -> None:
    platform = Platform()
    hainaut = {
        "endpoint": platform.endpoint,
        "finess": "590000030",
        "policy": "pta-2016",
        "gp_validation_delay": "PT3S",
    }
    routing = write_routing(tmp_path, {"hainaut": hainaut}, {"59": "hainaut"})
    gateway = GatewayProcess(tmp_path, routing)
    with running(platform, gateway):
        service_request = _post(gateway, fresh(commune="59606"))
        assert httpx.get(f"{gateway.base}/{service_request}").json()["status"] == "draft"

        def escalated() -> bool:
            tasks = _tasks(gateway, service_request)
            validation = tasks["gp-validation"]
            status = validation["businessStatus"]["coding"][0]["code"]  # type: ignore[index]
            return "contact-gp" in tasks and status == "escalated"

        wait_until(escalated, 20, 0.3, "the deadline escalation")
        tasks = _tasks(gateway, service_request)
        assert (
            len(
                httpx.get(f"{gateway.base}/Task", params={"focus": service_request, "code": "contact-gp"}).json()[
                    "entry"
                ]
            )
            == 1
        )
        # Told to contact the GP (DESIGN §11), not sent the referral to process: still waiting for the GP.
        wait_until(lambda: platform.message_ids("contact-gp"), 20, 0.2, "the contact-gp message")
        assert platform.message_ids() == []

        validation = tasks["gp-validation"]
        platform_org = httpx.get(f"{gateway.base}/{service_request}").json()["performer"][0]["reference"]
        gp = validation["owner"]["reference"]  # type: ignore[index]
        x_provenance = json.dumps(
            {
                "resourceType": "Provenance",
                "agent": [{"who": {"reference": platform_org}, "onBehalfOf": {"reference": gp}}],
            }
        )
        version = validation["meta"]["versionId"]  # type: ignore[index]
        accepted = httpx.put(
            f"{gateway.base}/Task/{validation['id']}",
            json=validation | {"status": "accepted"},
            headers=FHIR_JSON | {"if-match": f'W/"{version}"', "x-provenance": x_provenance},
        )
        assert accepted.status_code == 200, accepted.text
        assert httpx.get(f"{gateway.base}/{service_request}").json()["status"] == "active"
        wait_until(lambda: platform.message_ids(), 20, 0.2, "delivery after validation")
        wait_until(
            lambda: (
                _tasks(gateway, service_request)["platform-intake"]["businessStatus"]["coding"][0]["code"]
                == "delivered"
            ),  # type: ignore[index]
            20,
            0.2,
            "platform-intake delivered",
        )


@pytest.mark.skipif(not USES_POSTGRESQL, reason="several workers share one database on PostgreSQL")
def test_two_workers_and_a_server_deliver_each_referral_once(tmp_path: Path) -> None:
    platform = Platform()
    routing = write_routing(
        tmp_path, {"dac-75": {"endpoint": platform.endpoint, "finess": "750000010"}}, {"75": "dac-75"}
    )
    gateway = GatewayProcess(tmp_path, routing)
    with running(platform, gateway):
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        workers = [subprocess.Popen([*GATEWAY, "worker"], env=gateway.environment(), **quiet) for _ in range(2)]  # type: ignore[call-overload]
        try:
            count = 200
            with httpx.Client(timeout=30) as client:
                for _ in range(count):
                    response = client.post(gateway.base, json=fresh(commune="75056"), headers=FHIR_JSON)
                    assert response.status_code == 200
            wait_until(lambda: len(platform.received) >= count, 60, 0.5, f"{count} deliveries")
            ids = platform.message_ids()
            wait_until(
                lambda: "pending" not in gateway.cli("outbox", "list", "--limit", "1000").stdout, 30, 0.5, "quiet"
            )
            assert len(ids) == count and len(set(ids)) == count  # each referral delivered once
        finally:
            for worker in workers:
                worker.terminate()
                worker.wait(10)


def test_decisions_and_opposition_over_http(tmp_path: Path) -> None:
    hainaut = {"endpoint": "http://127.0.0.1:9/fhir", "finess": "590000030", "policy": "pta-2016"}
    routing = write_routing(tmp_path, {"hainaut": hainaut}, {"59": "hainaut"})
    gateway = GatewayProcess(tmp_path, routing)
    with running(gateway):
        # a rejection needs a reason; a stale version is refused; a final status is final
        service_request = _post(gateway, fresh(commune="59606"))
        task = _tasks(gateway, service_request)["gp-validation"]
        url, headers = f"{gateway.base}/Task/{task['id']}", FHIR_JSON | {"if-match": 'W/"1"'}
        assert httpx.put(url, json=task | {"status": "rejected"}, headers=headers).status_code == 422
        assert httpx.put(url, json=task | {"status": "accepted"}, headers=FHIR_JSON).status_code == 428
        stale = httpx.put(url, json=task | {"status": "accepted"}, headers=FHIR_JSON | {"if-match": 'W/"5"'})
        assert stale.status_code == 412
        reason = {"statusReason": {"text": "situation déjà suivie"}}
        assert httpx.put(url, json=task | {"status": "rejected"} | reason, headers=headers).status_code == 200
        assert httpx.get(f"{gateway.base}/{service_request}").json()["status"] == "revoked"
        forbidden = httpx.put(url, json=task | {"status": "accepted"}, headers=FHIR_JSON | {"if-match": 'W/"2"'})
        assert forbidden.status_code == 409

        # an opposition holds across referrals and senders
        first = fresh("referral-opposition.json", commune="59606")
        assert httpx.get(f"{gateway.base}/{_post(gateway, first)}").json()["status"] == "revoked"
        later = copy.deepcopy(first)  # the same patient (INS) referred again, this time "informed, no objection"
        later["identifier"]["value"] += "-later"
        for entry in later["entry"]:
            if entry["resource"]["resourceType"] == "ServiceRequest":
                entry["resource"]["identifier"][0]["value"] += "-later"
            if entry["resource"]["resourceType"] == "Consent":
                entry["resource"]["provision"]["type"] = "permit"
        assert httpx.get(f"{gateway.base}/{_post(gateway, later)}").json()["status"] == "revoked"
