"""The HTTP layer over the ASGI app: negotiation, status codes, OperationOutcomes, read API."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from lxml import etree

from tests.conftest import load_example
from tests.support.referrals import resource

FHIR_JSON = {"content-type": "application/fhir+json"}
NS = {"f": "http://hl7.org/fhir"}


def _issue(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    issue: dict[str, Any] = body["issue"][0]
    assert issue["severity"] in ("error", "fatal") and issue["diagnostics"]
    return issue


def _dac_code(response: httpx.Response) -> str:
    return str(_issue(response)["details"]["coding"][0]["code"])


async def _post(client: httpx.AsyncClient, bundle: dict[str, Any]) -> httpx.Response:
    return await client.post("/fhir", json=bundle, headers=FHIR_JSON)


async def _service_request(client: httpx.AsyncClient, name: str = "referral-gp.json") -> tuple[str, dict[str, Any]]:
    response = await _post(client, load_example(name))
    assert response.status_code == 200, response.text
    location = next(e["response"]["location"] for e in response.json()["entry"] if "/ServiceRequest/" in e["fullUrl"])
    return location.split("/_history")[0], response.json()


async def test_transaction_response_entries(client: httpx.AsyncClient) -> None:
    bundle = load_example("referral-hospital-nurse.json")
    response = await _post(client, bundle)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/fhir+json; charset=utf-8"
    answer = response.json()
    assert answer["type"] == "transaction-response"
    for posted, entry in zip(bundle["entry"], answer["entry"], strict=True):
        kind = posted["resource"]["resourceType"]
        assert entry["response"]["status"] == "201 Created"
        assert entry["response"]["location"].startswith(f"{kind}/")
        assert entry["response"]["location"].endswith("/_history/1")
        assert entry["response"]["etag"] == 'W/"1"'
        assert entry["fullUrl"].startswith(f"http://gateway.test/fhir/{kind}/")
    note = next(e for e in answer["entry"] if "/ServiceRequest/" in e["fullUrl"])["response"]["outcome"]
    assert "CareTeam/" in note["issue"][0]["diagnostics"]


async def test_read_vread_history_and_etag(client: httpx.AsyncClient) -> None:
    reference, _ = await _service_request(client)
    read = await client.get(f"/fhir/{reference}")
    assert read.status_code == 200
    assert read.headers["etag"] == 'W/"1"'
    assert read.headers["last-modified"].endswith("GMT")
    assert read.json()["meta"]["versionId"] == "1"
    assert (await client.get(f"/fhir/{reference}", headers={"if-none-match": 'W/"1"'})).status_code == 304
    vread = await client.get(f"/fhir/{reference}/_history/1")
    assert vread.status_code == 200 and vread.json() == read.json()
    history = (await client.get(f"/fhir/{reference}/_history")).json()
    assert history["type"] == "history" and history["total"] == 1
    assert history["entry"][0]["response"]["etag"] == 'W/"1"'
    missing_version = await client.get(f"/fhir/{reference}/_history/9")
    assert missing_version.status_code == 404 and _dac_code(missing_version) == "version-not-found"


async def test_xml_answers(client: httpx.AsyncClient) -> None:
    reference, _ = await _service_request(client)
    for request in (
        client.get(f"/fhir/{reference}", headers={"accept": "application/fhir+xml"}),
        client.get(f"/fhir/{reference}?_format=xml"),
    ):
        response = await request
        assert response.headers["content-type"].startswith("application/fhir+xml")
        root = etree.fromstring(response.content)
        assert root.tag == "{http://hl7.org/fhir}ServiceRequest"
        assert root.find("f:id", NS).get("value") == reference.split("/")[1]  # type: ignore[union-attr]


async def test_xml_referral_in_and_out(client: httpx.AsyncClient) -> None:
    from tests.conftest import EXAMPLES

    response = await client.post(
        "/fhir",
        content=(EXAMPLES / "referral-hospital-nurse.xml").read_bytes(),
        headers={"content-type": "application/fhir+xml", "accept": "application/fhir+xml"},
    )
    assert response.status_code == 200, response.text
    root = etree.fromstring(response.content)
    statuses = [e.get("value") for e in root.iterfind("f:entry/f:response/f:status", NS)]
    assert statuses and set(statuses) == {"201 Created"}


async def test_process_message(client: httpx.AsyncClient) -> None:
    message = load_example("message-referral-gp.json")
    response = await client.post("/fhir/$process-message", json=message, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    answer = response.json()
    header = answer["entry"][0]["resource"]
    assert answer["type"] == "message" and header["resourceType"] == "MessageHeader"
    assert header["response"] == header["response"] | {
        "identifier": message["entry"][0]["resource"]["id"],
        "code": "ok",
    }
    focus = header["focus"][0]["reference"]
    assert answer["entry"][1]["fullUrl"] == focus
    assert answer["entry"][1]["resource"]["resourceType"] == "ServiceRequest"
    again = (await client.post("/fhir/$process-message", json=message, headers=FHIR_JSON)).json()
    assert again["entry"][0]["resource"]["focus"][0]["reference"] == focus


async def test_transaction_endpoint_refuses_a_message(client: httpx.AsyncClient) -> None:
    response = await _post(client, load_example("message-referral-gp.json"))
    assert response.status_code == 400 and _dac_code(response) == "bundle-type-unsupported"


async def test_search_and_paging(client: httpx.AsyncClient) -> None:
    bundle = load_example("referral-gp.json")
    for i in range(5):
        copy_ = copy.deepcopy(bundle)
        next(e for e in copy_["entry"] if e["resource"]["resourceType"] == "ServiceRequest")["resource"]["identifier"][
            0
        ]["value"] += f"-{i}"
        copy_["identifier"]["value"] += f"-{i}"
        assert (await _post(client, copy_)).status_code == 200
    page = (await client.get("/fhir/ServiceRequest", params={"_count": "2", "status": "active"})).json()
    assert page["total"] == 5 and len(page["entry"]) == 2
    seen = [e["resource"]["id"] for e in page["entry"]]
    while next_link := next((link["url"] for link in page["link"] if link["relation"] == "next"), None):
        page = (await client.get(next_link)).json()
        seen += [e["resource"]["id"] for e in page["entry"]]
    assert len(seen) == len(set(seen)) == 5
    patient_id = page["entry"][0]["resource"]["subject"]["reference"]
    assert (await client.get("/fhir/ServiceRequest", params={"patient": patient_id})).json()["total"] == 5
    assert (await client.get("/fhir/ServiceRequest", params={"subject": patient_id.split("/")[1]})).json()["total"] == 5
    assert (await client.get("/fhir/ServiceRequest", params={"status": "revoked"})).json()["total"] == 0
    mission = "https://fhir.dac-gateway.org/CodeSystem/dac-mission|pathway-support"
    assert (await client.get("/fhir/ServiceRequest", params={"code": mission})).json()["total"] == 5
    count_only = (await client.get("/fhir/ServiceRequest", params={"_summary": "count"})).json()
    assert count_only["total"] == 5 and "entry" not in count_only
    assert (await client.get("/fhir/CareTeam", params={"patient": patient_id})).json()["total"] == 5
    assert (await client.get("/fhir/ServiceRequest", params={"_lastUpdated": "ge2020-01-01"})).json()["total"] == 5
    assert (await client.get("/fhir/ServiceRequest", params={"_lastUpdated": "lt2020-01-01"})).json()["total"] == 0
    born = resource(bundle, "Patient")["birthDate"]  # 1941-06-14: a date searched with prefixes and partly
    for birthdate, total in ((born, 1), (born[:4], 1), (f"ge{born[:4]}", 1), (f"lt{born}", 0), ("le2000", 1)):
        assert (await client.get("/fhir/Patient", params={"birthdate": birthdate})).json()["total"] == total
    posted = await client.post("/fhir/ServiceRequest/_search", data={"status": "active", "_count": "1"})
    assert posted.json()["total"] == 5 and len(posted.json()["entry"]) == 1
    # Regression: parameters in a body that is no form were dropped, and every ServiceRequest answered.
    for body, content_type in (('{"status": "revoked"}', "application/fhir+json"), ("status=revoked", None)):
        headers = {"content-type": content_type} if content_type else {}
        refused = await client.post("/fhir/ServiceRequest/_search", content=body, headers=headers)
        assert refused.status_code == 415 and _dac_code(refused) == "media-type-unsupported"
    in_url = await client.post("/fhir/ServiceRequest/_search?status=revoked", headers={"content-type": "text/plain"})
    assert in_url.status_code == 200 and in_url.json()["total"] == 0


async def test_capability_statement(client: httpx.AsyncClient) -> None:
    capability = (await client.get("/fhir/metadata")).json()
    assert capability["resourceType"] == "CapabilityStatement" and capability["fhirVersion"] == "4.0.1"
    rest = capability["rest"][0]
    by_type = {resource["type"]: resource for resource in rest["resource"]}
    assert {"ServiceRequest", "Task", "Consent", "CareTeam", "Patient"} <= set(by_type)
    params = {p["name"] for p in by_type["ServiceRequest"]["searchParam"]}
    assert {"identifier", "patient", "subject", "status", "code", "_lastUpdated"} <= params
    assert {"owner", "focus"} <= {p["name"] for p in by_type["Task"]["searchParam"]}
    assert rest["operation"][0]["name"] == "process-message"
    assert by_type["Consent"]["conditionalCreate"] is True  # POST /fhir/Consent with If-None-Exist
    assert {i["code"] for i in by_type["Consent"]["interaction"]} >= {"create", "search-type"}
    xml = await client.get("/fhir/metadata", headers={"accept": "application/fhir+xml"})
    assert etree.fromstring(xml.content).tag == "{http://hl7.org/fhir}CapabilityStatement"


async def test_errors_are_operation_outcomes(client: httpx.AsyncClient) -> None:
    cases = [
        (client.get("/fhir/ServiceRequest/nope"), 404, "resource-not-found"),
        (client.get("/fhir/Spaceship/1"), 404, "resource-type-unsupported"),
        (client.get("/fhir/Spaceship"), 404, "resource-type-unsupported"),
        (client.get("/nowhere"), 404, "resource-not-found"),
        (client.delete("/fhir/ServiceRequest/1"), 405, "method-not-allowed"),
        (client.get("/fhir/ServiceRequest", params={"colour": "blue"}), 400, "search-parameter-unknown"),
        (client.post("/fhir", content=b"{", headers=FHIR_JSON), 400, "body-unparsable"),
        (client.post("/fhir", content=b"hello", headers={"content-type": "text/plain"}), 415, "media-type-unsupported"),
        (client.post("/fhir", content=b"", headers=FHIR_JSON), 400, "body-unparsable"),
    ]
    for request, status, code in cases:
        response = await request
        assert (response.status_code, _dac_code(response)) == (status, code), response.text


async def test_error_in_xml_when_asked(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/ServiceRequest/nope", headers={"accept": "application/fhir+xml"})
    assert response.status_code == 404
    assert etree.fromstring(response.content).tag == "{http://hl7.org/fhir}OperationOutcome"


async def test_a_format_the_gateway_cannot_write_is_a_406(client: httpx.AsyncClient) -> None:
    """R4 http.html#mime-type: 406 when Accept (or _format) asks only for what we cannot write — Turtle, HTML,
    another FHIR version — in JSON, never the resource in JSON as if it had been asked; before any work (a POST
    stores nothing). A browser's Accept, which takes */*, is answered."""
    refused = [
        client.get("/fhir/metadata", params={"_format": "turtle"}),
        client.get("/fhir/ServiceRequest", headers={"accept": "text/html"}),
        client.get("/fhir/ServiceRequest/nope", headers={"accept": "application/fhir+json; fhirVersion=3.0"}),
        client.post("/fhir", json=load_example("referral-gp.json"), headers=FHIR_JSON | {"accept": "text/turtle"}),
    ]
    for request in refused:
        response = await request
        assert (response.status_code, _dac_code(response)) == (406, "format-not-acceptable"), response.text
        assert response.headers["content-type"].startswith("application/fhir+json")
    assert (await client.get("/fhir/ServiceRequest", params={"_summary": "count"})).json()["total"] == 0
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    answered = await client.get("/fhir/metadata", headers={"accept": browser})
    assert answered.status_code == 200 and answered.headers["content-type"].startswith("application/xml")
    for accept in ("*/*", "text/html, */*;q=0.1", "application/fhir+json; fhirVersion=4.0"):
        response = await client.get("/fhir/metadata", headers={"accept": accept})
        assert response.status_code == 200 and response.json()["resourceType"] == "CapabilityStatement"


