"""The token endpoint and the API's checks, through the HTTP layer with authentication on."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from gateway.api.routes import conformance
from tests.auth.conftest import OPERATOR, READ_ONLY, SENDER, TOKEN_URL, token_of
from tests.conftest import load_example

OPEN = {"/health", "/ready", "/metrics", "/fhir/metadata", "/auth/token", "/.well-known/smart-configuration",
        "/fhir/.well-known/smart-configuration", "/.well-known/jwks.json", "/docs", "/docs/oauth2-redirect",
        "/openapi.json"}  # fmt: skip
#: What the gateway publishes for other FHIR tools (conformance resources, /package.tgz): definitions, no patient
#: data, readable without a token (tests/conformance).
OPEN |= {route.path for route in conformance.router.routes if isinstance(route, APIRoute) and "GET" in route.methods}


async def test_client_credentials_then_a_referral_posted_and_read_back(secure: httpx.AsyncClient) -> None:
    answer = await secure.post("/auth/token", data=SENDER.token_form(TOKEN_URL, "system/ServiceRequest.cr"))
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 300
    assert body["scope"] == "system/ServiceRequest.cr"
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    posted = await secure.post(
        "/fhir", json=load_example("referral-gp.json"), headers=headers | {"Content-Type": "application/fhir+json"}
    )
    assert posted.status_code == 200, posted.text
    location = next(
        e["response"]["location"] for e in posted.json()["entry"] if e["response"]["location"].startswith("Service")
    )
    read = await secure.get("/fhir/" + location.split("/_history")[0], headers=headers)
    assert read.status_code == 200
    assert read.json()["resourceType"] == "ServiceRequest"


async def test_a_replayed_assertion_is_refused(secure: httpx.AsyncClient) -> None:
    form = SENDER.token_form(TOKEN_URL)
    assert (await secure.post("/auth/token", data=form)).status_code == 200
    again = await secure.post("/auth/token", data=form)
    assert again.status_code == 400
    assert again.json() == {"error": "invalid_client", "error_description": "client_assertion jti was already used"}


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"grant_type": "authorization_code"}, "unsupported_grant_type"),
        ({"grant_type": ""}, "invalid_request"),
        ({"client_assertion": ""}, "invalid_request"),
        ({"client_assertion_type": "urn:something-else"}, "invalid_client"),
        ({"scope": ""}, "invalid_request"),
        ({"scope": "system/Practitioner.c patient/*.rs"}, "invalid_scope"),
        ({"client_assertion": "abc.def.ghi"}, "invalid_client"),
    ],
)
async def test_token_request_errors_are_rfc_6749_json(
    secure: httpx.AsyncClient, change: dict[str, str], error: str
) -> None:
    answer = await secure.post("/auth/token", data=SENDER.token_form(TOKEN_URL) | change)
    assert answer.status_code == 400
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["error"] == error
    assert answer.json()["error_description"]


async def test_without_a_token_the_api_answers_401_with_an_operation_outcome(secure: httpx.AsyncClient) -> None:
    answer = await secure.get("/fhir/ServiceRequest")
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == 'Bearer realm="dac-gateway"'
    issue = answer.json()["issue"][0]
    assert issue["code"] == "login"
    assert issue["details"]["coding"][0]["code"] == "access-token-missing"


async def test_a_token_not_issued_here_is_401_invalid_token(secure: httpx.AsyncClient) -> None:
    answer = await secure.get("/fhir/ServiceRequest", headers={"Authorization": "Bearer e30.e30.c2ln"})
    assert answer.status_code == 401
    assert 'error="invalid_token"' in answer.headers["www-authenticate"]
    assert answer.json()["issue"][0]["details"]["coding"][0]["code"] == "access-token-invalid"


async def test_a_valid_token_without_the_scope_is_403(secure: httpx.AsyncClient) -> None:
    headers = await token_of(secure, READ_ONLY)
    assert (await secure.get("/fhir/ServiceRequest", headers=headers)).status_code == 200
    for method, url in [
        ("GET", "/fhir/Patient"),
        ("POST", "/fhir"),
        ("PUT", "/fhir/Task/x"),
        ("POST", "/fhir/Consent"),
    ]:
        answer = await secure.request(method, url, headers=headers, json={"resourceType": "Task"})
        assert answer.status_code == 403, (method, url, answer.text)
        assert answer.json()["issue"][0]["details"]["coding"][0]["code"] == "scope-insufficient"
        assert answer.headers["www-authenticate"].endswith('error="insufficient_scope"')


async def test_every_api_route_but_the_open_ones_needs_a_token(secure_app: FastAPI, secure: httpx.AsyncClient) -> None:
    """Read from the OpenAPI document, so that a route added later is checked too."""
    checked = 0
    for path, operations in secure_app.openapi()["paths"].items():
        if path in OPEN:
            continue
        url = path.format(resource_type="Task", resource_id="x", task_id="x", consent_id="x", version_id="1")
        for method in operations:
            answer = await secure.request(method.upper(), url, json={"resourceType": "Task"})
            assert answer.status_code == 401, (method, path, answer.status_code)
            checked += 1
    assert checked >= 12


@pytest.mark.parametrize(
    "path",
    ["/health", "/metrics", "/fhir/metadata", "/.well-known/smart-configuration", "/.well-known/jwks.json",
     "/package.tgz", "/fhir/StructureDefinition/dac-task",
     "/fhir/ValueSet?url=https://fhir.dac-gateway.org/ValueSet/dac-mission"],
)  # fmt: skip
async def test_open_routes_need_no_token(secure: httpx.AsyncClient, path: str) -> None:
    assert (await secure.get(path)).status_code == 200


@pytest.mark.parametrize("path", ["/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"])
async def test_the_smart_configuration(secure: httpx.AsyncClient, path: str) -> None:
    document = (await secure.get(path)).json()
    assert document["token_endpoint"] == TOKEN_URL
    assert document["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert document["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert document["grant_types_supported"] == ["client_credentials"]
    assert document["capabilities"] == ["client-confidential-asymmetric"]
    assert "system/AuditEvent.rs" in document["scopes_supported"]


async def test_the_capability_statement_advertises_the_security(secure: httpx.AsyncClient) -> None:
    security = (await secure.get("/fhir/metadata")).json()["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    oauth = security["extension"][0]
    assert oauth["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    assert oauth["extension"] == [{"url": "token", "valueUri": TOKEN_URL}]


async def test_the_operator_gets_only_the_scopes_it_has(secure: httpx.AsyncClient) -> None:
    answer = await secure.post("/auth/token", data=OPERATOR.token_form(TOKEN_URL, "system/*.rs system/*.cud"))
    assert answer.json()["scope"] == "system/*.rs"


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"--x\r\ngarbage"),
        ("application/json", b'{"grant_type": "client_credentials"}'),
        ("application/x-www-form-urlencoded", b"%%%&&&==="),
    ],
)
async def test_a_malformed_token_request_is_a_4xx(secure: httpx.AsyncClient, content_type: str, body: bytes) -> None:
    answer = await secure.post("/auth/token", content=body, headers={"Content-Type": content_type})
    assert 400 <= answer.status_code < 500, answer.text


async def test_the_scope_is_checked_before_the_body_is_read(secure: httpx.AsyncClient) -> None:
    """A token without the scope gets its 403, not the 400 or 413 of a body it has no right to have read (issue 23:
    60,000 XML attributes were read, seconds of CPU, before the scope check)."""
    headers = await token_of(secure, READ_ONLY) | {"content-type": "application/fhir+xml"}
    attributes = " ".join(f'a{i}="1"' for i in range(5_000))
    for method, url in [
        ("POST", "/fhir"),
        ("POST", "/fhir/$process-message"),
        ("POST", "/fhir/Consent"),
        ("PUT", "/fhir/Task/x"),
        ("POST", "/fhir/Patient/$validate"),
        ("POST", "/fhir/Bundle/$validate"),
        ("POST", "/fhir/$validate"),
    ]:
        for body in (b"<not xml", f'<Bundle xmlns="http://hl7.org/fhir" {attributes}/>'.encode()):
            answer = await secure.request(method, url, headers=headers, content=body)
            assert answer.status_code == 403, (method, url, answer.text)
            assert answer.json()["issue"][0]["details"]["coding"][0]["code"] == "scope-insufficient"
    # A sender with the scope has its body read: the same malformed XML is then its 400.
    sender = await token_of(secure, SENDER) | {"content-type": "application/fhir+xml"}
    for url in ("/fhir", "/fhir/$validate", "/fhir/Bundle/$validate", "/fhir/Consent"):
        assert (await secure.post(url, headers=sender, content=b"<not xml")).status_code == 400, url
