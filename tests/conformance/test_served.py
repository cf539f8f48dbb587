"""Conformance resources served read-only (DESIGN §15): by id, by url / version / name / _id, ValueSet/$expand,
every canonical we publish found at /fhir/{type}?url=…, writes refused; the same with authentication on, where
they need no token (definitions, no patient data)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.conformance.catalog import CONFORMANCE_TYPES

ROOT = Path(__file__).resolve().parents[2]
BASE = "https://fhir.dac-gateway.org"


def _published() -> list[dict[str, Any]]:
    found = []
    for path in sorted((ROOT / "profiles").glob("*-*.json")):
        resource = json.loads(path.read_text(encoding="utf-8"))
        if resource.get("resourceType") in CONFORMANCE_TYPES:
            found.append(resource)
    return found


def _canonicals(node: Any) -> Iterator[str]:
    """Every canonical of ours a resource mentions: ``{BASE}/{ConformanceType}/{id}`` (a version dropped)."""
    if isinstance(node, dict):
        for value in node.values():
            yield from _canonicals(value)
    elif isinstance(node, list):
        for value in node:
            yield from _canonicals(value)
    elif isinstance(node, str) and node.startswith(BASE + "/"):
        kind = node.removeprefix(BASE + "/").split("/", 1)[0]
        if kind in CONFORMANCE_TYPES:
            yield node.split("|", 1)[0].split("#", 1)[0]


def _ids(bundle: dict[str, Any]) -> list[str]:
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    assert bundle["total"] == len(bundle.get("entry", []))
    return [entry["resource"]["id"] for entry in bundle.get("entry", [])]


def test_every_conformance_type_has_something_published() -> None:
    kinds = {resource["resourceType"] for resource in _published()}
    assert kinds == set(CONFORMANCE_TYPES)


@pytest.mark.parametrize("auth", ["off", "on"])
async def test_every_canonical_we_publish_or_mention_resolves_by_url(
    auth: str, client: httpx.AsyncClient, secure: httpx.AsyncClient
) -> None:
    http = client if auth == "off" else secure  # on: no token needed
    metadata = (await client.get("/fhir/metadata")).json()
    canonicals = {url for resource in [*_published(), metadata] for url in _canonicals(resource)}
    assert f"{BASE}/StructureDefinition/dac-servicerequest" in canonicals
    assert f"{BASE}/OperationDefinition/dac-validate" in canonicals
    assert {resource["url"] for resource in _published()} <= canonicals
    for canonical in sorted(canonicals):
        kind = canonical.removeprefix(BASE + "/").split("/", 1)[0]
        response = await http.get(f"/fhir/{kind}", params={"url": canonical})
        assert response.status_code == 200, (canonical, response.text)
        bundle = response.json()
        assert bundle["total"] == 1, canonical
        assert bundle["entry"][0]["resource"]["url"] == canonical
        resource_id = bundle["entry"][0]["resource"]["id"]
        assert bundle["entry"][0]["fullUrl"].endswith(f"/fhir/{kind}/{resource_id}")
        read = await http.get(f"/fhir/{kind}/{resource_id}")
        assert read.status_code == 200 and read.json()["url"] == canonical


async def test_search_by_url_version_name_and_id(client: httpx.AsyncClient) -> None:
    url = f"{BASE}/StructureDefinition/dac-servicerequest"
    assert _ids((await client.get("/fhir/StructureDefinition", params={"url": f"{url}|0.1.0"})).json()) == [
        "dac-servicerequest"
    ]
    assert _ids((await client.get("/fhir/StructureDefinition", params={"url": f"{url}|9.9"})).json()) == []
    assert _ids((await client.get("/fhir/StructureDefinition", params={"url": url, "version": "0.2.0"})).json()) == []
    by_name = (await client.get("/fhir/StructureDefinition", params={"name": "dacservice"})).json()
    assert _ids(by_name) == ["dac-servicerequest"]  # strings: starts with, case-insensitive
    by_id = (await client.get("/fhir/CodeSystem", params={"_id": "dac-mission,dac-issue"})).json()
    assert sorted(_ids(by_id)) == ["dac-issue", "dac-mission"]
    everything = (await client.get("/fhir/OperationDefinition")).json()
    assert sorted(_ids(everything)) == ["dac-expand", "dac-process-message", "dac-validate"]
    deadline = (await client.get("/fhir/SearchParameter", params={"_id": "dac-task-deadline"})).json()
    assert deadline["entry"][0]["resource"]["expression"] == "Task.restriction.period.end"


async def test_unknown_search_parameter_and_unknown_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/ValueSet", params={"title": "x"})
    assert response.status_code == 400
    assert response.json()["issue"][0]["details"]["coding"][0]["code"] == "search-parameter-unknown"
    response = await client.get("/fhir/StructureDefinition/nope")
    assert response.status_code == 404 and response.json()["resourceType"] == "OperationOutcome"


async def test_xml_on_request(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/CodeSystem/dac-mission", params={"_format": "xml"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+xml")
    assert b'<code value="pathway-support"/>' in response.content


async def test_expand_our_valuesets(client: httpx.AsyncClient) -> None:
    by_url = await client.get("/fhir/ValueSet/$expand", params={"url": f"{BASE}/ValueSet/dac-mission"})
    assert by_url.status_code == 200
    codes = {item["code"] for item in by_url.json()["expansion"]["contains"]}
    assert codes == {"information-orientation", "pathway-support", "practice-support"}
    union = (await client.get("/fhir/ValueSet/dac-task-progress/$expand")).json()
    assert {"accepted", "delivered", "failed"} <= {item["code"] for item in union["expansion"]["contains"]}
    unknown = await client.get("/fhir/ValueSet/$expand", params={"url": "http://hl7.org/fhir/ValueSet/x"})
    assert unknown.status_code == 404


@pytest.mark.parametrize("auth", ["off", "on"])
@pytest.mark.parametrize("kind", CONFORMANCE_TYPES)
async def test_writes_are_refused_with_405(
    kind: str, auth: str, client: httpx.AsyncClient, secure: httpx.AsyncClient
) -> None:
    http = client if auth == "off" else secure
    body = {"resourceType": kind, "id": "x"}
    for method, path in (("POST", f"/fhir/{kind}"), ("PUT", f"/fhir/{kind}/x"), ("DELETE", f"/fhir/{kind}/x")):
        response = await http.request(method, path, json=body, headers={"content-type": "application/fhir+json"})
        assert response.status_code == 405, (method, path, response.text)
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["details"]["coding"][0]["code"] == "method-not-allowed"
