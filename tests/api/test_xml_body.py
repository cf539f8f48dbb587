"""An XML body is read off the event loop, within GATEWAY_PARSE_TIME_BUDGET (issue 23: fhir.resources' reading
of a large document held the event loop for seconds)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path
from unittest import mock

import httpx
import pytest

from gateway import Settings, create_app
from gateway.api import deps
from gateway.fhir.codec import parse_resource
from gateway.fhir.media import FhirFormat
from gateway.fhir.types import Resource
from gateway.routing.config import RoutingTable
from gateway.store import Database

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
XML = {"content-type": "application/fhir+xml"}


async def test_xml_is_read_in_another_thread_than_the_event_loop(client: httpx.AsyncClient) -> None:
    threads: list[int] = []

    def recording(body: bytes, fmt: FhirFormat) -> Resource:
        threads.append(threading.get_ident())
        return parse_resource(body, fmt)

    with mock.patch.object(deps, "parse_resource", recording):
        answer = await client.post(
            "/fhir/$validate", content=(EXAMPLES / "referral-hospital-nurse.xml").read_bytes(), headers=XML
        )
        json_answer = await client.post("/fhir/Patient/$validate", json={"resourceType": "Patient"})
    assert answer.status_code == 200, answer.text
    assert json_answer.status_code == 200, json_answer.text
    xml_thread, json_thread = threads
    assert xml_thread != threading.get_ident()  # the XML's: a worker thread
    assert json_thread == threading.get_ident()  # orjson's microseconds stay on the loop


@pytest.fixture
async def hurried(database_url: str, database: Database, routing: RoutingTable) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(database_url=database_url, auth="off", parse_time_budget=0.05)
    app = create_app(settings, database, routing)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test") as http:
        yield http


async def test_an_xml_body_over_its_time_budget_is_503_and_nothing_is_stored(hurried: httpx.AsyncClient) -> None:
    release = threading.Event()

    def slow(body: bytes, fmt: FhirFormat) -> Resource:
        release.wait(5)  # longer than the budget: the answer does not wait for it
        return parse_resource(body, fmt)

    with mock.patch.object(deps, "parse_resource", slow):
        answer = await hurried.post(
            "/fhir", content=(EXAMPLES / "referral-hospital-nurse.xml").read_bytes(), headers=XML
        )
    release.set()
    assert answer.status_code == 503, answer.text
    issue = answer.json()["issue"][0]
    assert (issue["code"], issue["details"]["coding"][0]["code"]) == ("transient", "body-time-budget-exceeded")
    assert (await hurried.get("/fhir/ServiceRequest")).json().get("total") == 0
