"""Deliveries authenticated with SMART Backend Services (a ``smart-backend`` block): to a platform of the routing
file, and back to a client whose registration carries one. The platform and its token endpoint are respx mocks."""

from __future__ import annotations

import dataclasses
import json
import random
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from gateway.auth.clients import ClientRegistry, RegisteredClient, Role
from gateway.auth.outbound import SmartBackendAuth, parse_smart_backend
from gateway.auth.scopes import ScopeSet
from gateway.intake import read_referral, take_in
from gateway.routing.config import PlatformAuth, RoutingTable
from gateway.routing.delivery import DeliverySettings, Dispatcher
from gateway.store import Database, UnitOfWork
from tests.routing.test_delivery import _due_now, _intake_task
from tests.support.auth import write_private_key
from tests.support.referrals import as_message, fresh

BASE = "http://gateway.test/fhir"
PARIS = "https://dac75.example.org/fhir/$process-message"
PARIS_TOKEN = "https://dac75.example.org/auth/token"
SENDER_BASE = "https://peer-a.example.org/fhir"
SENDER_TOKEN = "https://peer-a.example.org/auth/token"


def _auth(directory: Path, token_url: str) -> SmartBackendAuth:
    write_private_key(directory / "gw.pem")
    block = {"token_url": token_url, "client_id": "gw", "key_file": "gw.pem", "kid": "k1", "scope": "system/*.c"}
    return parse_smart_backend(block, directory)


@pytest.fixture
def secured_routing(routing: RoutingTable, tmp_path: Path) -> RoutingTable:
    """The example routing file, dac-75 (the default platform) authenticated with smart-backend."""
    paris = routing.platforms["dac-75"]
    auth = PlatformAuth("smart-backend", smart=_auth(tmp_path, PARIS_TOKEN))
    return dataclasses.replace(
        routing, platforms={**routing.platforms, "dac-75": dataclasses.replace(paris, auth=auth)}
    )


def _dispatcher(
    database: Database,
    routing: RoutingTable,
    client: httpx.AsyncClient,
    registry: ClientRegistry | None = None,
    backoff: float = 0.001,
) -> Dispatcher:
    settings = DeliverySettings(base_url=BASE, backoff_base=backoff, backoff_cap=backoff * 2)
    return Dispatcher(database, routing, client, settings, rng=random.Random(7), registry=registry)


def _tokens(*tokens: str) -> list[httpx.Response]:
    return [httpx.Response(200, json={"access_token": token, "expires_in": 300}) for token in tokens]


def _bearers(route: respx.Route) -> list[str]:
    return [call.request.headers.get("authorization", "") for call in route.calls]


async def _entries(database: Database) -> list[Any]:
    async with UnitOfWork(database, write=False) as uow:
        return await uow.outbox.entries()


async def _referral(database: Database, routing: RoutingTable) -> str:
    outcome = await take_in(database, read_referral(fresh(commune="75056"), "transaction"), routing)
    return outcome.service_request_id


@respx.mock
async def test_the_token_is_fetched_once_and_carried_by_every_delivery(
    database: Database, secured_routing: RoutingTable
) -> None:
    token = respx.post(PARIS_TOKEN).mock(side_effect=_tokens("t1"))
    platform = respx.post(PARIS).mock(return_value=httpx.Response(200))
    async with httpx.AsyncClient() as client:
        dispatcher = _dispatcher(database, secured_routing, client)
        for _ in range(3):
            await _referral(database, secured_routing)
            await dispatcher.deliver_due()
    assert token.call_count == 1 and _bearers(platform) == ["Bearer t1"] * 3
    assert {entry.status for entry in await _entries(database)} == {"delivered"}


@respx.mock
async def test_a_401_fetches_a_fresh_token_and_retries_at_once(
    database: Database, secured_routing: RoutingTable
) -> None:
    service_request_id = await _referral(database, secured_routing)
    token = respx.post(PARIS_TOKEN).mock(side_effect=_tokens("stale", "fresh"))
    platform = respx.post(PARIS).mock(side_effect=[httpx.Response(401), httpx.Response(200)])
    async with httpx.AsyncClient() as client:
        await _dispatcher(database, secured_routing, client).deliver_due()
    assert token.call_count == 2 and _bearers(platform) == ["Bearer stale", "Bearer fresh"]
    ids = {json.loads(call.request.content)["entry"][0]["resource"]["id"] for call in platform.calls}
    (entry,) = await _entries(database)
    assert ids == {entry.id} and (entry.status, entry.attempts) == ("delivered", 1)
    task = await _intake_task(database, service_request_id)
    assert task["businessStatus"]["coding"][0]["code"] == "delivered"


