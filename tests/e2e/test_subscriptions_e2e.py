"""Subscriptions (DESIGN §12) on a real ``gateway serve`` with authentication on, notifying loopback subscribers:
the GP's software is notified of the referral held for its GP, accepts it through the API, and the requester's
subscription sees the referral become active; another physician's software is told nothing; a subscriber down for
a while gets every event once, in order, and ``$events`` answers for any it missed; a gateway killed (kill -9)
after the change and before the notification loses nothing.

Every notification received is checked by the two independent validators (R4: Bundle, Parameters; the end-to-end
suite's ``EMITTED``). The backport IG's own package is published to no npm registry (hl7.fhir.uv.subscriptions-
backport is on packages.fhir.org only), so its profiles' rules are checked here instead (``backport_findings``):
those of backport-subscription-notification-r4 and backport-subscription-status-r4, from the IG's FSH."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.auth import TEST_SECRET, SmartClient, write_clients
from tests.support.fhir_validators import EMITTED, RECEIVED
from tests.support.processes import GatewayProcess, Platform, free_port, running, wait_until, write_routing
from tests.support.referrals import fresh

pytestmark = pytest.mark.e2e
FHIR_JSON = {"content-type": "application/fhir+json"}
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
REFERRAL_STATUS = "https://fhir.dac-gateway.org/SubscriptionTopic/referral-status"
TASK_TOPIC = "https://fhir.dac-gateway.org/SubscriptionTopic/task"
SUBSCRIBE = "system/Subscription.crud"


@dataclass
class Subscriber:
    """A subscriber's rest-hook endpoint on loopback: keeps every notification by path; answers 503 while down."""

    port: int = field(default_factory=free_port)
    up: bool = True
    received: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _server: uvicorn.Server | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _hook(self, request: Request) -> Response:
        raw = await request.body()
        if not self.up:
            return Response(status_code=503)
        EMITTED.record(f"{RECEIVED}{request.url}", raw, request.headers.get("content-type", ""))
        self.received.setdefault(request.url.path, []).append(json.loads(raw))
        return Response(status_code=200)

    def events(self, path: str) -> list[tuple[int, dict[str, Any]]]:
        """(event number, notification) of each event-notification received at ``path``, in arrival order."""
        found = []
        for bundle in list(self.received.get(path, [])):
            status = parameters(bundle)
            if status["type"] == "event-notification":
                found.append((int(status["events"][0]["event-number"]), bundle))
        return found

    def start(self) -> Subscriber:
        app = Starlette(routes=[Route("/{path:path}", self._hook, methods=["POST"])])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        threading.Thread(target=self._server.run, daemon=True).start()
        wait_until(lambda: self._server is not None and self._server.started, 10, what="loopback subscriber")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True


SUBSCRIBER = Subscriber()
NURSE = SmartClient(
    "hopital-valenciennes", "sender", ["system/ServiceRequest.cr", "system/*.rs", SUBSCRIBE],
    endpoints=[f"{SUBSCRIBER.origin}/nurse"],
)  # fmt: skip
GP = SmartClient(
    "cabinet-lilas", "practitioner", ["system/*.rs", "system/Task.u", SUBSCRIBE], rpps=["10100345676"],
    endpoints=[f"{SUBSCRIBER.origin}/gp"],
)  # fmt: skip
OTHER_GP = SmartClient(
    "cabinet-tilleuls", "practitioner", ["system/*.rs", SUBSCRIBE], rpps=["10100246809"],
    endpoints=[f"{SUBSCRIBER.origin}/other"],
)  # fmt: skip


