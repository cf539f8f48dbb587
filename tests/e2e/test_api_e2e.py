"""The HTTP API end to end, against a real ``gateway serve`` process (one per module, see conftest.py).

Tests share the process and its database; each one posts referrals of its own (new identifiers, new patients)
or posts an example as it is, and then asserts what holds whether or not that example was posted before (a
resubmission replays the first answer). The last test reads the process's log, so it stays last in this file.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from lxml import etree

from gateway.errors import IssueCode
from tests.e2e.conftest import ApiGateway
from tests.e2e.referrals import (
    INS_NIR,
    Bundle,
    entry,
    entry_index,
    example,
    example_bytes,
    fresh_referral,
    identifier_query,
    new_bundle_identifier,
    new_service_request_identifier,
    patient_ins,
    resource,
    same_patient,
    service_request_identifier,
    transaction_examples,
)

pytestmark = pytest.mark.e2e

FHIR_NS = "http://hl7.org/fhir"
NS = {"f": FHIR_NS}
FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
DAC_ISSUE = "https://fhir.dac-gateway.org/CodeSystem/dac-issue"
ISSUE_CODES = frozenset(code.value for code in IssueCode)
LOCATION = re.compile(r"(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})/_history/(?P<version>[1-9][0-9]*)")
#: What the README says each example's ServiceRequest becomes (default: active).
EXAMPLE_STATUS = {"referral-opposition.json": "revoked", "referral-nurse-pta-2016.json": "draft"}


# --- helpers ------------------------------------------------------------------------------------------------


def post(gateway: ApiGateway, bundle: Bundle, path: str = "") -> httpx.Response:
    """POST a bundle as FHIR JSON to the base (or ``path`` under it), remembering its patients for the log check."""
    gateway.remember(bundle)
    return httpx.post(
        gateway.base + path,
        content=json.dumps(bundle).encode(),
        headers={"content-type": FHIR_JSON},
        timeout=30,
    )


def accepted(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def locations(answer: dict[str, Any]) -> list[str]:
    return [str(e["response"]["location"]) for e in answer["entry"]]


def stored_id(answer: dict[str, Any], bundle: Bundle, resource_type: str) -> str:
    """The id the gateway gave the bundle's entry of this type (transaction-response entries are in order)."""
    match = LOCATION.fullmatch(answer["entry"][entry_index(bundle, resource_type)]["response"]["location"])
    assert match is not None and match["type"] == resource_type, answer
    return match["id"]


def search(api: httpx.Client, resource_type: str, **params: str) -> dict[str, Any]:
    response = api.get(f"/{resource_type}", params=params)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    assert found["resourceType"] == "Bundle" and found["type"] == "searchset", found
    return found


def total(api: httpx.Client, resource_type: str, **params: str) -> int:
    return int(search(api, resource_type, **params)["total"])


def ids_of(found: dict[str, Any]) -> list[str]:
    return [str(e["resource"]["id"]) for e in found.get("entry", [])]


