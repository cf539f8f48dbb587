"""Property-based tests (hypothesis) over intake: the example referrals, mutated at random — elements deleted,
duplicated, retyped, replaced by odd unicode, numbers for strings, huge values — are always either accepted or
refused with a client error; through the HTTP application, never a 5xx and never a stack trace."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import Settings, create_app
from gateway.config import EXAMPLE_ROUTING
from gateway.errors import GatewayError
from gateway.fhir.codec import parse_resource
from gateway.fhir.media import FhirFormat
from gateway.intake.reading import read_referral
from gateway.routing.config import load_routing
from gateway.store import Database
from gateway.validation.validate import validate
from tests.support.fuzz import fuzz_settings, mutated_referrals

pytestmark = pytest.mark.fuzz
FUZZ = fuzz_settings(200)


@FUZZ
@given(mutated_referrals())
def test_a_mutated_referral_is_read_or_refused_with_a_client_error(bundle: dict[str, Any]) -> None:
    body = json.dumps(bundle).encode()
    try:
        resource = parse_resource(body, FhirFormat.JSON)
        kind = resource.get("type")
        validate(resource)
        read_referral(resource, kind if kind in ("transaction", "message") else "transaction")
    except GatewayError as error:
        assert 400 <= error.status_code < 500, error


class LoopClient:
    """Requests to the ASGI application, all from one event loop of our own (a hypothesis test is synchronous,
    and the database's connections belong to the loop that opened them)."""

    def __init__(self, app: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test")

    def post(self, path: str, body: bytes) -> httpx.Response:
        headers = {"content-type": "application/fhir+json"}
        return self.loop.run_until_complete(self.client.post(path, content=body, headers=headers))

    def close(self, database: Database) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.run_until_complete(database.dispose())
        self.loop.close()


@pytest.fixture(scope="module")
def gateway_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopClient]:
    """The HTTP application on a database of its own."""
    from gateway.store.migrate import upgrade
    from tests.support.databases import drop_scratch_database, scratch_database_url

    url = scratch_database_url(tmp_path_factory.mktemp("intake-fuzz"))
    upgrade(url)
    database = Database(url)
    gateway_settings = Settings(database_url=url, max_body_bytes=1_000_000, auth="off")
    client = LoopClient(create_app(gateway_settings, database, load_routing(EXAMPLE_ROUTING)))
    yield client
    client.close(database)
    drop_scratch_database(url)


@fuzz_settings(80)
@given(bundle=mutated_referrals(), message=st.booleans())
def test_through_http_a_mutated_referral_is_never_a_server_error(
    gateway_app: LoopClient, bundle: dict[str, Any], message: bool
) -> None:
    answer = gateway_app.post("/fhir/$process-message" if message else "/fhir", json.dumps(bundle).encode())
    assert answer.status_code < 500, answer.text[:2000]
    assert "Traceback" not in answer.text and 'File "' not in answer.text
    if answer.status_code >= 400:
        outcome = answer.json()
        assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"], outcome