async def test_pretty_printed_when_asked(client: httpx.AsyncClient) -> None:
    plain = await client.get("/fhir/metadata")
    pretty = await client.get("/fhir/metadata", params={"_pretty": "true"})
    assert b"\n" not in plain.content and pretty.content.count(b"\n") > 10
    assert json.loads(pretty.content)["rest"] == plain.json()["rest"]
    xml = await client.get("/fhir/ServiceRequest/nope", params={"_pretty": "true", "_format": "xml"})
    assert xml.status_code == 404 and xml.content.count(b"\n") > 3
    assert etree.fromstring(xml.content).tag == "{http://hl7.org/fhir}OperationOutcome"


@pytest.mark.parametrize("path", ["Task/bad$id", "Task/bad$id/_history", "Task/bad$id/_history/1", "Task/" + "a" * 65])
async def test_an_id_r4_does_not_allow_is_a_404(client: httpx.AsyncClient, path: str) -> None:
    """An id outside R4's id type ([A-Za-z0-9-.]{1,64}) names no resource: the 404 of any unknown id — FHIR sets
    no other code for a read — so every id the gateway does not hold, or the caller may not see, looks the same."""
    response = await client.get(f"/fhir/{path}")
    assert (response.status_code, _dac_code(response)) == (404, "resource-not-found"), response.text