def assert_outcome(
    response: httpx.Response, status: int, code: IssueCode, expression: str | None = None
) -> dict[str, Any]:
    """The answer is ``status`` with an OperationOutcome holding an issue with this dac-issue code (and
    expression); every issue carries a stable code. Returns that issue."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    assert response.headers["content-type"].startswith(FHIR_JSON), response.headers
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    for issue in body["issue"]:
        assert issue["severity"] in ("error", "fatal") and issue["code"] and issue["diagnostics"], issue
        assert issue["details"]["coding"][0]["system"] == DAC_ISSUE, issue
        assert issue["details"]["coding"][0]["code"] in ISSUE_CODES, issue
    matching: list[dict[str, Any]] = [i for i in body["issue"] if i["details"]["coding"][0]["code"] == code.value]
    assert matching, f"no {code.value} issue in {body}"
    if expression is not None:
        assert any(expression in i.get("expression", []) for i in matching), f"no expression {expression}: {body}"
    return matching[0]


def assert_not_stored(api: httpx.Client, bundle: Bundle) -> None:
    """Nothing of a refused referral was stored: neither its ServiceRequest nor its (new) patient."""
    assert total(api, "ServiceRequest", identifier=identifier_query(service_request_identifier(bundle))) == 0
    if any(e["resource"]["resourceType"] == "Patient" for e in bundle["entry"]):
        assert total(api, "Patient", identifier=f"{INS_NIR}|{patient_ins(bundle)}") == 0


def xml_text(element: etree._Element, path: str) -> str:
    found = element.find(path, NS)
    assert found is not None, f"no {path} in {etree.tostring(element)[:500]!r}"
    return str(found.get("value"))


# --- 1, 2, 3: the examples ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", transaction_examples())
def test_example_transaction_is_stored_and_readable(api: httpx.Client, api_gateway: ApiGateway, name: str) -> None:
    bundle = example(name)
    response = post(api_gateway, bundle)
    answer = accepted(response)
    assert response.headers["content-type"].startswith(FHIR_JSON)
    assert answer["resourceType"] == "Bundle" and answer["type"] == "transaction-response"
    assert len(answer["entry"]) == len(bundle["entry"])
    for posted, answered in zip(bundle["entry"], answer["entry"], strict=True):
        outcome = answered["response"]
        assert outcome["status"] in ("201 Created", "200 OK"), outcome
        match = LOCATION.fullmatch(outcome["location"])
        assert match is not None, outcome
        assert match["type"] == posted["resource"]["resourceType"]
        assert outcome["etag"] == f'W/"{match["version"]}"'
        if outcome["status"] == "201 Created":
            assert match["version"] == "1"
        assert answered["fullUrl"] == f"{api_gateway.base}/{match['type']}/{match['id']}"

    service_request_id = stored_id(answer, bundle, "ServiceRequest")
    patient_id = stored_id(answer, bundle, "Patient")
    read = api.get(f"/ServiceRequest/{service_request_id}")
    assert read.status_code == 200, read.text
    assert read.headers["content-type"].startswith(FHIR_JSON)
    stored = read.json()
    assert stored["resourceType"] == "ServiceRequest" and stored["id"] == service_request_id
    assert stored["status"] == EXAMPLE_STATUS.get(name, "active")
    assert stored["identifier"] == resource(bundle, "ServiceRequest")["identifier"]
    assert stored["subject"]["reference"] == f"Patient/{patient_id}"
    assert read.headers["etag"] == f'W/"{stored["meta"]["versionId"]}"'
    patient = api.get(f"/Patient/{patient_id}")
    assert patient.status_code == 200 and patient.json()["identifier"] == resource(bundle, "Patient")["identifier"]

    for xml_read in (
        api.get(f"/ServiceRequest/{service_request_id}", headers={"accept": FHIR_XML}),
        api.get(f"/ServiceRequest/{service_request_id}", params={"_format": "xml"}),
    ):
        assert xml_read.status_code == 200, xml_read.text
        assert xml_read.headers["content-type"].startswith(FHIR_XML)
        assert b'<ServiceRequest xmlns="http://hl7.org/fhir">' in xml_read.content
        root = etree.fromstring(xml_read.content)
        assert root.tag == f"{{{FHIR_NS}}}ServiceRequest"
        assert xml_text(root, "f:id") == service_request_id
        assert xml_text(root, "f:identifier/f:value") == stored["identifier"][0]["value"]
        assert xml_text(root, "f:status") == stored["status"]


def _xml_outcomes(content: bytes) -> list[tuple[str, str]]:
    root = etree.fromstring(content)
    assert root.tag == f"{{{FHIR_NS}}}Bundle", content[:300]
    assert xml_text(root, "f:type") == "transaction-response"
    return [
        (xml_text(e, "f:response/f:status"), xml_text(e, "f:response/f:location")) for e in root.findall("f:entry", NS)
    ]


def test_xml_example_transaction_and_its_replay(api_gateway: ApiGateway) -> None:
    body = example_bytes("referral-hospital-nurse.xml")
    posted_entries = len(etree.fromstring(body).findall("f:entry", NS))
    headers = {"content-type": FHIR_XML, "accept": FHIR_XML}
    api_gateway.remember(example("referral-hospital-nurse.json"))  # the same referral, as JSON

    first = httpx.post(api_gateway.base, content=body, headers=headers, timeout=30)
    assert first.status_code == 200, first.text
    assert first.headers["content-type"].startswith(FHIR_XML)
    outcomes = _xml_outcomes(first.content)
    assert len(outcomes) == posted_entries
    for status, location in outcomes:
        assert status in ("201 Created", "200 OK")
        assert LOCATION.fullmatch(location), location

    again = httpx.post(api_gateway.base, content=body, headers=headers, timeout=30)
    assert again.status_code == 200, again.text
    assert _xml_outcomes(again.content) == outcomes
    root = etree.fromstring(again.content)
    codes = [
        c.get("value") for c in root.iterfind("f:entry/f:response/f:outcome/f:OperationOutcome/f:issue/f:code", NS)
    ]
    assert "duplicate" in codes  # the replay says so

    # The JSON example is the same referral (same ServiceRequest identifier): the same answer, in JSON.
    as_json = accepted(post(api_gateway, example("referral-hospital-nurse.json")))
    assert locations(as_json) == [location for _, location in outcomes]


def test_process_message_referral(api: httpx.Client, api_gateway: ApiGateway) -> None:
    transaction = example("referral-gp.json")
    patient_id = stored_id(accepted(post(api_gateway, transaction)), transaction, "Patient")
    message = example("message-referral-gp.json")
    header = message["entry"][0]["resource"]
    header["source"]["endpoint"] = api_gateway.platform.endpoint  # updates back to the sender stay on loopback

    answer = accepted(post(api_gateway, message, "/$process-message"))
    assert answer["resourceType"] == "Bundle" and answer["type"] == "message"
    response_header = answer["entry"][0]["resource"]
    assert response_header["resourceType"] == "MessageHeader"
    assert response_header["response"]["code"] == "ok"
    assert response_header["response"]["identifier"] == header["id"]
    assert response_header["destination"] == [{"endpoint": api_gateway.platform.endpoint}]
    focus = response_header["focus"][0]["reference"]
    assert answer["entry"][1]["fullUrl"] == focus
    assert focus.startswith(f"{api_gateway.base}/ServiceRequest/")
    focused = answer["entry"][1]["resource"]
    assert focused["resourceType"] == "ServiceRequest"
    assert focused["identifier"] == resource(message, "ServiceRequest")["identifier"]
    assert focus.endswith(f"/ServiceRequest/{focused['id']}")

    stored = api.get(f"/ServiceRequest/{focused['id']}")
    assert stored.status_code == 200, stored.text
    assert stored.json()["identifier"] == focused["identifier"]
    # The GP's transaction example has the same patient (same INS): one Patient, whichever came first.
    assert stored.json()["subject"]["reference"] == f"Patient/{patient_id}"
    assert total(api, "Patient", identifier=f"{INS_NIR}|{patient_ins(message)}") == 1

    replay = accepted(post(api_gateway, message, "/$process-message"))
    assert replay["entry"][0]["resource"]["response"]["identifier"] == header["id"]
    assert replay["entry"][0]["resource"]["focus"][0]["reference"] == focus


# --- 4, 5, 6: idempotency, concurrency, conditional create -----------------------------------------------------


def test_resubmission_replays_the_first_answer(api: httpx.Client, api_gateway: ApiGateway) -> None:
    bundle = fresh_referral()
    first = accepted(post(api_gateway, bundle))
    for new in ("ServiceRequest", "Patient"):  # the professionals may be known already
        assert first["entry"][entry_index(bundle, new)]["response"]["status"] == "201 Created", first
    again = accepted(post(api_gateway, bundle))
    assert locations(again) == locations(first)
    replay_note = again["entry"][entry_index(bundle, "ServiceRequest")]["response"]["outcome"]
    assert replay_note["issue"][0]["code"] == "duplicate"
    identifier = identifier_query(service_request_identifier(bundle))
    assert total(api, "ServiceRequest", identifier=identifier) == 1

    other_bundle_id = new_bundle_identifier(copy.deepcopy(bundle))  # a retry under a new Bundle.identifier
    assert locations(accepted(post(api_gateway, other_bundle_id))) == locations(first)
    other_request_id = new_service_request_identifier(copy.deepcopy(bundle))  # the same Bundle.identifier
    assert locations(accepted(post(api_gateway, other_request_id))) == locations(first)
    assert total(api, "ServiceRequest", identifier=identifier) == 1
    assert total(api, "ServiceRequest", identifier=identifier_query(service_request_identifier(other_request_id))) == 0
    assert total(api, "Patient", identifier=f"{INS_NIR}|{patient_ins(bundle)}") == 1


async def test_concurrent_identical_posts_make_one_referral(api: httpx.Client, api_gateway: ApiGateway) -> None:
    bundle = fresh_referral()
    api_gateway.remember(bundle)
    body = json.dumps(bundle).encode()
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=20)) as client:
        responses = await asyncio.gather(
            *(client.post(api_gateway.base, content=body, headers={"content-type": FHIR_JSON}) for _ in range(20))
        )
    failures = [f"{r.status_code}: {r.text[:300]}" for r in responses if r.status_code != 200]
    assert not failures, failures
    index = entry_index(bundle, "ServiceRequest")
    service_requests = {r.json()["entry"][index]["response"]["location"] for r in responses}
    assert len(service_requests) == 1, service_requests
    assert len({tuple(locations(r.json())) for r in responses}) == 1
    assert total(api, "ServiceRequest", identifier=identifier_query(service_request_identifier(bundle))) == 1
    assert total(api, "Patient", identifier=f"{INS_NIR}|{patient_ins(bundle)}") == 1


async def test_concurrent_referrals_for_one_new_patient_make_one_patient(
    api: httpx.Client, api_gateway: ApiGateway
) -> None:
    """Different referrals (distinct ServiceRequest identifiers) for one patient not yet known, at once: the
    conditional creates race, and still one Patient (DESIGN §10)."""
    first = fresh_referral()
    bundles = [first, *(same_patient(first) for _ in range(9))]
    api_gateway.remember(first)
    async with httpx.AsyncClient(timeout=60) as client:
        responses = await asyncio.gather(
            *(
                client.post(api_gateway.base, content=json.dumps(b).encode(), headers={"content-type": FHIR_JSON})
                for b in bundles
            )
        )
    failures = [f"{r.status_code}: {r.text[:300]}" for r in responses if r.status_code != 200]
    assert not failures, failures
    patients = {stored_id(r.json(), b, "Patient") for r, b in zip(responses, bundles, strict=True)}
    assert len(patients) == 1, patients
    service_requests = {stored_id(r.json(), b, "ServiceRequest") for r, b in zip(responses, bundles, strict=True)}
    assert len(service_requests) == 10
    assert total(api, "Patient", identifier=f"{INS_NIR}|{patient_ins(first)}") == 1
    assert set(ids_of(search(api, "ServiceRequest", patient=f"Patient/{patients.pop()}"))) == service_requests


def test_two_referrals_for_one_patient_share_the_patient(api: httpx.Client, api_gateway: ApiGateway) -> None:
    first = fresh_referral()
    second = same_patient(first)
    assert service_request_identifier(first) != service_request_identifier(second)
    first_answer = accepted(post(api_gateway, first))
    second_answer = accepted(post(api_gateway, second))
    patient_id = stored_id(first_answer, first, "Patient")
    assert first_answer["entry"][entry_index(first, "Patient")]["response"]["status"] == "201 Created"
    assert second_answer["entry"][entry_index(second, "Patient")]["response"]["status"] == "200 OK"
    assert stored_id(second_answer, second, "Patient") == patient_id
    assert total(api, "Patient", identifier=f"{INS_NIR}|{patient_ins(first)}") == 1

    found = search(api, "ServiceRequest", patient=f"Patient/{patient_id}")
    assert found["total"] == 2
    assert sorted(ids_of(found)) == sorted(
        [stored_id(first_answer, first, "ServiceRequest"), stored_id(second_answer, second, "ServiceRequest")]
    )
    assert {e["resource"]["subject"]["reference"] for e in found["entry"]} == {f"Patient/{patient_id}"}


# --- 7: errors ---------------------------------------------------------------------------------------------------


def test_malformed_json_is_400(api: httpx.Client, api_gateway: ApiGateway) -> None:
    bundle = fresh_referral()
    truncated = json.dumps(bundle)[:-40]
    response = httpx.post(api_gateway.base, content=truncated, headers={"content-type": FHIR_JSON}, timeout=30)
    assert_outcome(response, 400, IssueCode.BODY_UNPARSABLE)
    assert_not_stored(api, bundle)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE Bundle [
  <!ENTITY lol "lol">
  <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<Bundle xmlns="http://hl7.org/fhir"><type value="transaction"/><entry><fullUrl value="&lol4;"/></entry></Bundle>
"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE Bundle [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<Bundle xmlns="http://hl7.org/fhir"><type value="transaction"/><id value="&secret;"/></Bundle>
"""


