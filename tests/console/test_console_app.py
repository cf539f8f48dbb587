"""The console in process: when it is served, its headers, its thin layer (outbox, deliveries, replay, locate,
Subscriptions' owners), an operator's only when authentication is on."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from gateway import Settings, create_app
from gateway.config import AuthMode
from gateway.routing.config import RoutingTable
from gateway.store import Database
from gateway.store.outbox import DEAD
from gateway.store.unit_of_work import UnitOfWork
from tests.auth.conftest import token_of
from tests.conftest import EXAMPLES
from tests.notify.test_subscriptions import TASK_TOPIC, subscription
from tests.support.auth import TEST_SECRET, SmartClient, write_clients

PAGES = ["/console/examples", "/console/validate", "/console/referral", "/console/outbox", "/console/subscriptions",
         "/console/api"]  # fmt: skip
OPERATOR = SmartClient("console-ops", "operator", ["system/*.cruds"])
SUBSCRIBER = SmartClient(
    "cabinet-lilas", "practitioner", ["system/*.rs", "system/Subscription.crud"], rpps=["10100345676"],
    endpoints=["https://cabinet-lilas.example/fhir"],
)  # fmt: skip
FHIR_JSON = {"Content-Type": "application/fhir+json"}


@pytest.mark.parametrize(
    ("auth", "console", "served"),
    [("off", None, True), ("off", "off", False), ("on", None, False), ("on", "on", True)],
)
def test_the_console_is_on_by_default_only_with_authentication_off(
    auth: str, console: str | None, served: bool
) -> None:
    settings = Settings(auth=AuthMode(auth), console=AuthMode(console) if console else None)
    assert settings.console_enabled is served


async def test_every_page_is_served_with_a_policy_that_forbids_what_is_not_ours(client: httpx.AsyncClient) -> None:
    for path in PAGES:
        page = await client.get(path)
        assert page.status_code == 200, path
        policy = page.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "http" not in page.text.split("<main")[0].replace('href="/', "")  # no asset from elsewhere
    assert (await client.get("/console/static/console.js")).status_code == 200
    assert (await client.get("/console")).headers["location"] == "/console/examples"
    assert (await client.get("/docs")).status_code == 404  # its scripts came from a CDN: the API page replaces it


async def test_the_console_is_absent_when_turned_off(
    settings: Settings, database: Database, routing: RoutingTable
) -> None:
    app = create_app(settings.model_copy(update={"console": AuthMode.OFF}), database, routing)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test") as client:
        assert (await client.get("/console/examples")).status_code == 404
        assert (await client.get("/console/data/outbox")).status_code == 404


async def test_an_example_file_is_served_and_an_unknown_one_is_a_404(client: httpx.AsyncClient) -> None:
    served = await client.get("/console/examples/file/invalid/bad-ins-key.json")
    assert served.content == (EXAMPLES / "invalid" / "bad-ins-key.json").read_bytes()
    assert (await client.get("/console/examples/file/../pyproject.toml")).status_code == 404
    assert (await client.get("/console/examples/file/nothing.json")).status_code == 404


async def test_the_outbox_overview_and_the_replay_of_a_dead_letter(
    app: FastAPI, client: httpx.AsyncClient, database: Database
) -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    async with UnitOfWork(database) as uow:
        for n, destination in enumerate(["dac-75", "dac-75", "sender:https://user:pw@his.example.org/fhir?x=1"]):
            uow.outbox.enqueue(
                id=f"d{n}", destination=destination, endpoint="http://127.0.0.1:9/fhir", event="referral-request",
                payload={"focus": "ServiceRequest/sr1"}, now=now, task_id="t1" if n == 0 else None,
            )  # fmt: skip
        await uow.commit()
    async with UnitOfWork(database) as uow:
        await uow.outbox.claim("w", now, __import__("datetime").timedelta(seconds=5), 10)
        from gateway.store.outbox import Finished

        await uow.outbox.finish("w", [Finished("d1", DEAD, 12, now, "HTTP 400")])
        await uow.commit()
    overview = (await client.get("/console/data/outbox")).json()
    by_destination = {line["destination"]: line for line in overview["destinations"]}
    assert by_destination["dac-75"]["pending"] == 1 and by_destination["dac-75"]["dead"] == 1
    assert "sender:https://his.example.org/fhir" in by_destination  # no credentials, no query
    assert [(d["id"], d["last_error"]) for d in overview["dead_letters"]] == [("d1", "HTTP 400")]
    deliveries = (await client.get("/console/data/deliveries", params={"service_request": "sr1", "task": "t1"})).json()
    assert sorted(d["id"] for d in deliveries["deliveries"]) == ["d0", "d1", "d2"]
    assert (await client.post("/console/data/outbox/d0/replay")).status_code == 404  # not a dead letter
    assert (await client.post("/console/data/outbox/d1/replay")).status_code == 200
    assert (await client.get("/console/data/outbox")).json()["dead_letters"] == []


async def test_locate_answers_a_line_per_issue(client: httpx.AsyncClient) -> None:
    text = (EXAMPLES / "invalid" / "bad-ins-key.json").read_text()
    answer = await client.post(
        "/console/data/locate",
        json={"document": text, "issues": [{"expression": "Bundle.entry[1].resource.identifier[0].value"}, {}]},
    )
    line = answer.json()["lines"][0]
    assert "238115951221460" in text.splitlines()[line - 1]
    assert answer.json()["lines"][1] is None


async def test_the_subscriptions_owners_and_counts(client: httpx.AsyncClient) -> None:
    resource = subscription(TASK_TOPIC, ("Task?code=gp-validation",), endpoint="https://cabinet.example/hook")
    created = await client.post("/fhir/Subscription", json=resource, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    sub_id = created.json()["id"]
    answer = await client.get("/console/data/subscriptions")
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    [line] = answer.json()["subscriptions"]
    assert line["id"] == sub_id and line["topic"] == TASK_TOPIC and line["status"] == "requested"
    assert line["owner"] and line["events_count"] == 0 and line["notifications_count"] == 1  # the handshake
    assert line["destination"] == f"subscription/{sub_id}" and line["last_queued_at"].endswith("Z")


async def test_with_authentication_on_the_subscriptions_are_an_operators(
    database_url: str, tmp_path: Path, database: Database, routing: RoutingTable
) -> None:
    clients = write_clients(tmp_path, [OPERATOR, SUBSCRIBER])
    settings = Settings(
        database_url=database_url, auth="on", clients=clients, auth_secret=TEST_SECRET, console=AuthMode.ON
    )
    app = create_app(settings, database, routing)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test") as http:
        subscriber = await token_of(http, SUBSCRIBER)
        resource = subscription(TASK_TOPIC, endpoint="https://cabinet-lilas.example/fhir/notifications")
        created = await http.post("/fhir/Subscription", json=resource, headers=subscriber | FHIR_JSON)
        assert created.status_code == 201, created.text
        assert (await http.get("/console/subscriptions")).status_code == 200  # the page: no data in it
        assert (await http.get("/console/data/subscriptions")).status_code == 401
        refused = await http.get("/console/data/subscriptions", headers=subscriber)
        assert refused.status_code == 403 and "scope-insufficient" in refused.text
        operator = await token_of(http, OPERATOR)
        [line] = (await http.get("/console/data/subscriptions", headers=operator)).json()["subscriptions"]
        assert (line["id"], line["owner"]) == (created.json()["id"], "cabinet-lilas")
        # What the page reads through the FHIR API with the same token: every client's Subscriptions.
        found = (await http.get("/fhir/Subscription", headers=operator)).json()
        assert [e["resource"]["id"] for e in found["entry"]] == [line["id"]]
        status = await http.get(f"/fhir/Subscription/{line['id']}/$status", headers=operator)
        assert status.status_code == 200 and '"requested"' in status.text
