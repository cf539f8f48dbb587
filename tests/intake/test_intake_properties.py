"""Property-based tests (hypothesis) over intake: the example referrals, mutated at random — elements deleted,
duplicated, retyped, replaced by odd unicode, numbers for strings, huge values — are always either accepted or
refused with a client error; through the HTTP application, never a 5xx and never a stack trace."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterator
from pathlib import Path
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
from gateway.intake.referral import read_referral
from gateway.routing.config import load_routing
from gateway.store import Database
from gateway.validation.validate import validate
from tests.support.fuzz import fuzz_settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
REFERRALS = {
    path.name: json.loads(path.read_text(encoding="utf-8"))
    for path in sorted(EXAMPLES.glob("*.json"))
    if json.loads(path.read_text(encoding="utf-8")).get("type") in ("transaction", "message")
}
Path_ = tuple[str | int, ...]

odd_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),  # any unicode: control characters, surrogates' neighbours, RTL marks
    st.sampled_from(["", " ", "\u202e", "null", "Patient/", "urn:uuid:", "#", "../../etc", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "1" * 5000]),
    st.builds(lambda n: "x" * n, st.sampled_from([10_000, 200_000])),
    st.just([]),
    st.just({}),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.sampled_from(["reference", "value", "system", "url"]), st.text(max_size=10), max_size=2),
)


def _paths(node: Any, path: Path_ = ()) -> Iterator[Path_]:
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*path, index))


def _parent(document: Any, path: Path_) -> Any:
    for step in path[:-1]:
        document = document[step]
    return document


def _mutate(document: Any, path: Path_, operation: str, value: Any) -> None:
    if not path:
        return
    parent, last = _parent(document, path), path[-1]
    if operation == "delete":
        del parent[last]
    elif operation == "duplicate" and isinstance(parent, list):
        parent.insert(int(last), copy.deepcopy(parent[int(last)]))
    elif operation == "duplicate":
        parent[last] = [copy.deepcopy(parent[last]), copy.deepcopy(parent[last])]
    elif operation == "unwrap" and isinstance(parent[last], list) and parent[last]:
        parent[last] = parent[last][0]  # a list where one element is expected, and the converse
    elif operation == "stringify":
        parent[last] = json.dumps(parent[last]) if not isinstance(parent[last], str) else 12345
    else:
        parent[last] = value


@st.composite
def mutated_referrals(draw: st.DrawFn) -> dict[str, Any]:
    bundle = copy.deepcopy(REFERRALS[draw(st.sampled_from(sorted(REFERRALS)))])
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(bundle))
        path = draw(st.sampled_from(paths))
        operation = draw(st.sampled_from(["delete", "duplicate", "unwrap", "stringify", "replace", "replace"]))
        _mutate(bundle, path, operation, draw(odd_values))
    return bundle


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
    gateway_settings = Settings(database_url=url, max_body_bytes=1_000_000)
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