@pytest.mark.parametrize("body", [BILLION_LAUGHS, EXTERNAL_ENTITY], ids=["billion-laughs", "external-entity"])
def test_xml_with_a_doctype_is_400(api_gateway: ApiGateway, body: bytes) -> None:
    response = httpx.post(api_gateway.base, content=body, headers={"content-type": FHIR_XML}, timeout=30)
    assert_outcome(response, 400, IssueCode.XML_DOCTYPE_FORBIDDEN)
    assert b"root:" not in response.content
    as_xml = httpx.post(
        api_gateway.base, content=body, headers={"content-type": FHIR_XML, "accept": FHIR_XML}, timeout=30
    )
    assert as_xml.status_code == 400 and as_xml.headers["content-type"].startswith(FHIR_XML)
    root = etree.fromstring(as_xml.content)
    assert root.tag == f"{{{FHIR_NS}}}OperationOutcome"
    assert xml_text(root, "f:issue/f:details/f:coding/f:code") == IssueCode.XML_DOCTYPE_FORBIDDEN.value


def test_unknown_id_is_404(api: httpx.Client) -> None:
    assert_outcome(api.get("/ServiceRequest/no-such-referral"), 404, IssueCode.RESOURCE_NOT_FOUND)
    assert_outcome(api.get("/Patient/no-such-patient/_history"), 404, IssueCode.RESOURCE_NOT_FOUND)


