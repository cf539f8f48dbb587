"""Subscriptions (DESIGN §12) through the API with authentication off, their notifications delivered by the
outbox's worker to a mocked subscriber (respx): handshake, events numbered without gaps and sent in order, the
payload contents, JSON and XML, $status, $events, heartbeats, and every refusal naming its element."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from typing import Any

import httpx
import pytest
import respx
import sqlalchemy as sa
from lxml import etree

from gateway.fhir.primitives import utc_now
from gateway.notify.jobs import purge_events, send_heartbeats
from gateway.routing.config import RoutingTable
from gateway.routing.delivery import DeliverySettings, Dispatcher
from gateway.store import Database, UnitOfWork
from gateway.store.tables import outbox, subscription_events
from tests.conftest import load_example

HOOK = "https://subscriber.example/hook"
FHIR_JSON = {"content-type": "application/fhir+json"}
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
REFERRAL_STATUS = "https://fhir.dac-gateway.org/SubscriptionTopic/referral-status"
TASK_TOPIC = "https://fhir.dac-gateway.org/SubscriptionTopic/task"


def subscription(
    topic: str = REFERRAL_STATUS,
    filters: tuple[str, ...] = (),
    content: str = "full-resource",
    payload: str = "application/fhir+json",
    endpoint: str = HOOK,
    **channel: Any,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Subscription",
        "meta": {"profile": [f"{BACKPORT}/backport-subscription"]},
        "status": "requested",
        "reason": "tests",
        "criteria": topic,
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": payload,
            "_payload": {"extension": [{"url": f"{BACKPORT}/backport-payload-content", "valueCode": content}]},
            "header": ["X-Subscriber-Key: s3cret"],
        }
        | channel,
    }
    if filters:
        resource["_criteria"] = {
            "extension": [{"url": f"{BACKPORT}/backport-filter-criteria", "valueString": f} for f in filters]
        }
    return resource


def dispatcher(database: Database, routing: RoutingTable, client: httpx.AsyncClient) -> Dispatcher:
    # A retry waits (backoff) until ``due_now``: one attempt per round.
    settings = DeliverySettings(base_url="http://gateway.test/fhir", backoff_base=30, backoff_cap=60, max_attempts=3)
    return Dispatcher(database, routing, client, settings, rng=random.Random(3))


async def due_now(database: Database) -> None:
    async with database.engine.begin() as connection:
        await connection.execute(
            sa.update(outbox)
            .where(outbox.c.status == "pending")
            .values(next_attempt_at=utc_now() - timedelta(seconds=1))
        )


async def deliver(database: Database, routing: RoutingTable, rounds: int = 1) -> None:
    async with httpx.AsyncClient() as http:
        sender = dispatcher(database, routing, http)
        for _ in range(rounds):
            await due_now(database)
            await sender.deliver_due()


async def create(client: httpx.AsyncClient, resource: dict[str, Any], **headers: str) -> dict[str, Any]:
    answer = await client.post("/fhir/Subscription", json=resource, headers=FHIR_JSON | headers)
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    assert answer.headers["location"].endswith(f"/Subscription/{body['id']}/_history/1")
    return body


def status_of(bundle: dict[str, Any]) -> dict[str, Any]:
    """The subscription-status Parameters of a notification, as {name: value or [parts…]}."""
    parameters = bundle["entry"][0]["resource"]
    assert parameters["resourceType"] == "Parameters"
    found: dict[str, Any] = {}
    for parameter in parameters["parameter"]:
        if parameter["name"] == "notification-event":
            found.setdefault("events", []).append(
                {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in parameter["part"]}
            )
        else:
            found[parameter["name"]] = next(v for k, v in parameter.items() if k.startswith("value"))
    return found


def received(route: respx.Route) -> list[dict[str, Any]]:
    return [json.loads(call.request.content) for call in route.calls]


async def post_referral(client: httpx.AsyncClient, name: str = "referral-gp.json") -> str:
    answer = await client.post("/fhir", json=load_example(name), headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    return next(
        e["response"]["location"].split("/_history")[0]
        for e in answer.json()["entry"]
        if "ServiceRequest/" in e["response"]["location"]
    )


@respx.mock
async def test_handshake_makes_it_active_and_an_event_follows_in_order(
    client: httpx.AsyncClient, database: Database, routing: RoutingTable
) -> None:
    hook = respx.post(HOOK).mock(return_value=httpx.Response(200))
    respx.post(url__regex=r".*\$process-message").mock(return_value=httpx.Response(200))
    created = await create(client, subscription())
    assert created["status"] == "requested"
    service_request = await post_referral(client)  # before the handshake went: the event waits behind it
    async with UnitOfWork(database, write=False) as uow:
        queued = [e for e in await uow.outbox.entries() if e.destination.startswith("subscription/")]
    assert sorted(e.status for e in queued) == ["pending", "waiting"]
    await deliver(database, routing, rounds=3)
    handshake, event = received(hook)
    assert handshake["type"] == "history" and status_of(handshake)["type"] == "handshake"
    assert status_of(handshake)["status"] == "requested"
    assert hook.calls[0].request.headers["x-subscriber-key"] == "s3cret"
    assert hook.calls[0].request.headers["content-type"] == "application/fhir+json"
    status = status_of(event)
    assert status["type"] == "event-notification" and status["topic"] == REFERRAL_STATUS
    assert status["events-since-subscription-start"] == "1"
    (notified,) = status["events"]
    assert notified["event-number"] == "1" and notified["focus"]["reference"].endswith(service_request)
    assert event["entry"][1]["resource"]["resourceType"] == "ServiceRequest"  # full-resource
    assert event["entry"][1]["request"] == {"method": "POST", "url": "ServiceRequest"}
    read = (await client.get(f"/fhir/Subscription/{created['id']}")).json()
    assert read["status"] == "active"


@respx.mock
async def test_a_receiver_down_gets_every_event_once_in_order(
    client: httpx.AsyncClient, database: Database, routing: RoutingTable
) -> None:
    respx.post(url__regex=r".*\$process-message").mock(return_value=httpx.Response(200))
    up = {"up": True}
    hook = respx.post(HOOK).mock(side_effect=lambda request: httpx.Response(200 if up["up"] else 503))
    created = await create(client, subscription(content="id-only"))
    await deliver(database, routing)  # the handshake
    up["up"] = False
    for name in ("referral-gp.json", "referral-no-gp.json", "referral-social-worker.json"):
        await post_referral(client, name)
    await deliver(database, routing, rounds=2)  # refused twice: the first retried, the others wait behind it
    async with UnitOfWork(database, write=False) as uow:
        statuses = sorted(e.status for e in await uow.outbox.entries() if e.event == "subscription-event-notification")
    assert statuses == ["pending", "waiting", "waiting"]
    up["up"] = True
    await deliver(database, routing, rounds=4)
    delivered = [status_of(body) for body in received(hook) if status_of(body)["type"] == "event-notification"]
    numbers = [int(s["events"][0]["event-number"]) for s in delivered]
    assert sorted(set(numbers)) == [1, 2, 3]
    assert [n for i, n in enumerate(numbers) if i == 0 or n != numbers[i - 1]] == [1, 2, 3]  # in order, retries apart
    events = (await client.get(f"/fhir/Subscription/{created['id']}/$events", params={"eventsSinceNumber": "2"})).json()
    assert status_of(events)["type"] == "query-event"
    assert [e["event-number"] for e in status_of(events)["events"]] == ["2", "3"]


@respx.mock
async def test_filters_select_and_the_payload_is_xml(
    client: httpx.AsyncClient, database: Database, routing: RoutingTable
) -> None:
    respx.post(url__regex=r".*\$process-message").mock(return_value=httpx.Response(200))
    hook = respx.post(HOOK).mock(return_value=httpx.Response(200))
    await create(
        client,
        subscription(TASK_TOPIC, ("Task?code=platform-intake",), content="empty", payload="application/fhir+xml"),
    )
    await post_referral(client)  # a gp-information Task, a platform-intake Task: one event
    await deliver(database, routing, rounds=3)
    bodies = [call.request for call in hook.calls]
    assert all(request.headers["content-type"] == "application/fhir+xml" for request in bodies)
    roots = [etree.fromstring(request.content) for request in bodies]
    ns = {"f": "http://hl7.org/fhir"}
    kinds = [
        root.xpath(
            "string(f:entry[1]/f:resource/f:Parameters/f:parameter[f:name/@value='type']/f:valueCode/@value)",
            namespaces=ns,
        )
        for root in roots
    ]
    # The platform-intake Task created, then its businessStatus changed (delivered): two events; empty: no focus.
    assert kinds == ["handshake", "event-notification", "event-notification"]
    assert not roots[1].xpath("//f:parameter[f:name/@value='focus']", namespaces=ns)


async def test_unsupported_choices_are_refused_naming_the_element(client: httpx.AsyncClient) -> None:
    cases = {
        "subscription-topic-unsupported": (subscription("https://example.org/topic"), "Subscription.criteria"),
        "subscription-channel-unsupported": (subscription(type="websocket"), "Subscription.channel.type"),
        "subscription-payload-unsupported": (subscription(payload="application/json"), "Subscription.channel.payload"),
        "subscription-filter-unsupported": (
            subscription(filters=("Task?owner=Practitioner/1",)),
            f"Subscription.criteria.extension('{BACKPORT}/backport-filter-criteria')[0].valueString",
        ),
    }
    for code, (resource, expression) in cases.items():
        answer = await client.post("/fhir/Subscription", json=resource, headers=FHIR_JSON)
        assert answer.status_code == 422, (code, answer.text)
        issue = answer.json()["issue"][0]
        assert issue["details"]["coding"][0]["code"] == code
        assert issue["expression"] == [expression]
    no_reason = {k: v for k, v in subscription().items() if k != "reason"}
    answer = await client.post("/fhir/Subscription", json=no_reason, headers=FHIR_JSON)
    assert answer.status_code == 422 and answer.json()["issue"][0]["expression"] == ["Subscription.reason"]
    bad_content = subscription(content="everything")
    answer = await client.post("/fhir/Subscription", json=bad_content, headers=FHIR_JSON)
    assert answer.json()["issue"][0]["details"]["coding"][0]["code"] == "subscription-payload-unsupported"
    unknown = subscription(filters=("ServiceRequest?subject:missing=true",))
    answer = await client.post("/fhir/Subscription", json=unknown, headers=FHIR_JSON)
    assert answer.status_code == 422 and "subject" in answer.json()["issue"][0]["diagnostics"]


async def test_only_the_status_changes_and_delete_ends_it(client: httpx.AsyncClient, database: Database) -> None:
    created = await create(client, subscription())
    url = f"/fhir/Subscription/{created['id']}"
    moved = created | {"channel": created["channel"] | {"endpoint": "https://elsewhere.example/hook"}}
    refused = await client.put(url, json=moved, headers=FHIR_JSON)
    assert refused.status_code == 422
    assert refused.json()["issue"][0]["details"]["coding"][0]["code"] == "subscription-change-not-allowed"
    off = await client.put(url, json=created | {"status": "off"}, headers=FHIR_JSON | {"If-Match": 'W/"1"'})
    assert off.status_code == 200 and off.json()["status"] == "off" and off.json()["meta"]["versionId"] == "2"
    async with UnitOfWork(database, write=False) as uow:
        (handshake,) = await uow.outbox.entries()
    assert handshake.status == "dead" and "off" in (handshake.last_error or "")  # not sent: it was ended
    found = (await client.get("/fhir/Subscription", params={"status": "off"})).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [created["id"]]
    status = (await client.get(f"{url}/$status")).json()
    assert status["type"] == "searchset" and status_of(status)["type"] == "query-status"
    assert status_of(status)["status"] == "off"
    assert (await client.delete(url)).status_code == 204
    assert (await client.get(url)).status_code == 404


@respx.mock
async def test_a_handshake_never_taken_puts_it_in_error(
    client: httpx.AsyncClient, database: Database, routing: RoutingTable
) -> None:
    respx.post(HOOK).mock(return_value=httpx.Response(503))
    created = await create(client, subscription())
    await deliver(database, routing, rounds=3)  # max_attempts 3
    read = (await client.get(f"/fhir/Subscription/{created['id']}")).json()
    assert read["status"] == "error" and read["error"]


@respx.mock
async def test_heartbeats_and_the_purge(client: httpx.AsyncClient, database: Database, routing: RoutingTable) -> None:
    hook = respx.post(HOOK).mock(return_value=httpx.Response(200))
    period = {"url": f"{BACKPORT}/backport-heartbeat-period", "valueUnsignedInt": 60}
    created = await create(client, subscription(extension=[period]))
    await deliver(database, routing)
    assert await send_heartbeats(database, "http://gateway.test/fhir") == 0  # something was just sent
    async with database.engine.begin() as connection:
        from gateway.store.tables import subscriptions

        await connection.execute(sa.update(subscriptions).values(last_queued_at=utc_now() - timedelta(seconds=61)))
    assert await send_heartbeats(database, "http://gateway.test/fhir") == 1
    await deliver(database, routing)
    assert status_of(received(hook)[-1])["type"] == "heartbeat"
    async with database.engine.begin() as connection:
        await connection.execute(
            sa.insert(subscription_events).values(
                subscription_id=created["id"], event_number=1, occurred_at=utc_now() - timedelta(days=8),
                focus_type="Task", focus_id="x", focus_version=1,
            )
        )  # fmt: skip
    assert await purge_events(database) == 1


@pytest.mark.parametrize("content", ["empty", "id-only", "full-resource"])
async def test_events_answers_each_content(client: httpx.AsyncClient, content: str) -> None:
    created = await create(client, subscription(content="empty"))
    service_request = await post_referral(client)
    events = await client.get(f"/fhir/Subscription/{created['id']}/$events", params={"content": content})
    assert events.status_code == 200, events.text
    bundle = events.json()
    (event,) = status_of(bundle)["events"]
    assert event["event-number"] == "1"
    assert ("focus" in event) is (content != "empty")
    assert (len(bundle["entry"]) == 2) is (content == "full-resource")
    if content == "full-resource":
        assert bundle["entry"][1]["fullUrl"].endswith(service_request)


async def _events_of(database: Database, subscription_id: str) -> list[tuple[int, str, str]]:
    """(event number, focus, its status as queued) of a Subscription's events, from the outbox's notifications."""
    async with UnitOfWork(database, write=False) as uow:
        entries = [
            e for e in await uow.outbox.entries(limit=1000) if e.destination == f"subscription/{subscription_id}"
        ]
    found = []
    for entry in sorted(entries, key=lambda e: e.id):
        bundle = json.loads(entry.payload["post"]["body"])
        status = status_of(bundle)
        if status["type"] == "event-notification":
            resource = bundle["entry"][1]["resource"]
            found.append(
                (
                    int(status["events"][0]["event-number"]),
                    f"{resource['resourceType']}/{resource['id']}",
                    resource["status"],
                )
            )
    return found


async def test_an_escalation_is_notified(client: httpx.AsyncClient, database: Database, routing: RoutingTable) -> None:
    from datetime import UTC, datetime

    from gateway.workflow.deadlines import escalate_due
    from tests.workflow.test_decisions_api import pta_2016_referral

    created = await create(client, subscription(TASK_TOPIC, ("Task?code=contact-gp",)))
    answer = await client.post("/fhir", json=pta_2016_referral("-escalated"), headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    assert await _events_of(database, created["id"]) == []  # held for the GP: no contact-gp Task yet
    assert await escalate_due(database, datetime.now(UTC) + timedelta(days=60), routing=routing) == 1
    ((number, focus, status),) = await _events_of(database, created["id"])
    assert number == 1 and focus.startswith("Task/") and status == "requested"


async def test_an_opposition_is_notified_as_the_referral_revoked(client: httpx.AsyncClient, database: Database) -> None:
    from tests.workflow.test_opposition import _consent_deny, _ins

    bundle = load_example("referral-gp.json")
    created = await create(client, subscription(REFERRAL_STATUS, ("ServiceRequest?status=revoked",)))
    service_request = await post_referral(client)
    answer = await client.post("/fhir/Consent", json=_consent_deny(_ins(bundle)), headers=FHIR_JSON)
    assert answer.status_code == 201, answer.text
    assert await _events_of(database, created["id"]) == [(1, service_request, "revoked")]


@respx.mock
async def test_max_count_lets_waiting_events_share_a_notification(
    client: httpx.AsyncClient, database: Database, routing: RoutingTable
) -> None:
    respx.post(url__regex=r".*\$process-message").mock(return_value=httpx.Response(200))
    up = {"up": True}
    hook = respx.post(HOOK).mock(side_effect=lambda request: httpx.Response(200 if up["up"] else 503))
    most = {"url": f"{BACKPORT}/backport-max-count", "valuePositiveInt": 2}
    await create(client, subscription(extension=[most]))
    await deliver(database, routing)  # the handshake
    up["up"] = False
    names = ("referral-gp.json", "referral-no-gp.json", "referral-social-worker.json", "referral-corsica.json")
    references = [await post_referral(client, name) for name in names]
    await deliver(database, routing)  # event 1 refused; 2 and 3 wait in one notification, 4 in the next
    up["up"] = True
    await deliver(database, routing, rounds=4)
    notified = [b for b in received(hook) if status_of(b)["type"] == "event-notification"]
    carried = [[int(e["event-number"]) for e in status_of(b)["events"]] for b in notified]
    assert [numbers for i, numbers in enumerate(carried) if i == 0 or numbers != carried[i - 1]] == [[1], [2, 3], [4]]
    last_two = [e["resource"]["id"] for e in notified[-2]["entry"][1:]]
    assert last_two == [reference.split("/")[1] for reference in references[1:3]]  # full-resource: both
    assert status_of(notified[-2])["events-since-subscription-start"] == "3"


@respx.mock
async def test_events_sharing_a_notification_carry_their_focus_as_of_the_last(
    client: httpx.AsyncClient, database: Database, routing: RoutingTable
) -> None:
    """Two events about one referral in one notification (max-count): full-resource carries it as of the later
    one — revoked, not as it was when created (the subscriber never saw it revoked)."""
    from tests.workflow.test_opposition import _consent_deny, _ins

    respx.post(url__regex=r".*\$process-message").mock(return_value=httpx.Response(200))
    up = {"up": True}
    hook = respx.post(HOOK).mock(side_effect=lambda request: httpx.Response(200 if up["up"] else 503))
    most = {"url": f"{BACKPORT}/backport-max-count", "valuePositiveInt": 5}
    await create(client, subscription(extension=[most]))
    await deliver(database, routing)  # the handshake
    up["up"] = False
    await post_referral(client, "referral-no-gp.json")
    await deliver(database, routing)  # event 1 refused: the next ones wait
    service_request = await post_referral(client, "referral-gp.json")  # event 2
    consent = _consent_deny(_ins(load_example("referral-gp.json")))
    assert (await client.post("/fhir/Consent", json=consent, headers=FHIR_JSON)).status_code == 201  # event 3
    up["up"] = True
    await deliver(database, routing, rounds=4)
    (shared,) = [b for b in received(hook) if [e["event-number"] for e in status_of(b).get("events", [])] == ["2", "3"]]
    (entry,) = [e for e in shared["entry"][1:] if e["fullUrl"].endswith(service_request)]
    assert entry["resource"]["status"] == "revoked"