async def test_unprocessable_referral_names_the_element(client: httpx.AsyncClient) -> None:
    bundle = copy.deepcopy(load_example("referral-gp.json"))
    index = next(i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == "ServiceRequest")
    bundle["entry"][index]["resource"]["priority"] = 3
    bundle["entry"][index]["resource"]["colour"] = "blue"
    response = await _post(client, bundle)
    assert response.status_code == 422
    expressions = {issue["expression"][0] for issue in response.json()["issue"]}
    assert f"Bundle.entry[{index}].resource.colour" in expressions
    assert (await client.get("/fhir/ServiceRequest", params={"_summary": "count"})).json()["total"] == 0


async def test_body_limit_by_content_length_and_while_streaming(client: httpx.AsyncClient) -> None:
    big = b'{"resourceType": "Bundle", "type": "transaction", "entry": [], "x": "' + b"a" * 300_000 + b'"}'
    declared = await client.post("/fhir", content=big, headers=FHIR_JSON)
    assert declared.status_code == 413 and _dac_code(declared) == "body-too-large"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b" " * 10_000

    streamed = await client.post("/fhir", content=chunks(), headers=FHIR_JSON)
    assert streamed.status_code == 413 and _dac_code(streamed) == "body-too-large"


async def test_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/metadata", headers={"x-request-id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    generated = await client.get("/fhir/metadata", headers={"x-request-id": "bad id with spaces"})
    assert generated.headers["x-request-id"] != "bad id with spaces" and len(generated.headers["x-request-id"]) == 32