def test_method_not_allowed_is_405(api: httpx.Client) -> None:
    assert_outcome(api.delete("/ServiceRequest/some-id"), 405, IssueCode.METHOD_NOT_ALLOWED)


def test_unknown_resource_type_is_404(api: httpx.Client) -> None:
    assert_outcome(api.get("/Observation/some-id"), 404, IssueCode.RESOURCE_TYPE_UNSUPPORTED)
    assert_outcome(api.get("/Observation"), 404, IssueCode.RESOURCE_TYPE_UNSUPPORTED)


def test_body_over_the_limit_is_413(api: httpx.Client, api_gateway: ApiGateway) -> None:
    bundle = fresh_referral()
    resource(bundle, "ServiceRequest")["note"][0]["text"] = "x" * (api_gateway.max_body_bytes + 1000)
    body = json.dumps(bundle).encode()
    assert len(body) > api_gateway.max_body_bytes
    api_gateway.remember(bundle)
    declared = httpx.post(api_gateway.base, content=body, headers={"content-type": FHIR_JSON}, timeout=30)
    assert_outcome(declared, 413, IssueCode.BODY_TOO_LARGE)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while the body streams in
        for start in range(0, len(body), 16_384):
            yield body[start : start + 16_384]

    streamed = httpx.post(api_gateway.base, content=chunks(), headers={"content-type": FHIR_JSON}, timeout=30)
    assert_outcome(streamed, 413, IssueCode.BODY_TOO_LARGE)
    assert_not_stored(api, bundle)


