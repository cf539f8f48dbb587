"""Subscriptions with authentication on (DESIGN §11, §12): a client's own only; its endpoint registered; the GP's
software notified of the gp-validation Task its GP owns, the requester of its referral's status; nothing of another
party's referral notified — not even through a filter naming it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI

from gateway import Settings, create_app
from gateway.routing.config import RoutingTable
from gateway.store import Database, UnitOfWork
from tests.auth.conftest import token_of
from tests.notify.test_subscriptions import REFERRAL_STATUS, TASK_TOPIC, deliver, received, status_of, subscription
from tests.support.auth import TEST_SECRET, SmartClient, write_clients
from tests.workflow.test_decisions_api import pta_2016_referral

FHIR_JSON = {"Content-Type": "application/fhir+json"}
NURSE_HOOK = "https://nurse.example/fhir/hook"
GP_HOOK = "https://cabinet-lilas.example/fhir/notifications"
OTHER_HOOK = "https://cabinet-tilleuls.example/fhir/notifications"
SUBSCRIBE = "system/Subscription.crud"
NURSE = SmartClient(
    "hopital",
    "sender",
    ["system/ServiceRequest.cr", "system/*.rs", SUBSCRIBE],
    endpoints=["https://nurse.example/fhir"],
)
GP = SmartClient(
    "cabinet-lilas", "practitioner", ["system/*.rs", "system/Task.u", SUBSCRIBE], rpps=["10100345676"],
    endpoints=["https://cabinet-lilas.example/fhir"],
)  # fmt: skip
OTHER_GP = SmartClient(
    "cabinet-tilleuls", "practitioner", ["system/*.rs", SUBSCRIBE], rpps=["10100246809"],
    endpoints=["https://cabinet-tilleuls.example/fhir"],
)  # fmt: skip
NO_SCOPE = SmartClient("reader", "sender", ["system/*.rs"], endpoints=["https://nurse.example/fhir"])


@pytest.fixture
async def secure(
    database_url: str, tmp_path: Path, database: Database, routing: RoutingTable
) -> AsyncIterator[httpx.AsyncClient]:
    clients = write_clients(tmp_path, [NURSE, GP, OTHER_GP, NO_SCOPE])
    settings = Settings(database_url=database_url, auth="on", clients=clients, auth_secret=TEST_SECRET)
    app: FastAPI = create_app(settings, database, routing)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test") as http:
        yield http


async def _subscribe(http: httpx.AsyncClient, client: SmartClient, resource: dict[str, Any]) -> dict[str, Any]:
    answer = await http.post("/fhir/Subscription", json=resource, headers=await token_of(http, client) | FHIR_JSON)
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


@respx.mock
async def test_the_gp_is_contacted_and_the_requester_hears_of_the_acceptance(
    secure: httpx.AsyncClient, database: Database, routing: RoutingTable
) -> None:
    respx.post(url__regex=r".*\$process-message").mock(return_value=httpx.Response(200))
    gp_hook = respx.post(GP_HOOK).mock(return_value=httpx.Response(200))
    nurse_hook = respx.post(NURSE_HOOK).mock(return_value=httpx.Response(200))
    other_hook = respx.post(OTHER_HOOK).mock(return_value=httpx.Response(200))
    await _subscribe(secure, GP, subscription(TASK_TOPIC, ("Task?code=gp-validation",), endpoint=GP_HOOK))
    await _subscribe(
        secure, NURSE, subscription(REFERRAL_STATUS, ("ServiceRequest?status=active",), endpoint=NURSE_HOOK)
    )
    await _subscribe(secure, OTHER_GP, subscription(TASK_TOPIC, endpoint=OTHER_HOOK))
    nurse = await token_of(secure, NURSE)
    posted = await secure.post("/fhir", json=pta_2016_referral("-sub"), headers=nurse | FHIR_JSON)
    assert posted.status_code == 200, posted.text
    service_request = next(
        e["response"]["location"].split("/_history")[0]
        for e in posted.json()["entry"]
        if "/ServiceRequest/" in e["fullUrl"]
    )
    await deliver(database, routing, rounds=2)
    (gp_event,) = [b for b in received(gp_hook) if status_of(b)["type"] == "event-notification"]
    task = gp_event["entry"][1]["resource"]
    assert task["code"]["coding"][0]["code"] == "gp-validation" and task["focus"]["reference"] == service_request
    assert [status_of(b)["type"] for b in received(nurse_hook)] == ["handshake"]  # draft: its filter says active
    gp = await token_of(secure, GP)
    accepted = await secure.put(
        f"/fhir/Task/{task['id']}",
        json=task | {"status": "accepted"},
        headers=gp | FHIR_JSON | {"If-Match": f'W/"{task["meta"]["versionId"]}"'},
    )
    assert accepted.status_code == 200, accepted.text
    await deliver(database, routing, rounds=2)
    (nurse_event,) = [b for b in received(nurse_hook) if status_of(b)["type"] == "event-notification"]
    assert nurse_event["entry"][1]["resource"]["status"] == "active"
    assert status_of(nurse_event)["events"][0]["event-number"] == "1"
    # The other physician's software, subscribed to every Task: its handshake, nothing of this referral.
    assert [status_of(b)["type"] for b in received(other_hook)] == ["handshake"]
    async with UnitOfWork(database, write=False) as uow:
        others = [r for r in await uow.subscriptions.of_owner(OTHER_GP.client_id)]
    assert [r.events_count for r in others] == [0]


async def test_a_clients_own_only_and_its_endpoint_registered(secure: httpx.AsyncClient) -> None:
    mine = await _subscribe(secure, GP, subscription(TASK_TOPIC, endpoint=GP_HOOK))
    other = await token_of(secure, OTHER_GP)
    assert (await secure.get(f"/fhir/Subscription/{mine['id']}", headers=other)).status_code == 404
    assert (await secure.get(f"/fhir/Subscription/{mine['id']}/$status", headers=other)).status_code == 404
    assert (await secure.delete(f"/fhir/Subscription/{mine['id']}", headers=other)).status_code == 404
    assert (await secure.get("/fhir/Subscription", headers=other)).json()["total"] == 0
    gp = await token_of(secure, GP)
    assert (await secure.get("/fhir/Subscription", headers=gp)).json()["total"] == 1
    elsewhere = subscription(TASK_TOPIC, endpoint="https://attacker.example/hook")
    refused = await secure.post("/fhir/Subscription", json=elsewhere, headers=gp | FHIR_JSON)
    assert refused.status_code == 422
    issue = refused.json()["issue"][0]
    assert issue["details"]["coding"][0]["code"] == "endpoint-not-registered"
    assert issue["expression"] == ["Subscription.channel.endpoint"]
    no_scope = await token_of(secure, NO_SCOPE)
    forbidden = await secure.post(
        "/fhir/Subscription", json=subscription(endpoint=NURSE_HOOK), headers=no_scope | FHIR_JSON
    )
    assert forbidden.status_code == 403


async def test_a_filter_on_another_partys_referral_notifies_nothing(
    secure: httpx.AsyncClient, database: Database
) -> None:
    nurse = await token_of(secure, NURSE)
    posted = await secure.post("/fhir", json=pta_2016_referral("-leak"), headers=nurse | FHIR_JSON)
    service_request = next(
        e["response"]["location"].split("/_history")[0]
        for e in posted.json()["entry"]
        if "/ServiceRequest/" in e["fullUrl"]
    )
    # Accepted like any filter (a 4xx would say the referral exists), and never notified.
    spy = await _subscribe(
        secure, OTHER_GP, subscription(TASK_TOPIC, (f"Task?focus={service_request}",), endpoint=OTHER_HOOK)
    )
    gp = await token_of(secure, GP)
    task = (
        await secure.get("/fhir/Task", params={"focus": service_request, "code": "gp-validation"}, headers=gp)
    ).json()
    task = task["entry"][0]["resource"]
    answer = await secure.put(
        f"/fhir/Task/{task['id']}",
        json=task | {"status": "accepted"},
        headers=gp | FHIR_JSON | {"If-Match": f'W/"{task["meta"]["versionId"]}"'},
    )
    assert answer.status_code == 200, answer.text
    async with UnitOfWork(database, write=False) as uow:
        record = await uow.subscriptions.get(spy["id"])
        queued = [e for e in await uow.outbox.entries() if e.destination == f"subscription/{spy['id']}"]
    assert record is not None and record.events_count == 0
    assert [e.event for e in queued] == ["subscription-handshake"]