#: The ServiceRequest status each example ends in under the example routing (its territory's policy).
EXAMPLE_STATUS = {"referral-opposition.json": "revoked", "referral-nurse-pta-2016.json": "draft"}


async def test_every_example_posts_and_reads_back(client: httpx.AsyncClient) -> None:
    from tests.conftest import EXAMPLES

    for path in sorted(EXAMPLES.glob("*-*.json")):  # not expected.json, the kit's expectations
        bundle = load_example(path.name)
        if bundle["resourceType"] != "Bundle" or path.name == "message-opposition.json":
            continue  # the oppositions: tests/workflow/test_opposition.py
        message = path.name.startswith("message-")
        response = await client.post("/fhir/$process-message" if message else "/fhir", json=bundle, headers=FHIR_JSON)
        assert response.status_code == 200, (path.name, response.text)
        if message:
            reference = response.json()["entry"][0]["resource"]["focus"][0]["reference"].split("/fhir/")[1]
        else:
            reference = next(
                e["response"]["location"].split("/_history")[0]
                for e in response.json()["entry"]
                if "/ServiceRequest/" in e["fullUrl"]
            )
        stored = (await client.get(f"/fhir/{reference}")).json()
        posted = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest")
        assert stored["identifier"] == posted["identifier"], path.name
        assert stored["status"] == EXAMPLE_STATUS.get(path.name, "active"), path.name