def test_unsupported_media_type_is_415(api: httpx.Client, api_gateway: ApiGateway) -> None:
    bundle = fresh_referral()
    api_gateway.remember(bundle)
    response = httpx.post(
        api_gateway.base, content=json.dumps(bundle).encode(), headers={"content-type": "text/plain"}, timeout=30
    )
    assert_outcome(response, 415, IssueCode.MEDIA_TYPE_UNSUPPORTED)
    assert_not_stored(api, bundle)


def _without_patient(bundle: Bundle) -> str:
    del bundle["entry"][entry_index(bundle, "Patient")]
    return "Bundle.entry"


def _without_service_request_identifier(bundle: Bundle) -> str:
    del resource(bundle, "ServiceRequest")["identifier"]
    return f"Bundle.entry[{entry_index(bundle, 'ServiceRequest')}].resource.identifier"


def _with_unknown_element(bundle: Bundle) -> str:
    resource(bundle, "Patient")["foo"] = "bar"
    return f"Bundle.entry[{entry_index(bundle, 'Patient')}].resource.foo"


def _with_dangling_reference(bundle: Bundle) -> str:
    resource(bundle, "ServiceRequest")["requester"] = {"reference": "urn:uuid:00000000-0000-4000-8000-000000000000"}
    return f"Bundle.entry[{entry_index(bundle, 'ServiceRequest')}].resource.requester.reference"


def _with_unknown_server_reference(bundle: Bundle) -> str:
    resource(bundle, "ServiceRequest")["requester"] = {"reference": "PractitionerRole/no-such-role"}
    return f"Bundle.entry[{entry_index(bundle, 'ServiceRequest')}].resource.requester.reference"


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (_without_patient, IssueCode.REFERRAL_PATIENT_MISSING),
        (_without_service_request_identifier, IssueCode.SERVICEREQUEST_IDENTIFIER_MISSING),
        (_with_unknown_element, IssueCode.ELEMENT_UNKNOWN),
        (_with_dangling_reference, IssueCode.REFERENCE_UNRESOLVED),
        (_with_unknown_server_reference, IssueCode.REFERENCE_UNRESOLVED),
    ],
    ids=["patient-missing", "identifier-missing", "element-unknown", "urn-uuid-unresolved", "server-unresolved"],
)
def test_invalid_referral_is_422_and_stores_nothing(
    api: httpx.Client, api_gateway: ApiGateway, mutate: Callable[[Bundle], str], code: IssueCode
) -> None:
    bundle = fresh_referral()
    reference = copy.deepcopy(bundle)  # its identifiers, to look for what must not have been stored
    expression = mutate(bundle)
    assert_outcome(post(api_gateway, bundle), 422, code, expression)
    assert_not_stored(api, reference)


def _xml_with_unknown_element() -> bytes:
    root = etree.fromstring(example_bytes("referral-hospital-nurse.xml"))
    patient = root.find("f:entry/f:resource/f:Patient", NS)
    assert patient is not None
    identifier = patient.find("f:identifier", NS)
    assert identifier is not None
    identifier.addprevious(etree.Element(f"{{{FHIR_NS}}}foo", value="bar"))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def test_xml_referral_with_an_unknown_element_is_422(api_gateway: ApiGateway) -> None:
    body = _xml_with_unknown_element()
    response = httpx.post(api_gateway.base, content=body, headers={"content-type": FHIR_XML}, timeout=30)
    patient_index = entry_index(example("referral-hospital-nurse.json"), "Patient")
    assert_outcome(response, 422, IssueCode.ELEMENT_UNKNOWN, f"Bundle.entry[{patient_index}].resource.foo")


def _bundle_identifier_a_list(bundle: Bundle) -> str:
    bundle["identifier"] = [bundle["identifier"]]
    return "Bundle.identifier"


def _subject_a_list(bundle: Bundle) -> str:
    service_request = resource(bundle, "ServiceRequest")
    service_request["subject"] = [service_request["subject"]]
    return f"Bundle.entry[{entry_index(bundle, 'ServiceRequest')}].resource.subject"


def _birth_date_invalid(bundle: Bundle) -> str:
    resource(bundle, "Patient")["birthDate"] = "1938-13-45"
    return f"Bundle.entry[{entry_index(bundle, 'Patient')}].resource.birthDate"


