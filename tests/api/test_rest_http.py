"""HTTP as FHIR clients use it (DESIGN §16): the base URL from the request (proxies trusted by address), no
redirect for a trailing slash, HEAD / OPTIONS / Allow / CORS, conditional reads, a conditional create from the URL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from gateway import Settings, create_app
from gateway.routing.config import RoutingTable
from gateway.store import Database
from tests.support.referrals import fresh, nir_key

FHIR_JSON = {"content-type": "application/fhir+json"}
INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"
CONSENT_ID = "https://hospital.example/fhir/consent-id"


def _client(app: FastAPI, peer: str = "127.0.0.1", base: str = "http://gateway.test") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(peer, 50000)), base_url=base)


async def _referral(client: httpx.AsyncClient) -> str:
    """A referral posted; its Patient's reference (``Patient/…``)."""
    answer = await client.post("/fhir", json=fresh(tag="rest"), headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    return next(
        e["response"]["location"].split("/_history")[0]
        for e in answer.json()["entry"]
        if e["response"]["location"].startswith("Patient/")
    )


def _links(bundle: dict[str, Any]) -> list[str]:
    return [link["url"] for link in bundle["link"]] + [entry["fullUrl"] for entry in bundle.get("entry", [])]


# --- the base URL ---


async def test_links_are_on_the_host_the_client_used(client: httpx.AsyncClient) -> None:
    patient = await _referral(client)
    for host in ("127.0.0.1:8080", "localhost:8080", "gateway.test"):
        found = (await client.get("/fhir/Patient", params={"_count": 1}, headers={"host": host})).json()
        assert {url.split("/fhir/")[0] for url in _links(found)} == {f"http://{host}"}
        read = await client.get(f"/fhir/{patient}", headers={"host": host})
        assert read.headers["content-location"] == f"http://{host}/fhir/{patient}/_history/1"
        metadata = (await client.get("/fhir/metadata", headers={"host": host})).json()
        assert metadata["implementation"]["url"] == f"http://{host}/fhir"


FORWARDED = {"x-forwarded-proto": "https", "x-forwarded-host": "dac.example.fr", "x-forwarded-prefix": "/gw"}


async def test_a_trusted_proxy_says_what_the_client_used(app: FastAPI) -> None:
    async with _client(app) as client:  # 127.0.0.1: trusted by default
        patient = await _referral(client)
        answer = await client.get(f"/fhir/{patient}", headers=FORWARDED)
        assert answer.headers["content-location"] == f"https://dac.example.fr/gw/fhir/{patient}/_history/1"
        rfc7239 = {"forwarded": 'for=192.0.2.1;proto=https;host="dac.example.fr:8443", for=10.0.0.1'}
        found = (await client.get("/fhir/Patient", headers=rfc7239)).json()
        assert {url.split("/fhir/")[0] for url in _links(found)} == {"https://dac.example.fr:8443"}


@pytest.mark.parametrize(
    ("headers", "base"),
    [
        (
            {"x-forwarded-proto": "https", "x-forwarded-host": "dac.example.fr", "x-forwarded-port": "8443"},
            "https://dac.example.fr:8443",
        ),
        (
            {"x-forwarded-proto": "https", "x-forwarded-host": "dac.example.fr:80", "x-forwarded-port": "443"},
            "https://dac.example.fr",
        ),
        ({"x-forwarded-proto": "http", "x-forwarded-port": "8081"}, "http://gateway.test:8081"),
        ({"x-forwarded-host": "[2001:db8::1]:9", "x-forwarded-port": "8443"}, "http://[2001:db8::1]:8443"),
        ({"x-forwarded-host": "dac.example.fr", "x-forwarded-port": "99999"}, "http://dac.example.fr"),
        ({"x-forwarded-host": "dac.example.fr", "x-forwarded-port": "1/evil"}, "http://dac.example.fr"),
        ({"forwarded": "proto=https;host=dac.example.fr", "x-forwarded-port": "8443"}, "https://dac.example.fr"),
    ],
)
async def test_a_trusted_proxy_on_another_port_says_so(app: FastAPI, headers: dict[str, str], base: str) -> None:
    """A proxy whose Host header has no port (nginx's ``$host``) says its port in ``X-Forwarded-Port``; links follow
    it, without the scheme's default port, and not when RFC 7239 ``Forwarded`` (whose host has its port) is used."""
    async with _client(app) as client:
        found = (await client.get("/fhir/metadata", headers=headers)).json()
        assert found["implementation"]["url"] == f"{base}/fhir"


async def test_forwarding_headers_from_anyone_else_are_ignored(app: FastAPI) -> None:
    async with _client(app, peer="203.0.113.9") as client:
        patient = await _referral(client)
        headers = FORWARDED | {"forwarded": "host=evil.example", "x-forwarded-port": "8443"}
        answer = await client.get(f"/fhir/{patient}", headers=headers)
        assert answer.headers["content-location"] == f"http://gateway.test/fhir/{patient}/_history/1"


async def test_trusted_proxies_are_ranges_too(settings: Settings, database: Database, routing: RoutingTable) -> None:
    app = create_app(settings.model_copy(update={"trusted_proxies": "10.0.0.0/8, ::1"}), database, routing)
    async with _client(app, peer="10.1.2.3") as trusted, _client(app) as loopback:
        assert (await trusted.get("/fhir/metadata", headers=FORWARDED)).json()["implementation"]["url"] == (
            "https://dac.example.fr/gw/fhir"
        )
        assert (await loopback.get("/fhir/metadata", headers=FORWARDED)).json()["implementation"]["url"] == (
            "http://gateway.test/fhir"
        )
    with pytest.raises(ValidationError, match="trusted_proxies"):
        Settings(trusted_proxies="10.0.0.0/33", auth="off")


async def test_a_host_no_url_can_hold_is_not_used(client: httpx.AsyncClient) -> None:
    for host in ("evil.example/phish?", "a b", "user@evil.example"):
        url = (await client.get("/fhir/metadata", headers={"host": host})).json()["implementation"]["url"]
        assert "evil" not in url and " " not in url


async def test_the_configured_base_url_overrides_the_request(
    settings: Settings, database: Database, routing: RoutingTable
) -> None:
    configured = settings.model_copy(update={"base_url": "https://public.example/dac/fhir/"})
    async with _client(create_app(configured, database, routing)) as client:
        patient = await _referral(client)
        found = (await client.get("/fhir/Patient", headers=FORWARDED)).json()
        assert {url.split("/fhir/")[0] for url in _links(found)} == {"https://public.example/dac"}
        read = await client.get(f"/fhir/{patient}")
        assert read.headers["content-location"] == f"https://public.example/dac/fhir/{patient}/_history/1"


# --- trailing slash, HEAD, OPTIONS, Allow ---


async def test_a_trailing_slash_is_the_same_endpoint_without_a_redirect(client: httpx.AsyncClient) -> None:
    answer = await client.post("/fhir/", json=fresh(tag="slash"), headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    assert answer.json()["type"] == "transaction-response"
    assert (await client.get("/fhir/metadata/")).json()["resourceType"] == "CapabilityStatement"
    found = await client.get("/fhir/Patient/")
    assert found.status_code == 200 and found.json()["total"] == 1


async def test_head_answers_the_get_headers_without_a_body(client: httpx.AsyncClient) -> None:
    patient = await _referral(client)
    for path in (f"/fhir/{patient}", f"/fhir/{patient}/_history/1", "/fhir/Patient", "/fhir/metadata"):
        get, head = await client.get(path), await client.head(path)
        assert head.status_code == 200 and head.content == b""
        for name in ("content-type", "content-length", "etag", "content-location"):
            assert head.headers.get(name) == get.headers.get(name)
    assert (await client.head("/fhir/Patient/unknown")).status_code == 404


async def test_options_and_405_list_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    expected = {
        "/fhir": "POST, OPTIONS",
        "/fhir/Task/abc": "GET, HEAD, PUT, PATCH, OPTIONS",
        "/fhir/Patient/abc": "GET, HEAD, OPTIONS",
        "/fhir/Consent": "GET, HEAD, POST, OPTIONS",
    }
    for path, allow in expected.items():
        options = await client.options(path)
        assert options.status_code == 204 and options.headers["allow"] == allow, path
    refused = await client.delete("/fhir/Task/abc")
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD, PUT, PATCH, OPTIONS"
    assert refused.json()["resourceType"] == "OperationOutcome"
    assert (await client.put("/fhir/Patient/abc")).headers["allow"] == "GET, HEAD, OPTIONS"


# --- conditional reads ---


async def test_if_none_match_weak_strong_or_any_and_if_modified_since(client: httpx.AsyncClient) -> None:
    patient = await _referral(client)
    current = await client.get(f"/fhir/{patient}")
    modified = current.headers["last-modified"]
    for if_none_match in ('W/"1"', '"1"', "*", 'W/"7", "1"'):
        answer = await client.get(f"/fhir/{patient}", headers={"if-none-match": if_none_match})
        assert answer.status_code == 304 and answer.content == b"", if_none_match
        assert answer.headers["etag"] == 'W/"1"'
    assert (await client.get(f"/fhir/{patient}", headers={"if-none-match": 'W/"2"'})).status_code == 200
    assert (await client.get(f"/fhir/{patient}", headers={"if-modified-since": modified})).status_code == 304
    earlier = format_datetime(parsedate_to_datetime(modified).replace(year=2020), usegmt=True)
    assert (await client.get(f"/fhir/{patient}", headers={"if-modified-since": earlier})).status_code == 200
    assert (await client.get(f"/fhir/{patient}", headers={"if-modified-since": "not a date"})).status_code == 200
    # If-None-Match decides when both are sent (RFC 9110 §13.2.2)
    both = {"if-none-match": 'W/"2"', "if-modified-since": modified}
    assert (await client.get(f"/fhir/{patient}", headers=both)).status_code == 200
    assert (await client.get(f"/fhir/{patient}/_history/1", headers={"if-none-match": '"1"'})).status_code == 304


# --- CORS ---


@pytest.fixture
async def browser(settings: Settings, database: Database, routing: RoutingTable) -> AsyncIterator[httpx.AsyncClient]:
    configured = settings.model_copy(update={"cors_origins": "https://console.example, https://other.example"})
    async with _client(create_app(configured, database, routing)) as client:
        yield client


async def test_cors_for_configured_origins_only(browser: httpx.AsyncClient) -> None:
    preflight = {
        "origin": "https://console.example",
        "access-control-request-method": "PUT",
        "access-control-request-headers": "authorization, if-match, content-type, x-provenance",
    }
    allowed = await browser.options("/fhir/Task/abc", headers=preflight)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://console.example"
    assert "PUT" in allowed.headers["access-control-allow-methods"]
    assert {"If-Match", "X-Provenance", "Authorization"} <= set(
        allowed.headers["access-control-allow-headers"].replace(" ", "").split(",")
    )
    refused = await browser.options("/fhir/Task/abc", headers=preflight | {"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in refused.headers
    read = await browser.get("/fhir/metadata", headers={"origin": "https://other.example"})
    assert read.headers["access-control-allow-origin"] == "https://other.example"
    assert {"ETag", "Location", "Content-Location", "Last-Modified"} <= set(
        read.headers["access-control-expose-headers"].replace(" ", "").split(",")
    )


async def test_no_cors_by_default(client: httpx.AsyncClient) -> None:
    read = await client.get("/fhir/metadata", headers={"origin": "https://console.example"})
    assert "access-control-allow-origin" not in read.headers


def test_any_origin_is_refused_while_authentication_is_on() -> None:
    with pytest.raises(ValidationError, match="CORS"):
        Settings(cors_origins="https://a.example, *", auth="on")
    assert Settings(cors_origins="*", auth="off").cors_origins == "*"


# --- a conditional create from the URL ---


def _consent(ins: str, value: str) -> dict[str, Any]:
    return {
        "resourceType": "Consent",
        "identifier": [{"system": CONSENT_ID, "value": value}],
        "status": "active",
        "scope": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"identifier": {"system": INS_NIR, "value": ins}},
        "dateTime": "2026-11-23T10:00:00+01:00",
        "policyRule": {"text": "Code de la santé publique, art. L1110-12"},
        "provision": {"type": "permit"},
    }


async def test_search_parameters_in_a_create_url_are_its_condition(client: httpx.AsyncClient) -> None:
    consent = _consent("1840575123456" + nir_key("1840575123456"), "URL-1")
    url = f"/fhir/Consent?identifier={CONSENT_ID}|URL-1"
    first = await client.post(url, json=consent, headers=FHIR_JSON)
    assert first.status_code == 201, first.text
    again = await client.post(url, json=consent, headers=FHIR_JSON)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    same = FHIR_JSON | {"if-none-exist": f"identifier={CONSENT_ID}|URL-1"}
    assert (await client.post(url + "&_format=json", json=consent, headers=same)).status_code == 200
    assert (await client.get("/fhir/Consent")).json()["total"] == 1
    other = FHIR_JSON | {"if-none-exist": f"identifier={CONSENT_ID}|URL-2"}
    both = await client.post(url, json=consent, headers=other)
    assert both.status_code == 400 and both.json()["issue"][0]["expression"] == ["http.If-None-Exist"]
    result_only = await client.post("/fhir/Consent?_count=1", json=consent, headers=FHIR_JSON)
    assert result_only.status_code == 400 and result_only.json()["issue"][0]["expression"] == ["http.url"]
    assert (await client.get("/fhir/Consent")).json()["total"] == 1


async def test_search_parameters_in_a_transaction_url_are_refused_not_ignored(client: httpx.AsyncClient) -> None:
    """A transaction has no condition: ``POST /fhir?identifier=…`` (a client that meant a conditional create) was
    processed with its query dropped — the write §16 says a URL's parameters never silently lose. Now a 400 that
    names them, nothing written; ``_format`` / ``_pretty`` still shape the answer."""
    bundle = fresh(tag="transaction-query")
    refused = await client.post(f"/fhir?identifier={CONSENT_ID}|T-1", json=bundle, headers=FHIR_JSON)
    assert refused.status_code == 400, refused.text
    assert refused.json()["issue"][0]["expression"] == ["http.url"]
    assert "identifier" in refused.json()["issue"][0]["diagnostics"]
    assert (await client.get("/fhir/ServiceRequest")).json()["total"] == 0
    slash = await client.post("/fhir/?identifier=x", json=bundle, headers=FHIR_JSON)
    assert slash.status_code == 400, slash.text
    shaped = await client.post("/fhir?_format=json&_pretty=true", json=bundle, headers=FHIR_JSON)
    assert shaped.status_code == 200 and shaped.text.startswith("{\n"), shaped.text[:200]


# --- Prefer on a transaction ---


async def test_a_transaction_answers_as_prefer_return_asks(client: httpx.AsyncClient) -> None:
    bundle = fresh(tag="prefer")
    default = (await client.post("/fhir", json=bundle, headers=FHIR_JSON)).json()
    assert all("resource" not in entry for entry in default["entry"])
    minimal = await client.post("/fhir", json=bundle, headers=FHIR_JSON | {"prefer": "return=minimal"})
    assert [e["response"]["location"] for e in minimal.json()["entry"]] == [
        e["response"]["location"] for e in default["entry"]
    ]  # a replay: the same answer
    assert all("resource" not in entry for entry in minimal.json()["entry"])
    full = (await client.post("/fhir", json=bundle, headers=FHIR_JSON | {"prefer": "return=representation"})).json()
    for entry in full["entry"]:
        reference, _, version = entry["response"]["location"].partition("/_history/")
        assert f"{entry['resource']['resourceType']}/{entry['resource']['id']}" == reference
        assert entry["resource"]["meta"]["versionId"] == version
        assert entry["fullUrl"] == f"http://gateway.test/fhir/{reference}"
    outcomes = (
        await client.post("/fhir", json=bundle, headers=FHIR_JSON | {"prefer": "return=OperationOutcome"})
    ).json()
    assert all(e["response"]["outcome"]["resourceType"] == "OperationOutcome" for e in outcomes["entry"])
    assert all("resource" not in entry for entry in outcomes["entry"])
