"""Routing and delivery end to end: real gateway processes, a loopback platform that fails on command."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.processes import GatewayProcess, Platform, running, wait_until, write_routing
from tests.support.referrals import as_message, fresh

pytestmark = pytest.mark.e2e
FHIR_JSON = {"content-type": "application/fhir+json"}
PARIS = "75056"


def _post(gateway: GatewayProcess, bundle: dict[str, object]) -> str:
    response = httpx.post(gateway.base, json=bundle, headers=FHIR_JSON, timeout=30)
    assert response.status_code == 200, response.text
    location = next(e["response"]["location"] for e in response.json()["entry"] if "/ServiceRequest/" in e["fullUrl"])
    return str(location.split("/_history")[0])


def _intake_task(gateway: GatewayProcess, service_request: str) -> dict[str, object]:
    found = httpx.get(f"{gateway.base}/Task", params={"focus": service_request, "code": "platform-intake"}).json()
    assert found["total"] == 1, found
    task: dict[str, object] = found["entry"][0]["resource"]
    return task


def _delivery_status(gateway: GatewayProcess, service_request: str) -> str:
    task = _intake_task(gateway, service_request)
    return str(task["businessStatus"]["coding"][0]["code"])  # type: ignore[index]


def test_delivery_retries_dead_letter_and_replay(tmp_path: Path) -> None:
    platform = Platform(script=[503, 503])
    routing = write_routing(
        tmp_path, {"dac-75": {"endpoint": platform.endpoint, "finess": "750000010"}}, {"75": "dac-75"}
    )
    gateway = GatewayProcess(tmp_path, routing)
    with running(platform, gateway):
        service_request = _post(gateway, fresh(commune=PARIS))
        wait_until(lambda: _delivery_status(gateway, service_request) == "delivered", what="delivery after two 503")
        ids = platform.message_ids()
        assert len(ids) == 3 and len(set(ids)) == 1  # the same MessageHeader id on every retry
        message = platform.received[-1]
        assert message["entry"][0]["resource"]["focus"][0]["reference"].endswith(service_request)

        platform.default = 400  # a refusal: dead letter, visible, replayable
        refused = _post(gateway, fresh(commune=PARIS))
        wait_until(lambda: _delivery_status(gateway, refused) == "failed", what="dead letter")
        listing = gateway.cli("outbox", "list", "--status", "dead")
        assert listing.returncode == 0 and "dac-75" in listing.stdout and "HTTP 400" in listing.stdout
        dead_id = listing.stdout.split()[0]
        platform.default = 200
        replay = gateway.cli("outbox", "replay", dead_id)
        assert replay.returncode == 0, replay.stderr
        wait_until(lambda: platform.message_ids().count(dead_id) == 2, what="replayed delivery")


def test_kill_9_during_delivery_loses_nothing(tmp_path: Path) -> None:
    platform = Platform(script=[(200, 4.0)])  # the first answer is slow: the gateway dies meanwhile
    routing = write_routing(
        tmp_path, {"dac-75": {"endpoint": platform.endpoint, "finess": "750000010"}}, {"75": "dac-75"}
    )
    gateway = GatewayProcess(tmp_path, routing)
    with running(platform):
        gateway.start()
        try:
            service_request = _post(gateway, fresh(commune=PARIS))
            wait_until(lambda: len(platform.received) == 1, what="a delivery in flight")
            gateway.kill()
            gateway.start()  # same database: the lease expires and the delivery is taken again
            wait_until(lambda: _delivery_status(gateway, service_request) == "delivered", 30, what="redelivery")
            ids = platform.message_ids()
            assert len(ids) >= 2 and len(set(ids)) == 1  # at least once, under one id: receivers drop duplicates
        finally:
            gateway.drop()


def test_federation_between_two_gateways(tmp_path: Path) -> None:
    platform = Platform()
    gateway_b = GatewayProcess(tmp_path / "b", tmp_path / "b" / "routing.toml")
    gateway_a = GatewayProcess(tmp_path / "a", tmp_path / "a" / "routing.toml")
    a_to_b = Platform(relay_to=gateway_b.base)  # sees what A forwards to B
    write_routing(tmp_path / "b", {"dac-67": {"endpoint": platform.endpoint, "finess": "670000041"}}, {"67": "dac-67"})
    write_routing(
        tmp_path / "a",
        {
            "dac-75": {"endpoint": "http://127.0.0.1:9/fhir", "finess": "750000010"},
            "dac-67": {"endpoint": a_to_b.endpoint, "kind": "peer-gateway", "finess": "670000041"},
        },
        {"75": "dac-75", "67": "dac-67"},
    )
    with running(platform, gateway_b, a_to_b, gateway_a):
        bundle = fresh(commune="67482")
        service_request_a = _post(gateway_a, bundle)
        wait_until(lambda: _delivery_status(gateway_a, service_request_a) == "delivered", what="A → B")
        wait_until(lambda: platform.message_ids(), what="B → platform")
        forwarded = a_to_b.received[0]["entry"][0]["resource"]
        assert forwarded["source"]["endpoint"] == gateway_a.base
        message = platform.received[0]
        header = message["entry"][0]["resource"]
        assert header["source"]["endpoint"] == gateway_b.base
        hops = [e["valueUnsignedInt"] for e in header["extension"] if e["url"].endswith("dac-hop-count")]
        assert hops == [2]
        identifier = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest")["resource"][
            "identifier"
        ][0]
        at_b = httpx.get(
            f"{gateway_b.base}/ServiceRequest", params={"identifier": f"{identifier['system']}|{identifier['value']}"}
        ).json()
        assert at_b["total"] == 1 and at_b["entry"][0]["resource"]["status"] == "active"
        provenance = httpx.get(f"{gateway_a.base}/Provenance", params={"target": service_request_a}).json()
        assert any("peer gateway" in e["resource"]["activity"]["text"] for e in provenance["entry"])


def test_gateways_routing_to_each_other_do_not_loop(tmp_path: Path) -> None:
    gateway_a = GatewayProcess(tmp_path / "a", tmp_path / "a" / "routing.toml")
    gateway_b = GatewayProcess(tmp_path / "b", tmp_path / "b" / "routing.toml")
    a_to_b, b_to_a = Platform(relay_to=gateway_b.base), Platform(relay_to=gateway_a.base)
    peer = {"kind": "peer-gateway", "finess": "670000041"}
    write_routing(tmp_path / "a", {"p": {"endpoint": a_to_b.endpoint, **peer}}, {"67": "p"})
    write_routing(tmp_path / "b", {"p": {"endpoint": b_to_a.endpoint, **peer}}, {"67": "p"})
    with running(a_to_b, b_to_a, gateway_a, gateway_b):
        bundle = fresh(commune="67482")
        _post(gateway_a, bundle)

        def quiet() -> bool:
            listings = [g.cli("outbox", "list").stdout for g in (gateway_a, gateway_b)]
            return all(listing.strip() and "pending" not in listing for listing in listings)

        wait_until(quiet, 30, 0.5, "both outboxes to settle")
        identifier = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest")["resource"][
            "identifier"
        ][0]
        for gateway in (gateway_a, gateway_b):
            found = httpx.get(
                f"{gateway.base}/ServiceRequest", params={"identifier": f"{identifier['system']}|{identifier['value']}"}
            ).json()
            assert found["total"] == 1  # back at A, the referral is a resubmission: replayed, not forwarded again
            assert "dead" not in gateway.cli("outbox", "list").stdout

        # A message that already went round as often as allowed is refused outright.
        message = as_message(fresh(commune="67482"), gateway_b.base, str(uuid.uuid4()))
        message["entry"][0]["resource"]["extension"] = [
            {"url": "https://fhir.dac-gateway.org/StructureDefinition/dac-hop-count", "valueUnsignedInt": 3}
        ]
        refused = httpx.post(f"{gateway_a.base}/$process-message", json=message, headers=FHIR_JSON, timeout=30)
        assert refused.status_code == 422
        assert refused.json()["issue"][0]["details"]["coding"][0]["code"] == "hop-limit-reached"


def test_updates_go_back_to_a_message_sender(tmp_path: Path) -> None:
    platform, sender = Platform(), Platform()
    routing = write_routing(
        tmp_path,
        {"dac-59": {"endpoint": platform.endpoint, "finess": "590000030", "policy": "pta-2016"}},
        {"59": "dac-59"},
    )
    gateway = GatewayProcess(tmp_path, routing)
    with running(platform, sender, gateway):
        message = as_message(fresh(commune="59606"), sender.endpoint, str(uuid.uuid4()))
        response = httpx.post(f"{gateway.base}/$process-message", json=message, headers=FHIR_JSON, timeout=30)
        assert response.status_code == 200, response.text
        service_request = response.json()["entry"][1]["resource"]
        assert service_request["status"] == "draft"  # pta-2016: waits for the GP
        tasks = httpx.get(
            f"{gateway.base}/Task", params={"focus": f"ServiceRequest/{service_request['id']}", "code": "gp-validation"}
        ).json()
        task = tasks["entry"][0]["resource"]
        rejected = task | {"status": "rejected", "statusReason": {"text": "pas d'indication"}}
        decided = httpx.put(
            f"{gateway.base}/Task/{task['id']}", json=rejected, headers=FHIR_JSON | {"if-match": 'W/"1"'}
        )
        assert decided.status_code == 200, decided.text
        wait_until(lambda: sender.message_ids("referral-update"), what="referral-update to the sender")
        update = sender.received[-1]
        focus = next(e["resource"] for e in update["entry"] if e["resource"]["resourceType"] == "ServiceRequest")
        assert focus["id"] == service_request["id"] and focus["status"] == "revoked"
        assert platform.received == []  # never routed