@respx.mock
async def test_a_fresh_token_refused_too_is_a_dead_letter(database: Database, secured_routing: RoutingTable) -> None:
    await _referral(database, secured_routing)
    token = respx.post(PARIS_TOKEN).mock(side_effect=_tokens("stale", "fresh"))
    platform = respx.post(PARIS).mock(return_value=httpx.Response(401))
    async with httpx.AsyncClient() as client:
        await _dispatcher(database, secured_routing, client).deliver_due()
    assert token.call_count == 2 and _bearers(platform) == ["Bearer stale", "Bearer fresh"]
    (entry,) = await _entries(database)
    assert (entry.status, entry.attempts, entry.last_error) == ("dead", 1, "HTTP 401")


@respx.mock
async def test_a_token_endpoint_down_delays_deliveries_without_losing_any(
    database: Database, secured_routing: RoutingTable
) -> None:
    first, second = await _referral(database, secured_routing), await _referral(database, secured_routing)
    token = respx.post(PARIS_TOKEN).mock(
        side_effect=[httpx.ConnectError("refused"), httpx.ConnectError("refused"), httpx.Response(503), *_tokens("t1")]
    )
    platform = respx.post(PARIS).mock(return_value=httpx.Response(200))
    async with httpx.AsyncClient() as client:
        dispatcher = _dispatcher(database, secured_routing, client, backoff=60)  # retried when the test says
        await dispatcher.deliver_due()
        entries = await _entries(database)
        assert platform.call_count == 0
        assert {(e.status, e.attempts, e.last_error) for e in entries} == {
            ("pending", 1, "token endpoint unreachable (ConnectError)")
        }
        for service_request_id in (first, second):
            task = await _intake_task(database, service_request_id)
            assert task["businessStatus"]["coding"][0]["code"] == "queued"  # not failed: waiting
        await _due_now(database)
        await dispatcher.deliver_due()  # 503: still waiting (one of them), then a token for the other
        await _due_now(database)
        await dispatcher.deliver_due()
    assert token.call_count == 4
    assert sorted((e.status, e.attempts) for e in await _entries(database)) == [("delivered", 2), ("delivered", 3)]
    assert _bearers(platform) == ["Bearer t1"] * 2


@respx.mock
async def test_a_token_endpoint_down_past_every_attempt_makes_no_dead_letter(
    database: Database, secured_routing: RoutingTable
) -> None:
    """Issue 14: a peer's token endpoint down — deliveries wait and retry, none dead-lettered, none lost. Past
    ``max_attempts`` (12) failed token requests the entry still waits; once a token comes, it is delivered."""
    service_request_id = await _referral(database, secured_routing)
    failures = 15
    respx.post(PARIS_TOKEN).mock(side_effect=[httpx.ConnectError("refused")] * failures + _tokens("t1"))
    platform = respx.post(PARIS).mock(return_value=httpx.Response(200))
    async with httpx.AsyncClient() as client:
        dispatcher = _dispatcher(database, secured_routing, client, backoff=60)
        for attempt in range(1, failures + 1):
            await dispatcher.deliver_due()
            (entry,) = await _entries(database)
            assert (entry.status, entry.attempts) == ("pending", attempt)
            await _due_now(database)
        task = await _intake_task(database, service_request_id)
        assert task["businessStatus"]["coding"][0]["code"] == "queued"
        assert platform.call_count == 0
        await dispatcher.deliver_due()
    (entry,) = await _entries(database)
    assert (entry.status, entry.attempts) == ("delivered", failures + 1)
    assert _bearers(platform) == ["Bearer t1"]


@respx.mock
async def test_updates_back_carry_a_token_of_the_senders_registration(
    database: Database, routing: RoutingTable, tmp_path: Path
) -> None:
    """A peer gateway posted the referral as a message: the update telling it the referral was delivered goes to
    its FHIR base with a token from its token endpoint, as its registration here says."""
    message = as_message(fresh(commune="75056"), SENDER_BASE, str(uuid.uuid4()))
    await take_in(database, read_referral(message, "message"), routing, sender="peer-a")
    peer = RegisteredClient(
        "peer-a", Role.SENDER, ScopeSet.parse(["system/ServiceRequest.c"]), {}, auth=_auth(tmp_path, SENDER_TOKEN)
    )
    other = RegisteredClient("other", Role.SENDER, ScopeSet.parse(["system/ServiceRequest.c"]), {})
    registry = ClientRegistry({"peer-a": peer, "other": other})
    token = respx.post(SENDER_TOKEN).mock(side_effect=_tokens("for-peer-a"))
    platform = respx.post(PARIS).mock(return_value=httpx.Response(200))
    sender = respx.post(f"{SENDER_BASE}/$process-message").mock(return_value=httpx.Response(200))
    async with httpx.AsyncClient() as client:
        dispatcher = _dispatcher(database, routing, client, registry)
        await dispatcher.deliver_due()  # the referral to its platform (no auth), then the update back
        await dispatcher.deliver_due()
    assert _bearers(platform) == [""]
    assert token.call_count == 1 and _bearers(sender) == ["Bearer for-peer-a"]
    update = json.loads(sender.calls.last.request.content)
    assert update["entry"][0]["resource"]["eventCoding"]["code"] == "referral-update"
