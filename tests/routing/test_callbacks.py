"""Callbacks only where registered (DESIGN §11): a message's MessageHeader.source.endpoint is where updates go
back, so with authentication on it must be https and under one of the posting client's registered endpoints."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from gateway.auth.clients import AuthConfigError, load_clients
from gateway.routing.callbacks import registered_endpoint
from gateway.store import Database, UnitOfWork
from tests.auth.conftest import OPERATOR, SENDER, token_of
from tests.support.auth import SmartClient, write_clients
from tests.support.referrals import as_message, fresh

FHIR_JSON = {"content-type": "application/fhir+json"}
REGISTERED = ["https://cabinet.example.org/fhir", "https://other.example.org:8443/"]
SOURCE = "Bundle.entry[0].resource.source.endpoint"


@pytest.mark.parametrize(
    ("url", "registered"),
    [
        ("https://cabinet.example.org/fhir", True),
        ("https://cabinet.example.org/fhir/", True),
        ("https://cabinet.example.org/fhir/updates", True),
        ("https://CABINET.Example.ORG/fhir", True),  # host case
        ("https://cabinet.example.org:443/fhir", True),  # the default port is the same port
        ("https://other.example.org:8443/any/path", True),  # a registered origin: anything under it
        ("https://cabinet.example.org/fhir/a/../b", True),  # as httpx sends it: /fhir/b
        ("http://cabinet.example.org/fhir", False),  # not https
        ("https://cabinet.example.org/fhirx", False),  # a path continuing only after a '/'
        ("https://cabinet.example.org/", False),
        ("https://cabinet.example.org/fhir/../admin", False),  # sent as /admin
        ("https://cabinet.example.org/fhir/%2e%2e/admin", False),  # encoded dot segment
        ("https://cabinet.example.org/fhir%2F..%2Fadmin", False),  # encoded slash
        ("https://cabinet.example.org/fhir/%5C../admin", False),  # encoded backslash
        ("https://cabinet.example.org:8443/fhir", False),  # another port
        ("https://other.example.org/any", False),  # the default port, not 8443
        ("https://evil.example/fhir", False),
        ("https://cabinet.example.org@evil.example/fhir", False),  # user-info: the host is evil.example
        ("https://user:pw@cabinet.example.org/fhir", False),  # credentials in a callback
        ("https://cabinet.example.org.evil.example/fhir", False),
        ("https://cabinet.example.org/fhir?next=https://evil.example", False),
        ("https://cabinet.example.org/fhir#x", False),
        ("https://cabinet.example.org\\@evil.example/fhir", False),
        ("https://[::1]/fhir", False),
        ("https:///fhir", False),
        ("urn:oid:1.2.250.1.71.4.2.2", False),
        ("https://cabinet.example.org/" + "a/" * 600, False),  # longer than an endpoint is stored
    ],
)
def test_a_callback_is_registered_when_under_a_registered_endpoint(url: str, registered: bool) -> None:
    assert registered_endpoint(url, REGISTERED) is registered


@pytest.mark.parametrize(
    ("url", "registered"),
    [
        ("http://127.0.0.1:8081/fhir", True),  # a gateway on this machine (tests, development)
        ("http://127.0.0.1:8081/fhir/x", True),
        ("http://127.0.0.1:8082/fhir", False),  # another port
        ("http://localhost:8081/fhir", False),  # another host, though the same machine
        ("https://127.0.0.1:8081/fhir", False),  # another scheme than the registered one
        ("http://10.0.0.1:8081/fhir", False),  # plain http off this machine: never
    ],
)
def test_plain_http_is_taken_on_a_loopback_host_only(url: str, registered: bool) -> None:
    endpoints = ["http://127.0.0.1:8081/fhir", "http://10.0.0.1:8081/fhir"]
    assert registered_endpoint(url, endpoints) is registered


@pytest.mark.parametrize("endpoint", ["http://cabinet.example.org/fhir", "https://u@cabinet.example.org/", "nope"])
def test_a_registered_endpoint_is_an_https_url(tmp_path: Path, endpoint: str) -> None:
    path = write_clients(tmp_path, [SmartClient("cabinet", "sender", ["system/*.rs"], endpoints=[endpoint])])
    with pytest.raises(AuthConfigError, match="endpoint"):
        load_clients(path, frozenset())


def test_registered_endpoints_are_read(tmp_path: Path) -> None:
    path = write_clients(tmp_path, [SmartClient("cabinet", "sender", ["system/*.rs"], endpoints=REGISTERED)])
    client = load_clients(path, frozenset()).get("cabinet")
    assert client is not None and client.endpoints == tuple(REGISTERED)


async def _origin(database: Database, answer: httpx.Response) -> str | None:
    service_request = answer.json()["entry"][1]["resource"]
    async with UnitOfWork(database, write=False) as uow:
        return (await uow.outbox.origins_of([service_request["id"]])).get(service_request["id"])


async def _service_requests(http: httpx.AsyncClient, headers: dict[str, str], identifier: str) -> int:
    found = await http.get("/fhir/ServiceRequest", params={"identifier": identifier}, headers=headers)
    assert found.status_code == 200, found.text
    return int(found.json()["total"])


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://logiciel-medecin.example.org/fhir",  # registered, but not https
        "https://attacker.example/fhir",
        "https://logiciel-medecin.example.org.attacker.example/fhir",
        "https://logiciel-medecin.example.org@attacker.example/fhir",
        "https://logiciel-medecin.example.org/fhir/%2e%2e/admin",
        "https://logiciel-medecin.example.org:8443/fhir",
        "http://127.0.0.1:9/fhir",
    ],
)
async def test_an_unregistered_callback_is_refused_and_nothing_stored(secure: httpx.AsyncClient, endpoint: str) -> None:
    bundle = fresh(commune="75056", tag="callback")
    message = as_message(bundle, endpoint, str(uuid.uuid4()))
    answer = await secure.post(
        "/fhir/$process-message", json=message, headers=await token_of(secure, SENDER) | FHIR_JSON
    )
    assert answer.status_code == 422, answer.text
    issue = answer.json()["issue"][0]
    assert issue["details"]["coding"][0]["code"] == "endpoint-not-registered"
    assert issue["expression"] == [SOURCE]
    identifier = bundle["entry"][0]["resource"]["identifier"][0]
    operator = await token_of(secure, OPERATOR)
    assert await _service_requests(secure, operator, f"{identifier['system']}|{identifier['value']}") == 0


@pytest.mark.parametrize(
    ("endpoint", "origin"),
    [
        ("https://logiciel-medecin.example.org/fhir", "https://logiciel-medecin.example.org/fhir"),
        ("https://LOGICIEL-medecin.example.org/fhir/cabinet-2", "https://LOGICIEL-medecin.example.org/fhir/cabinet-2"),
        ("urn:oid:1.2.250.1.71.4.2.2", None),  # names the sender, asks for no updates
        ("urn:uuid:0d7d3a77-0000-4000-8000-000000000001", None),
    ],
)
async def test_a_registered_callback_or_none_is_taken(
    secure: httpx.AsyncClient, database: Database, endpoint: str, origin: str | None
) -> None:
    message = as_message(fresh(commune="75056", tag="callback"), endpoint, str(uuid.uuid4()))
    answer = await secure.post(
        "/fhir/$process-message", json=message, headers=await token_of(secure, SENDER) | FHIR_JSON
    )
    assert answer.status_code == 200, answer.text
    assert await _origin(database, answer) == origin


@pytest.mark.parametrize(
    ("endpoint", "origin"),
    [
        ("http://127.0.0.1:9/fhir", "http://127.0.0.1:9/fhir"),  # development: any http(s) URL
        ("https://anywhere.example/fhir", "https://anywhere.example/fhir"),
        ("urn:oid:1.2.250.1.71.4.2.2", None),
    ],
)
async def test_with_authentication_off_any_http_callback_is_taken(
    client: httpx.AsyncClient, database: Database, endpoint: str, origin: str | None
) -> None:
    message = as_message(fresh(commune="75056", tag="callback"), endpoint, str(uuid.uuid4()))
    answer = await client.post("/fhir/$process-message", json=message, headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    assert await _origin(database, answer) == origin
