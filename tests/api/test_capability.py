"""The CapabilityStatement is generated from the routes (DESIGN §15), and holds both ways: every FHIR route is in
it (a route it cannot describe stops it), and everything it claims — interactions, operations, search parameters
— is answered by a route, checked by calling each against the application."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from gateway.api.capability import STORED_TYPES, UndescribedRoute, capability_statement, served
from gateway.api.openapi import install_openapi
from gateway.conformance.catalog import CONFORMANCE_TYPES

FHIR_JSON = {"content-type": "application/fhir+json"}
#: A value of each search parameter type that parses (what it finds does not matter, that it is searched does).
SAMPLE = {
    "token": "x",
    "reference": "Patient/x",
    "string": "x",
    "date": "2020",
    "uri": "http://x.org/y",
    "number": "1",
    "quantity": "1",
}


async def _statement(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/fhir/metadata")
    assert response.status_code == 200
    statement: dict[str, Any] = response.json()
    return statement


def _by_type(statement: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {resource["type"]: resource for resource in statement["rest"][0]["resource"]}


def _routed(response: httpx.Response) -> bool:
    """The request reached a route that serves it: not a 405, not a 404 for want of an endpoint or a type."""
    if response.status_code == 405:
        return False
    if response.status_code == 404:
        issue = response.json()["issue"][0]
        return not (
            issue["diagnostics"].startswith("no such endpoint")
            or issue["details"]["coding"][0]["code"] == "resource-type-unsupported"
        )
    return True


async def test_what_is_declared(client: httpx.AsyncClient) -> None:
    statement = await _statement(client)
    by_type = _by_type(statement)
    assert set(by_type) == STORED_TYPES | set(CONFORMANCE_TYPES) | {"Subscription"}
    subscription = by_type["Subscription"]  # DESIGN §12: the two topics, as the backport IG advertises them
    topic = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/capabilitystatement-subscriptiontopic-canonical"
    assert [e["valueCanonical"] for e in subscription["extension"] if e["url"] == topic] == [
        "https://fhir.dac-gateway.org/SubscriptionTopic/referral-status",
        "https://fhir.dac-gateway.org/SubscriptionTopic/task",
    ]
    assert {i["code"] for i in subscription["interaction"]} == {"create", "read", "search-type", "update", "delete"}
    assert {o["name"] for o in subscription["operation"]} == {"status", "events"}
    task = by_type["Task"]
    assert task["versioning"] == "versioned-update"  # If-Match required on decisions
    assert {"update", "patch", "read", "vread", "search-type"} <= {i["code"] for i in task["interaction"]}
    assert task["supportedProfile"] == ["https://fhir.dac-gateway.org/StructureDefinition/dac-task"]
    assert by_type["ServiceRequest"]["conditionalRead"] == "full-support"
    assert by_type["Consent"]["conditionalCreate"] is True
    assert statement["patchFormat"] == ["application/json-patch+json"]
    deadline = next(p for p in task["searchParam"] if p["name"] == "deadline")
    assert deadline["definition"] == "https://fhir.dac-gateway.org/SearchParameter/dac-task-deadline"
    (messaging,) = statement["messaging"]
    assert {(m["mode"], m["definition"]) for m in messaging["supportedMessage"]} == {
        (mode, "https://fhir.dac-gateway.org/MessageDefinition/referral-request") for mode in ("receiver", "sender")
    }
    assert messaging["endpoint"][0]["address"] == "http://gateway.test/fhir"
    operations = {o["name"]: o["definition"] for o in statement["rest"][0]["operation"]}
    assert operations == {
        "process-message": "https://fhir.dac-gateway.org/OperationDefinition/dac-process-message",
        "validate": "https://fhir.dac-gateway.org/OperationDefinition/dac-validate",
    }
    assert by_type["ValueSet"]["operation"] == [
        {"name": "expand", "definition": "https://fhir.dac-gateway.org/OperationDefinition/dac-expand"}
    ]
    assert {i["code"] for i in by_type["StructureDefinition"]["interaction"]} == {"read", "search-type"}


async def test_every_claim_is_answered_by_a_route(client: httpx.AsyncClient) -> None:
    statement = await _statement(client)
    checked = 0
    for resource in statement["rest"][0]["resource"]:
        kind = resource["type"]
        for code in (interaction["code"] for interaction in resource["interaction"]):
            method, path = {
                "read": ("GET", f"/fhir/{kind}/nope"),
                "vread": ("GET", f"/fhir/{kind}/nope/_history/1"),
                "history-instance": ("GET", f"/fhir/{kind}/nope/_history"),
                "history-type": ("GET", f"/fhir/{kind}/_history"),
                "search-type": ("GET", f"/fhir/{kind}"),
                "create": ("POST", f"/fhir/{kind}"),
                "update": ("PUT", f"/fhir/{kind}/nope"),
                "patch": ("PATCH", f"/fhir/{kind}/nope"),
                "delete": ("DELETE", f"/fhir/{kind}/nope"),
            }[code]
            response = await client.request(method, path, json={"resourceType": kind}, headers=FHIR_JSON)
            assert _routed(response), (kind, code, response.status_code, response.text[:300])
            checked += 1
        for parameter in resource.get("searchParam", []):
            if parameter["type"] == "special":
                continue  # _include, _revinclude, _cursor: the test below
            params = {parameter["name"]: RESULT_SAMPLE.get(parameter["name"]) or SAMPLE[parameter["type"]]}
            response = await client.get(f"/fhir/{kind}", params=params)
            assert response.status_code == 200, (kind, parameter, response.text[:300])
            checked += 1
        for operation in resource.get("operation", []):
            method, path = {
                "validate": ("POST", f"/fhir/{kind}/$validate"),
                "expand": ("GET", f"/fhir/{kind}/x/$expand"),
                "status": ("GET", f"/fhir/{kind}/x/$status"),
                "events": ("GET", f"/fhir/{kind}/x/$events"),
            }[operation["name"]]
            response = await client.request(method, path, json={"resourceType": kind}, headers=FHIR_JSON)
            assert _routed(response), (kind, operation, response.status_code, response.text[:300])
            checked += 1
    for code in (interaction["code"] for interaction in statement["rest"][0]["interaction"]):
        method, path = {"transaction": ("POST", "/fhir"), "history-system": ("GET", "/fhir/_history")}[code]
        assert _routed(await client.request(method, path, json={"resourceType": "Bundle"}, headers=FHIR_JSON))
        checked += 1
    for operation in statement["rest"][0]["operation"]:
        response = await client.post(f"/fhir/${operation['name']}", json={"resourceType": "Bundle"}, headers=FHIR_JSON)
        assert _routed(response), (operation, response.text[:300])
        checked += 1
    assert checked > 150


def test_a_route_added_is_described_or_stops_the_statement(app: FastAPI) -> None:
    async def endpoint() -> None:
        return None

    before = served(app)
    assert "delete" not in before.interactions["Patient"]
    app.add_api_route("/fhir/{resource_type}/{resource_id}", endpoint, methods=["DELETE"])
    install_openapi(app)  # its document anew, with the route
    statement = capability_statement(app, "http://gateway.test/fhir")
    by_type = _by_type(statement)
    assert all("delete" in {i["code"] for i in by_type[kind]["interaction"]} for kind in STORED_TYPES)
    assert "delete" not in {i["code"] for i in by_type["StructureDefinition"]["interaction"]}

    app.add_api_route("/fhir/Patient/{resource_id}/$everything", endpoint, methods=["GET"])
    install_openapi(app)  # its document anew, with the route
    with pytest.raises(UndescribedRoute, match=r"\$everything has no OperationDefinition"):
        capability_statement(app, "http://gateway.test/fhir")


def test_a_route_of_an_unknown_shape_stops_the_statement(app: FastAPI) -> None:
    async def endpoint() -> None:
        return None

    app.add_api_route("/fhir/Task/{task_id}/frobnicate", endpoint, methods=["POST"])
    install_openapi(app)  # its document anew, with the route
    with pytest.raises(UndescribedRoute, match=r"POST /fhir/Task/\{task_id\}/frobnicate"):
        served(app)


async def test_the_same_statement_with_authentication_on(client: httpx.AsyncClient, secure: httpx.AsyncClient) -> None:
    """With authentication on the routes are the same, and so is what the statement says of them (plus security)."""
    off, on = await _statement(client), await _statement(secure)
    assert on["rest"][0]["resource"] == off["rest"][0]["resource"]
    assert on["rest"][0]["operation"] == off["rest"][0]["operation"] and on["messaging"] == off["messaging"]
    assert "security" in on["rest"][0] and "security" not in off["rest"][0]


#: A value each result parameter the statement lists takes (special ones: taken from the type's own claims).
RESULT_SAMPLE = {
    "_count": "1",
    "_sort": "-_lastUpdated",
    "_summary": "count",
    "_elements": "id",
    "_total": "none",
    "_cursor": "2020-01-01T00:00:00Z,x",
}


async def test_every_result_parameter_claimed_works_where_it_is_claimed(client: httpx.AsyncClient) -> None:
    """``rest.searchParam`` says a parameter works on a search of every type; a type's own ``searchParam`` on
    that type. A result parameter (``_count``…) claimed for all while the conformance types refuse it was a 400
    to a client that believed the statement (``StructureDefinition?_count=1``)."""
    statement = await _statement(client)
    everywhere = statement["rest"][0].get("searchParam", [])
    checked = 0
    for resource in statement["rest"][0]["resource"]:
        if "search-type" not in {i["code"] for i in resource["interaction"]}:
            continue
        claimed = {p["name"] for p in [*everywhere, *resource.get("searchParam", [])]}
        kind = resource["type"]
        for name in claimed & set(RESULT_SAMPLE):
            response = await client.get(f"/fhir/{kind}", params={name: RESULT_SAMPLE[name]})
            assert response.status_code == 200, (kind, name, response.text[:300])
            checked += 1
        for name, values in (
            ("_include", resource.get("searchInclude", [])),
            ("_revinclude", resource.get("searchRevInclude", [])),
        ):
            if name in claimed:
                assert values, (kind, name, "claimed with no target")
    assert checked > 40


async def test_conditional_read_says_both_headers_work(client: httpx.AsyncClient) -> None:
    """R4 conditionalRead: ``not-match`` is If-None-Match alone, ``full-support`` If-Modified-Since as well. The
    statement said ``not-match`` while reads answer If-Modified-Since with a 304 too (DESIGN §16)."""
    from tests.support.referrals import fresh

    posted = await client.post("/fhir", json=fresh(tag="conditional-read"), headers=FHIR_JSON)
    location = next(e["response"]["location"] for e in posted.json()["entry"] if "Patient/" in e["fullUrl"])
    reference = location.split("/_history")[0]
    read = await client.get(f"/fhir/{reference}")
    by_date = await client.get(f"/fhir/{reference}", headers={"if-modified-since": read.headers["last-modified"]})
    by_tag = await client.get(f"/fhir/{reference}", headers={"if-none-match": read.headers["etag"]})
    assert by_date.status_code == 304 and by_tag.status_code == 304
    by_type = _by_type(await _statement(client))
    assert {by_type[kind]["conditionalRead"] for kind in STORED_TYPES} == {"full-support"}