def parameters(bundle: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for parameter in bundle["entry"][0]["resource"]["parameter"]:
        if parameter["name"] == "notification-event":
            event = {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in parameter["part"]}
            found.setdefault("events", []).append(event)
        else:
            found[parameter["name"]] = next(v for k, v in parameter.items() if k.startswith("value"))
    return found


def backport_findings(bundle: dict[str, Any]) -> list[str]:
    """What breaks the backport IG's R4 notification profiles (backport-subscription-notification-r4,
    backport-subscription-status-r4): type history, a Parameters first (invariant backport-notification-bundle-
    r4-1), its slices' cardinalities and types, each notification-event's event-number."""
    findings = []
    if bundle.get("type") != "history":
        findings.append("Bundle.type is not history")
    entries = bundle.get("entry") or []
    first = entries[0].get("resource", {}) if entries else {}
    if first.get("resourceType") != "Parameters":
        return [*findings, "entry[0] is not a Parameters (backport-notification-bundle-r4-1)"]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for parameter in first.get("parameter", []):
        by_name.setdefault(parameter["name"], []).append(parameter)
    expected = {
        "subscription": ("valueReference", 1, 1),
        "topic": ("valueCanonical", 0, 1),
        "status": ("valueCode", 1, 1),
        "type": ("valueCode", 1, 1),
        "events-since-subscription-start": ("valueString", 0, 1),
    }
    for name, (value, low, high) in expected.items():
        found = by_name.get(name, [])
        if not low <= len(found) <= high or any(value not in p for p in found):
            findings.append(f"parameter {name}: {len(found)} found, {low}..{high} {value} expected")
    if by_name["type"][0]["valueCode"] not in (
        "handshake",
        "heartbeat",
        "event-notification",
        "query-status",
        "query-event",
    ):
        findings.append("type is not a subscription-notification-type")
    for event in by_name.get("notification-event", []):
        parts = {part["name"]: part for part in event.get("part", [])}
        if "valueString" not in parts.get("event-number", {}):
            findings.append("notification-event without its event-number (valueString)")
        if "timestamp" in parts and "valueInstant" not in parts["timestamp"]:
            findings.append("notification-event timestamp is not an instant")
        if "focus" in parts and "valueReference" not in parts["focus"]:
            findings.append("notification-event focus is not a Reference")
    for n, entry in enumerate(entries):
        if "request" not in entry or "response" not in entry:
            findings.append(f"entry[{n}] of a history Bundle without request and response (bdl-3, bdl-4)")
    return findings


@dataclass
class Gateway:
    process: GatewayProcess
    tokens: dict[str, str] = field(default_factory=dict)

    def headers(self, client: SmartClient) -> dict[str, str]:
        if client.client_id not in self.tokens:
            token_url = f"http://127.0.0.1:{self.process.port}/auth/token"
            answer = httpx.post(token_url, data=client.token_form(token_url), timeout=30)
            assert answer.status_code == 200, answer.text
            self.tokens[client.client_id] = answer.json()["access_token"]
        return {"Authorization": f"Bearer {self.tokens[client.client_id]}"}

    def subscribe(
        self, client: SmartClient, topic: str, path: str, *filters: str, content: str = "full-resource"
    ) -> str:
        resource: dict[str, Any] = {
            "resourceType": "Subscription",
            "meta": {"profile": [f"{BACKPORT}/backport-subscription"]},
            "status": "requested",
            "reason": "status notifications",
            "criteria": topic,
            "channel": {
                "type": "rest-hook",
                "endpoint": f"{SUBSCRIBER.origin}{path}",
                "payload": "application/fhir+json",
                "_payload": {"extension": [{"url": f"{BACKPORT}/backport-payload-content", "valueCode": content}]},
            },
        }
        if filters:
            resource["_criteria"] = {
                "extension": [{"url": f"{BACKPORT}/backport-filter-criteria", "valueString": f} for f in filters]
            }
        answer = httpx.post(
            f"{self.process.base}/Subscription", json=resource, headers=self.headers(client) | FHIR_JSON, timeout=30
        )
        assert answer.status_code == 201, answer.text
        subscription_id = str(answer.json()["id"])
        wait_until(lambda: self.status(client, subscription_id) == "active", 20, 0.1, "the handshake taken")
        return subscription_id

    def status(self, client: SmartClient, subscription_id: str) -> str:
        answer = httpx.get(
            f"{self.process.base}/Subscription/{subscription_id}", headers=self.headers(client), timeout=30
        )
        return str(answer.json()["status"])

    def refer(self, **options: Any) -> str:
        answer = httpx.post(
            self.process.base, json=fresh(**options), headers=self.headers(NURSE) | FHIR_JSON, timeout=30
        )
        assert answer.status_code == 200, answer.text
        return next(
            e["response"]["location"].split("/_history")[0]
            for e in answer.json()["entry"]
            if "/ServiceRequest/" in e["fullUrl"]
        )


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    directory = tmp_path_factory.mktemp("subscriptions")
    platform = Platform()
    hainaut = {"endpoint": platform.endpoint, "finess": "590000030", "policy": "pta-2016", "name": "DAC Hainaut"}
    routing = write_routing(directory, {"dac-59": hainaut}, {"59": "dac-59", "75": "dac-59"})
    clients = write_clients(directory / "clients", [NURSE, GP, OTHER_GP])
    env = {"GATEWAY_AUTH": "on", "GATEWAY_CLIENTS": str(clients), "GATEWAY_AUTH_SECRET": TEST_SECRET}
    process = GatewayProcess(directory, routing, env=env)
    with running(platform, SUBSCRIBER, process):  # type: ignore[arg-type]
        yield Gateway(process)


def _all_valid() -> None:
    for bundles in list(SUBSCRIBER.received.values()):
        for bundle in bundles:
            assert backport_findings(bundle) == [], bundle


def test_the_gp_is_notified_accepts_and_the_requester_sees_it_active(gateway: Gateway) -> None:
    gateway.subscribe(GP, TASK_TOPIC, "/gp/fhir", "Task?code=gp-validation&status=requested")
    gateway.subscribe(NURSE, REFERRAL_STATUS, "/nurse/status", "ServiceRequest?status=active")
    gateway.subscribe(OTHER_GP, TASK_TOPIC, "/other/fhir")
    service_request = gateway.refer(commune="59606")  # pta-2016: held for the GP's validation
    (number, notified), *_ = wait_until(lambda: SUBSCRIBER.events("/gp/fhir"), 20, 0.1, "the GP notified")
    task = notified["entry"][1]["resource"]
    assert number == 1 and task["code"]["coding"][0]["code"] == "gp-validation"
    assert task["focus"]["reference"] == service_request
    headers = gateway.headers(GP) | FHIR_JSON | {"If-Match": f'W/"{task["meta"]["versionId"]}"'}
    accepted = httpx.put(
        f"{gateway.process.base}/Task/{task['id']}", json=task | {"status": "accepted"}, headers=headers
    )
    assert accepted.status_code == 200, accepted.text
    (number, seen), *_ = wait_until(lambda: SUBSCRIBER.events("/nurse/status"), 20, 0.1, "the requester notified")
    assert number == 1 and seen["entry"][1]["resource"]["status"] == "active"
    assert seen["entry"][1]["fullUrl"].endswith(service_request)
    # The other physician's software, subscribed to every Task it may see: its handshake, nothing else.
    assert SUBSCRIBER.events("/other/fhir") == []
    assert [parameters(b)["type"] for b in SUBSCRIBER.received["/other/fhir"]] == ["handshake"]
    _all_valid()


def test_a_receiver_down_then_back_gets_every_event_once_in_order(gateway: Gateway) -> None:
    subscription_id = gateway.subscribe(NURSE, REFERRAL_STATUS, "/nurse/down", content="id-only")
    SUBSCRIBER.up = False
    try:
        for _ in range(4):
            gateway.refer(commune="75056")
    finally:
        SUBSCRIBER.up = True
    events = wait_until(lambda: len(SUBSCRIBER.events("/nurse/down")) >= 4 and SUBSCRIBER.events("/nurse/down"), 30)
    assert [number for number, _ in events] == [1, 2, 3, 4]  # each once, in order, no gap
    # A subscriber that missed some asks for them by number.
    answer = httpx.get(
        f"{gateway.process.base}/Subscription/{subscription_id}/$events",
        params={"eventsSinceNumber": "2", "eventsUntilNumber": "3"},
        headers=gateway.headers(NURSE),
    )
    bundle = answer.json()
    assert parameters(bundle)["type"] == "query-event"
    assert [e["event-number"] for e in parameters(bundle)["events"]] == ["2", "3"]
    assert backport_findings(bundle) == []
    _all_valid()


def test_a_crash_after_the_change_loses_no_notification(gateway: Gateway) -> None:
    gateway.subscribe(NURSE, REFERRAL_STATUS, "/nurse/crash", content="id-only")
    SUBSCRIBER.up = False
    service_request = gateway.refer(commune="75056")  # committed, with its notification, then:
    gateway.process.kill()  # kill -9 before the notification could leave
    SUBSCRIBER.up = True
    gateway.process.start()
    gateway.tokens.clear()
    ((number, bundle),) = wait_until(
        lambda: SUBSCRIBER.events("/nurse/crash"), 30, 0.1, "the notification after restart"
    )
    assert number == 1
    assert parameters(bundle)["events"][0]["focus"]["reference"].endswith(service_request)
    _all_valid()