def _nested_unknown_element(bundle: Bundle) -> str:
    resource(bundle, "Patient")["name"][0]["nickname"] = "Jeannette"
    return f"Bundle.entry[{entry_index(bundle, 'Patient')}].resource.name[0].nickname"


def _extension_without_url(bundle: Bundle) -> str:
    resource(bundle, "Patient")["extension"].append({"valueString": "x"})
    index = len(resource(bundle, "Patient")["extension"]) - 1
    return f"Bundle.entry[{entry_index(bundle, 'Patient')}].resource.extension[{index}].url"


def _identifier_an_object(bundle: Bundle) -> str:
    resource(bundle, "ServiceRequest")["identifier"] = {"system": "urn:x", "value": "y"}
    return f"Bundle.entry[{entry_index(bundle, 'ServiceRequest')}].resource.identifier"


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (_bundle_identifier_a_list, IssueCode.VALUE_INVALID),
        (_subject_a_list, IssueCode.VALUE_INVALID),
        (_birth_date_invalid, IssueCode.VALUE_INVALID),
        (_nested_unknown_element, IssueCode.ELEMENT_UNKNOWN),
        (_extension_without_url, IssueCode.ELEMENT_REQUIRED),
        (_identifier_an_object, IssueCode.VALUE_INVALID),
    ],
    ids=[
        "bundle-identifier-a-list",
        "subject-a-list",
        "birth-date-invalid",
        "nested-unknown",
        "extension-url-missing",
        "id-an-object",
    ],
)
def test_structure_errors_name_the_element_as_posted(
    api: httpx.Client, api_gateway: ApiGateway, mutate: Callable[[Bundle], str], code: IssueCode
) -> None:
    """The expression is the FHIRPath of the element in the posted bundle (DESIGN §4), nothing else."""
    bundle = fresh_referral()
    reference = copy.deepcopy(bundle)
    expression = mutate(bundle)
    issue = assert_outcome(post(api_gateway, bundle), 422, code)
    assert issue["expression"] == [expression]
    assert_not_stored(api, reference)


def test_unknown_search_parameter_is_400(api: httpx.Client) -> None:
    issue = assert_outcome(
        api.get("/ServiceRequest", params={"colour": "blue"}), 400, IssueCode.SEARCH_PARAMETER_UNKNOWN
    )
    assert issue["expression"] == ["colour"]


def _set(path: list[str | int], value: Any) -> Callable[[Bundle], None]:
    def mutate(bundle: Bundle) -> None:
        node: Any = bundle
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value

    return mutate


def _service_request_set(key: str, value: Any) -> Callable[[Bundle], None]:
    return lambda bundle: resource(bundle, "ServiceRequest").__setitem__(key, value)


def _patient_set(key: str, value: Any) -> Callable[[Bundle], None]:
    return lambda bundle: resource(bundle, "Patient").__setitem__(key, value)


def _patient_request(request: dict[str, str]) -> Callable[[Bundle], None]:
    return lambda bundle: entry(bundle, "Patient").__setitem__("request", request)


def _duplicate_service_request(bundle: Bundle) -> None:
    bundle["entry"].append(copy.deepcopy(entry(bundle, "ServiceRequest")) | {"fullUrl": "urn:uuid:1-2-3"})


def _duplicate_full_url(bundle: Bundle) -> None:
    bundle["entry"][2]["fullUrl"] = bundle["entry"][1]["fullUrl"]


