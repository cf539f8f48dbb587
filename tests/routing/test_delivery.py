"""The delivery worker against a mocked platform (respx): every class of answer, retries, dead letters."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from typing import Any

import httpx
import pytest
import respx
import sqlalchemy as sa

from gateway.fhir.primitives import utc_now
from gateway.intake import read_referral, take_in
from gateway.routing.config import RoutingTable
from gateway.routing.delivery import DeliverySettings, Dispatcher, direct_transport, http_client
from gateway.routing.retry import Verdict, backoff, judge_response, parse_retry_after
from gateway.routing.transport import ShardedTransport
from gateway.store import Database, UnitOfWork
from gateway.store.tables import outbox
from tests.conftest import load_example
from tests.support.referrals import fresh

BASE = "http://gateway.test/fhir"
PARIS = "https://dac75.example.org/fhir/$process-message"  # referral-gp.json: Nantes → the default platform


def _dispatcher(database: Database, routing: RoutingTable, client: httpx.AsyncClient, **overrides: Any) -> Dispatcher:
    settings = DeliverySettings(base_url=BASE, backoff_base=0.001, backoff_cap=0.002, **overrides)
    return Dispatcher(database, routing, client, settings, rng=random.Random(7))


async def _referral(database: Database, routing: RoutingTable, name: str = "referral-gp.json") -> str:
    outcome = await take_in(database, read_referral(load_example(name), "transaction"), routing)
    return outcome.service_request_id


async def _intake_task(database: Database, service_request_id: str) -> dict[str, Any]:
    from gateway.fhir.search import parse_search

    async with UnitOfWork(database, write=False) as uow:
        _, tasks = await uow.resources.search(
            parse_search(
                "Task",
                [("focus", f"ServiceRequest/{service_request_id}"), ("code", "platform-intake")],
                default_count=5,
                max_count=5,
            )
        )
    (task,) = tasks
    return task.content


async def _entries(database: Database) -> list[Any]:
    async with UnitOfWork(database, write=False) as uow:
        return await uow.outbox.entries()


async def _due_now(database: Database) -> None:
    """Skip the backoff wait: make every pending entry due (tests only)."""
    import sqlalchemy as sa

    from gateway.store.tables import outbox

    async with database.engine.begin() as connection:
        await connection.execute(sa.update(outbox).values(next_attempt_at=utc_now() - timedelta(seconds=1)))


@respx.mock
async def test_delivered_message_and_task(database: Database, routing: RoutingTable) -> None:
    service_request_id = await _referral(database, routing)
    route = respx.post(PARIS).mock(return_value=httpx.Response(200, json={"resourceType": "Bundle", "type": "message"}))
    async with httpx.AsyncClient() as client:
        assert await _dispatcher(database, routing, client).deliver_due() == 1
    (entry,) = await _entries(database)
    assert entry.status == "delivered" and entry.attempts == 1
    message = json.loads(route.calls.last.request.content)
    header = message["entry"][0]["resource"]
    assert header["id"] == entry.id and header["eventCoding"]["code"] == "referral-request"
    assert header["focus"] == [{"reference": f"{BASE}/ServiceRequest/{service_request_id}"}]
    kinds = {e["resource"]["resourceType"] for e in message["entry"]}
    assert {
        "MessageHeader",
        "ServiceRequest",
        "Patient",
        "PractitionerRole",
        "Practitioner",
        "CareTeam",
        "Consent",
        "Task",
    } <= kinds
    assert route.calls.last.request.headers["content-type"] == "application/fhir+json"
    task = await _intake_task(database, service_request_id)
    assert task["businessStatus"]["coding"][0]["code"] == "delivered"


@respx.mock
async def test_retries_keep_the_message_id_then_deliver(database: Database, routing: RoutingTable) -> None:
    await _referral(database, routing)
    route = respx.post(PARIS).mock(
        side_effect=[httpx.Response(503), httpx.ConnectError("refused"), httpx.Response(500), httpx.Response(202)]
    )
    async with httpx.AsyncClient() as client:
        dispatcher = _dispatcher(database, routing, client)
        for _ in range(4):
            await _due_now(database)
            await dispatcher.deliver_due()
    ids = {json.loads(call.request.content)["entry"][0]["resource"]["id"] for call in route.calls}
    assert route.call_count == 4 and len(ids) == 1
    (entry,) = await _entries(database)
    assert entry.status == "delivered" and entry.attempts == 4


@respx.mock
async def test_client_error_is_a_dead_letter_shown_on_the_task(database: Database, routing: RoutingTable) -> None:
    service_request_id = await _referral(database, routing)
    respx.post(PARIS).mock(return_value=httpx.Response(400, json={"resourceType": "OperationOutcome"}))
    async with httpx.AsyncClient() as client:
        await _dispatcher(database, routing, client).deliver_due()
    (entry,) = await _entries(database)
    assert entry.status == "dead" and entry.last_error.startswith("HTTP 400")
    task = await _intake_task(database, service_request_id)
    assert task["businessStatus"]["coding"][0]["code"] == "failed"
    assert "HTTP 400" in task["note"][-1]["text"]
    # replayed under the same id
    async with UnitOfWork(database) as uow:
        assert await uow.outbox.replay(entry.id, utc_now())
        await uow.commit()
    respx.post(PARIS).mock(return_value=httpx.Response(200))
    async with httpx.AsyncClient() as client:
        await _dispatcher(database, routing, client).deliver_due()
    (again,) = await _entries(database)
    assert (again.id, again.status) == (entry.id, "delivered")


@respx.mock
async def test_retries_run_out(database: Database, routing: RoutingTable) -> None:
    await _referral(database, routing)
    respx.post(PARIS).mock(return_value=httpx.Response(502))
    async with httpx.AsyncClient() as client:
        dispatcher = _dispatcher(database, routing, client, max_attempts=3)
        for _ in range(3):
            await _due_now(database)
            await dispatcher.deliver_due()
    (entry,) = await _entries(database)
    assert (entry.status, entry.attempts) == ("dead", 3)


@respx.mock
async def test_retry_after_is_honoured(database: Database, routing: RoutingTable) -> None:
    await _referral(database, routing)
    respx.post(PARIS).mock(return_value=httpx.Response(429, headers={"Retry-After": "120"}))
    async with httpx.AsyncClient() as client:
        dispatcher = Dispatcher(database, routing, client, DeliverySettings(base_url=BASE, backoff_cap=3600))
        before = utc_now()
        await dispatcher.deliver_due()
    (entry,) = await _entries(database)
    assert entry.status == "pending" and entry.next_attempt_at >= before + timedelta(seconds=119)


@respx.mock
async def test_one_platform_down_does_not_hold_another(database: Database, routing: RoutingTable) -> None:
    await _referral(database, routing)  # → Paris (default)
    await _referral(database, routing, "referral-overseas.json")  # → La Réunion
    respx.post(PARIS).mock(side_effect=httpx.ReadTimeout("slow"))
    reunion = respx.post("https://dac974.example.org/fhir/$process-message").mock(return_value=httpx.Response(200))
    async with httpx.AsyncClient() as client:
        await Dispatcher(database, routing, client, DeliverySettings(base_url=BASE)).deliver_due()
    statuses = {entry.destination: entry.status for entry in await _entries(database)}
    assert statuses == {"dac-75": "pending", "dac-974": "delivered"}
    assert reunion.call_count == 1


@respx.mock
async def test_bearer_token_from_the_environment(
    database: Database, routing: RoutingTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAC59_METROPOLE_TOKEN", "s3cret")
    await _referral(database, routing, "referral-hospital-nurse.json")  # Roubaix → dac-59-metropole, bearer auth
    route = respx.post("https://dac59-lille.example.org/fhir/$process-message").mock(return_value=httpx.Response(200))
    async with httpx.AsyncClient() as client:
        await _dispatcher(database, routing, client).deliver_due()
    assert route.calls.last.request.headers["authorization"] == "Bearer s3cret"


@respx.mock
async def test_an_expired_lease_is_taken_again(database: Database, routing: RoutingTable) -> None:
    await _referral(database, routing)
    async with UnitOfWork(database) as uow:  # a worker leases the entry, then dies before answering
        (claimed,) = await uow.outbox.claim("dead-worker", utc_now(), timedelta(seconds=-1), 10)
        await uow.commit()
    respx.post(PARIS).mock(return_value=httpx.Response(200))
    async with httpx.AsyncClient() as client:
        assert await _dispatcher(database, routing, client).deliver_due() == 1
    (entry,) = await _entries(database)
    assert (entry.id, entry.status) == (claimed.id, "delivered")


def test_judge_and_backoff() -> None:
    now = utc_now()
    assert judge_response(201, None, "", now).verdict is Verdict.DELIVERED
    for status in (408, 429, 500, 503, 504):
        assert judge_response(status, None, "", now).verdict is Verdict.RETRY
    for status in (400, 401, 403, 404, 409, 422):
        assert judge_response(status, None, "", now).verdict is Verdict.DEAD
    assert parse_retry_after("30", now) == 30
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now) == 0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("\u00b2", now) is None  # latin-1 '²': str.isdigit, not a number (raised before)
    rng = random.Random(1)
    delays = [backoff(n, base=2, cap=60, retry_after=None, rng=rng) for n in range(1, 9)]
    assert all(1 <= d <= 60 for d in delays) and delays[-1] > delays[0]
    assert backoff(1, base=2, cap=60, retry_after=45, rng=rng) >= 45


@respx.mock
async def test_posting_straight_to_the_transport_is_what_the_client_sends(
    database: Database, routing: RoutingTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker hands its messages to its client's transport straight (``direct_transport``), past the client's
    per-request machinery: the platform sees the same request (the client's default headers, cookies it set, the
    time limits) and the answers make the same outcomes."""
    refused = httpx.Response(400, json={"resourceType": "OperationOutcome", "issue": [{"code": "invalid"}]})
    referrals = (  # the platform's answers to each referral's attempts
        [httpx.Response(503, headers={"Retry-After": "30"}), httpx.ConnectError("refused"), httpx.Response(200)],
        [httpx.Response(200, headers={"Set-Cookie": "route=b; Path=/"})],
        [refused],
    )
    seen: dict[str, list[Any]] = {}
    for mode in ("client", "direct"):
        transport = ShardedTransport()
        respx.reset()  # the calls of this mode only
        route = respx.post(PARIS).mock(side_effect=[answer for answers in referrals for answer in answers])
        async with http_client(7.0, transport) as client:
            if mode == "direct":
                monkeypatch.setattr(client, "post", None)  # not through the client
            dispatcher = _dispatcher(database, routing, client)
            dispatcher.transport = direct_transport(transport) if mode == "direct" else None
            observed = seen[mode] = []
            for answers in referrals:
                await take_in(database, read_referral(fresh("referral-gp.json"), "transaction"), routing)
                for _ in answers:
                    await _due_now(database)
                    await dispatcher.deliver_due()
                outcomes = sorted((e.status, e.attempts, (e.last_error or "")[:8]) for e in await _entries(database))
                observed.append(outcomes)
        observed += [
            (
                {k: v for k, v in call.request.headers.items() if k != "content-length"},
                call.request.extensions["timeout"],
            )
            for call in route.calls
        ]
        async with database.engine.begin() as connection:  # the next mode starts from an empty outbox
            await connection.execute(sa.delete(outbox))
    assert seen["direct"] == seen["client"]
    assert seen["direct"][2] == [("dead", 1, "HTTP 400"), ("delivered", 1, ""), ("delivered", 3, "")]
    headers, timeout = seen["direct"][3]
    assert headers["user-agent"] == "dac-gateway" and headers["content-type"] == "application/fhir+json"
    assert timeout == {"connect": 5.0, "read": 7.0, "write": 7.0, "pool": 7.0}
    assert "cookie" not in headers and seen["direct"][-1][0]["cookie"] == "route=b"  # the platform's, sent back


def test_no_straight_posting_where_the_environment_names_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Proxies (and the hosts that skip them) are applied by the client alone: with any of them set, deliveries go
    through it."""
    transport = ShardedTransport()
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    assert direct_transport(transport) is transport
    for name in ("HTTPS_PROXY", "no_proxy"):
        with monkeypatch.context() as env:
            env.setenv(name, "http://proxy.example:3128" if name.endswith("PROXY") else "platform.example")
            assert direct_transport(transport) is None