#: Referrals broken in ways a sender's software can break them: every one is refused with a 4xx, never a 500.
BROKEN: dict[str, Callable[[Bundle], None]] = {
    "entry-is-a-string": _set(["entry", 1], "oops"),
    "entry-resource-null": _set(["entry", 1, "resource"], None),
    "entries-empty": _set(["entry"], []),
    "bundle-type-batch": _set(["type"], "batch"),
    "bundle-identifier-a-list": _set(["identifier"], [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:x"}]),
    "resource-type-unknown": _set(["entry", 1, "resource", "resourceType"], "Foo"),
    "resource-type-not-allowed": _set(["entry", 1, "resource", "resourceType"], "Observation"),
    "request-method-delete": _set(["entry", 0, "request"], {"method": "DELETE", "url": "ServiceRequest"}),
    "request-missing": _set(["entry", 0, "request"], None),
    "status-bogus": _service_request_set("status", "bogus"),
    "status-completed": _service_request_set("status", "completed"),
    "subject-another-patient": _service_request_set("subject", {"reference": "Patient/no-such-patient"}),
    "subject-reference-a-number": _service_request_set("subject", {"reference": 12}),
    "identifier-an-object": _service_request_set("identifier", {"system": "urn:x", "value": "y"}),
    "identifier-without-value": _service_request_set("identifier", [{"system": "urn:x"}]),
    "birth-date-a-number": _patient_set("birthDate", 19381103),
    "birth-date-invalid": _patient_set("birthDate", "1938-13-45"),
    "gender-an-object": _patient_set("gender", {"code": "female"}),
    "extension-without-url": _patient_set("extension", [{"valueString": "x"}]),
    "if-none-exist-unknown-parameter": _patient_request({"method": "POST", "url": "Patient", "ifNoneExist": "foo=1"}),
    "put-patient-unknown": _patient_request({"method": "PUT", "url": "Patient/no-such-patient"}),
    "put-patient-if-match": _patient_request({"method": "PUT", "url": "Patient/nope", "ifMatch": 'W/"9"'}),
    "two-service-requests": _duplicate_service_request,
    "duplicate-full-url": _duplicate_full_url,
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_referral_is_refused_never_500(api: httpx.Client, api_gateway: ApiGateway, name: str) -> None:
    bundle = fresh_referral()
    reference = copy.deepcopy(bundle)
    api_gateway.remember(reference)
    BROKEN[name](bundle)
    response = post(api_gateway, bundle)
    assert 400 <= response.status_code < 500, f"{response.status_code}: {response.text}"
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    assert all(issue["details"]["coding"][0]["code"] in ISSUE_CODES for issue in body["issue"]), body
    assert_not_stored(api, reference)


@pytest.mark.parametrize(
    "body", [b"[]", b"null", b'"Bundle"', b"{}", b'{"resourceType": 12}', b"\xff\xfe{}", b'{"resourceType": "Foo"}']
)
def test_a_body_that_is_no_bundle_is_refused_never_500(api_gateway: ApiGateway, body: bytes) -> None:
    response = httpx.post(api_gateway.base, content=body, headers={"content-type": FHIR_JSON}, timeout=30)
    assert 400 <= response.status_code < 500, f"{response.status_code}: {response.text}"
    assert response.json()["resourceType"] == "OperationOutcome"


# --- 8, 9: read API, capabilities --------------------------------------------------------------------------------


def test_read_version_history_and_conditional_read(api: httpx.Client, api_gateway: ApiGateway) -> None:
    bundle = fresh_referral()
    service_request_id = stored_id(accepted(post(api_gateway, bundle)), bundle, "ServiceRequest")

    version = api.get(f"/ServiceRequest/{service_request_id}/_history/1")
    assert version.status_code == 200, version.text
    assert version.json()["id"] == service_request_id and version.json()["meta"]["versionId"] == "1"
    assert version.headers["etag"] == 'W/"1"'
    assert version.headers["content-location"].endswith(f"ServiceRequest/{service_request_id}/_history/1")
    assert_outcome(api.get(f"/ServiceRequest/{service_request_id}/_history/99"), 404, IssueCode.VERSION_NOT_FOUND)

    history = api.get(f"/ServiceRequest/{service_request_id}/_history")
    assert history.status_code == 200, history.text
    found = history.json()
    assert found["resourceType"] == "Bundle" and found["type"] == "history"
    assert found["total"] == len(found["entry"]) >= 1
    versions = [e["resource"]["meta"]["versionId"] for e in found["entry"]]
    assert versions == sorted(versions, key=int, reverse=True) and versions[-1] == "1"
    assert all(e["resource"]["id"] == service_request_id for e in found["entry"])
    assert found["entry"][-1]["response"]["etag"] == 'W/"1"'

    current = api.get(f"/ServiceRequest/{service_request_id}")
    unchanged = api.get(f"/ServiceRequest/{service_request_id}", headers={"if-none-match": current.headers["etag"]})
    assert unchanged.status_code == 304 and unchanged.content == b""


def test_search_paging_last_updated_and_summary(api: httpx.Client, api_gateway: ApiGateway) -> None:
    created = []
    for _ in range(5):
        bundle = fresh_referral()
        answer = accepted(post(api_gateway, bundle))
        created.append(stored_id(answer, bundle, "ServiceRequest"))
        patient_id = stored_id(answer, bundle, "Patient")
        assert ids_of(search(api, "ServiceRequest", patient=f"Patient/{patient_id}")) == [created[-1]]

    first_page = search(api, "ServiceRequest", _count="2")
    everything = first_page["total"]
    assert everything >= 5
    assert len(first_page["entry"]) == 2
    links = {link["relation"]: link["url"] for link in first_page["link"]}
    assert "next" in links and "previous" not in links
    second = httpx.get(links["next"], timeout=30)
    assert second.status_code == 200, second.text
    second_page = second.json()
    assert second_page["total"] == everything and len(second_page["entry"]) == 2
    assert not set(ids_of(first_page)) & set(ids_of(second_page))

    page = search(api, "ServiceRequest", _count="10")  # follow `next` to the end: every one exactly once
    seen = ids_of(page)
    while next_url := next((link["url"] for link in page["link"] if link["relation"] == "next"), None):
        page = httpx.get(next_url, timeout=30).json()
        seen += ids_of(page)
    assert len(seen) == len(set(seen)) == everything
    assert set(created) <= set(seen)

    day = api.get(f"/ServiceRequest/{created[0]}").json()["meta"]["lastUpdated"][:10]
    ours = ",".join(created)
    assert total(api, "ServiceRequest", _id=ours) == 5
    assert total(api, "ServiceRequest", _id=ours, _lastUpdated=f"ge{day}") == 5
    assert total(api, "ServiceRequest", _id=ours, _lastUpdated=f"lt{day}") == 0
    assert total(api, "ServiceRequest", _lastUpdated=f"ge{day}") >= 5

    counted = search(api, "ServiceRequest", _summary="count")
    assert counted["total"] == everything and not counted.get("entry")


def test_capability_statement(api: httpx.Client) -> None:
    response = api.get("/metadata")
    assert response.status_code == 200 and response.headers["content-type"].startswith(FHIR_JSON)
    statement = response.json()
    assert statement["resourceType"] == "CapabilityStatement" and statement["fhirVersion"] == "4.0.1"
    assert set(statement["format"]) >= {FHIR_JSON, FHIR_XML}
    rest = statement["rest"][0]
    service_request = next(r for r in rest["resource"] if r["type"] == "ServiceRequest")
    assert {"identifier", "patient", "status", "_lastUpdated"} <= {p["name"] for p in service_request["searchParam"]}
    assert {"read", "vread", "search-type"} <= {i["code"] for i in service_request["interaction"]}
    assert {"Task", "Consent", "CareTeam", "Patient"} <= {r["type"] for r in rest["resource"]}
    assert "process-message" in {operation["name"] for operation in rest["operation"]}
    assert "transaction" in {interaction["code"] for interaction in rest["interaction"]}

    as_xml = api.get("/metadata", headers={"accept": FHIR_XML})
    assert as_xml.status_code == 200 and as_xml.headers["content-type"].startswith(FHIR_XML)
    root = etree.fromstring(as_xml.content)
    assert root.tag == f"{{{FHIR_NS}}}CapabilityStatement"
    assert xml_text(root, "f:fhirVersion") == "4.0.1"
    names = root.xpath("f:rest/f:resource[f:type/@value='ServiceRequest']/f:searchParam/f:name/@value", namespaces=NS)
    assert isinstance(names, list) and {"identifier", "patient", "status"} <= set(map(str, names))
    assert "process-message" in {n.get("value") for n in root.iterfind("f:rest/f:operation/f:name", NS)}


# --- 10: request ids and logs (keep last: it reads the log of everything above) -------------------------------

REQUEST_ID = "e2e-request-0001"


def test_request_id_is_echoed(api: httpx.Client) -> None:
    assert api.get("/metadata", headers={"x-request-id": REQUEST_ID}).headers["x-request-id"] == REQUEST_ID
    failed = api.get("/ServiceRequest/no-such-referral", headers={"x-request-id": "e2e-request-0002"})
    assert failed.status_code == 404 and failed.headers["x-request-id"] == "e2e-request-0002"
    generated = api.get("/metadata").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    unsafe = api.get("/metadata", headers={"x-request-id": "<script> and spaces"}).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", unsafe)


def test_log_lines_are_json_without_patient_data(api_gateway: ApiGateway) -> None:
    lines = api_gateway.log_lines()
    assert lines
    events = []
    for line in lines:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"a log line is not JSON: {line[:300]}")
        assert isinstance(event, dict) and event.get("event") and event.get("level"), line
        events.append(event)
    assert any(
        e.get("request_id") == REQUEST_ID and e.get("route") == "/fhir/metadata" and e.get("status") == 200
        for e in events
    ), "no access log line for the request id sent"
    assert api_gateway.sensitive, "the tests above posted patients"
    leaked = sorted(value for value in api_gateway.sensitive if value in "\n".join(lines))
    assert not leaked, f"patient data in the log: {leaked}"


def test_conformance_resources_served(api: httpx.Client) -> None:
    """What other FHIR tools fetch (DESIGN §15), from a running gateway; each answer checked by the independent
    validators like every other."""
    for path, params in (
        ("/OperationDefinition", {"url": "https://fhir.dac-gateway.org/OperationDefinition/dac-validate"}),
        ("/SearchParameter/dac-task-deadline", {}),
        ("/CodeSystem", {"name": "DacMission"}),
        ("/ValueSet/$expand", {"url": "https://fhir.dac-gateway.org/ValueSet/dac-mission"}),
        ("/MessageDefinition/referral-request", {}),
        ("/StructureDefinition", {"url": "https://fhir.dac-gateway.org/StructureDefinition/dac-task"}),
    ):
        response = api.get(path, params=params)
        assert response.status_code == 200, (path, response.text[:300])
        body = response.json()
        assert body.get("total", 1) == 1, path
