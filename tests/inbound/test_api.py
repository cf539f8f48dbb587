"""POST /hl7v2 and POST /cda: every example of examples/hl7v2 and examples/cda gives the outcome examples/README.md
states, on both backends, with authentication off and on; a replay gets its first ACK; concurrent copies make one
referral."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import httpx
import pytest

from gateway import Settings, create_app
from gateway.errors import IssueCode, StoreUnavailable
from gateway.routing.config import RoutingTable
from gateway.store import Database
from tests.auth.conftest import OPERATOR, READ_ONLY, SENDER, token_of

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
V2 = "x-application/hl7-v2+er7"
CDA = "application/hl7-cda+xml"


def segments(ack: bytes) -> dict[str, list[list[str]]]:
    found: dict[str, list[list[str]]] = {}
    for line in ack.decode("latin-1").split("\r"):
        if line:
            found.setdefault(line[:3], []).append(line.split("|"))
    return found


#: file → (HTTP status, MSA-1, [(ERR-2 location, ERR-5 dac-issue code)])
V2_EXPECTED = {
    "ref-i12-discharge.hl7": (200, "AA", []),
    "ref-i12-8859-15.hl7": (200, "AA", []),
    "mdm-t02-cda.hl7": (200, "AA", []),
    "invalid-ins-key.hl7": (200, "AE", [("PID^1^3^1^1", "ins-key-invalid")]),
    "invalid-missing-trait.hl7": (
        200,
        "AE",
        [("PID^1^3^1", "invariant-failed"), ("PID^1^7^1^1", "ins-traits-missing")],
    ),
    "invalid-unknown-mission.hl7": (200, "AE", [("RF1^1^3^1^1", "mission-invalid")]),
    "invalid-wrong-type.hl7": (400, "AR", [("MSH^1^9^1^1", "hl7v2-message-unsupported")]),
    "invalid-broken-encoding.hl7": (400, "AR", [("PRD^1^1", "hl7v2-encoding-invalid")]),
}


async def post_v2(http: httpx.AsyncClient, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return await http.post("/hl7v2", content=body, headers={"Content-Type": V2, **(headers or {})})


@pytest.mark.parametrize("name", sorted(V2_EXPECTED))
async def test_each_v2_example_gives_its_outcome(client: httpx.AsyncClient, name: str) -> None:
    status, code, errors = V2_EXPECTED[name]
    answer = await post_v2(client, (EXAMPLES / "hl7v2" / name).read_bytes())
    assert answer.status_code == status, answer.content
    ack = segments(answer.content)
    assert ack["MSA"][0][1] == code, answer.content
    found = [(err[2], err[5].split("^")[0]) for err in ack.get("ERR", [])]
    assert found == errors, answer.content
    control_id = segments((EXAMPLES / "hl7v2" / name).read_bytes().replace(b"\n", b"\r"))["MSH"][0][9]
    assert ack["MSA"][0][2] == control_id  # even a refused message's ACK names the message it answers
    if code == "AA":
        reference = ack["MSA"][0][3]
        assert reference.startswith("ServiceRequest/")
        stored = (await client.get(f"/fhir/{reference}")).json()
        assert stored["resourceType"] == "ServiceRequest"


async def test_the_discharge_is_the_referral_a_fhir_sender_would_post(client: httpx.AsyncClient) -> None:
    answer = await post_v2(client, (EXAMPLES / "hl7v2" / "ref-i12-discharge.hl7").read_bytes())
    reference = segments(answer.content)["MSA"][0][3]
    request = (await client.get(f"/fhir/{reference}")).json()
    assert request["identifier"] == [
        {"system": "urn:oid:1.2.250.1.71.4.2.2.1590789012", "value": "CH3R-SORTIE-2025-004518"}
    ]
    assert request["priority"] == "urgent"
    assert request["code"]["coding"][0]["code"] == "pathway-support"
    assert request["status"] == "active"  # dac-2022 (Lille): routed at once, the GP informed
    patient = (await client.get(f"/fhir/{request['subject']['reference']}")).json()
    assert patient["name"][0] == {"use": "official", "family": "DUBOIS", "given": ["Jeanne", "Marie", "Thérèse"]}
    assert patient["birthDate"] == "1938-11-03"
    assert patient["gender"] == "female"
    tasks = (await client.get("/fhir/Task", params={"focus": reference})).json()
    codes = sorted(e["resource"]["code"]["coding"][0]["code"] for e in tasks.get("entry", []))
    # No Consent in v2: the platform informs the patient; the GP (PRD PP) is told; the platform takes it in.
    assert codes == ["gp-information", "patient-information", "platform-intake"]


async def test_8859_15_names_arrive_intact(client: httpx.AsyncClient) -> None:
    answer = await post_v2(client, (EXAMPLES / "hl7v2" / "ref-i12-8859-15.hl7").read_bytes())
    assert answer.headers["content-type"].endswith("charset=iso-8859-15")
    reference = segments(answer.content)["MSA"][0][3]
    request = (await client.get(f"/fhir/{reference}")).json()
    assert request["note"][0]["text"].endswith("(Mme Œillet-Fabre) souhaite un appui.")
    patient = (await client.get(f"/fhir/{request['subject']['reference']}")).json()
    assert patient["name"][0]["given"] == ["Gérard", "Louis"]


async def test_a_replay_gets_its_first_ack_and_stores_nothing_more(client: httpx.AsyncClient) -> None:
    body = (EXAMPLES / "hl7v2" / "ref-i12-discharge.hl7").read_bytes()
    first = await post_v2(client, body)
    again = await post_v2(client, body)
    assert again.content == first.content
    # The same referral under another MSH-10 (RF1-6 unchanged): the same referral, not a second one.
    other = await post_v2(client, body.replace(b"CH3R-MSG-000451", b"CH3R-MSG-999999"))
    assert segments(other.content)["MSA"][0][3] == segments(first.content)["MSA"][0][3]
    found = (await client.get("/fhir/ServiceRequest", params={"_summary": "count"})).json()
    assert found["total"] == 1


async def test_concurrent_copies_make_one_referral(client: httpx.AsyncClient) -> None:
    body = (EXAMPLES / "hl7v2" / "ref-i12-discharge.hl7").read_bytes()
    answers = await asyncio.gather(*(post_v2(client, body) for _ in range(6)))
    assert {a.status_code for a in answers} == {200}
    assert len({segments(a.content)["MSA"][0][3] for a in answers}) == 1
    assert {segments(a.content)["MSA"][0][1] for a in answers} == {"AA"}
    found = (await client.get("/fhir/ServiceRequest", params={"_summary": "count"})).json()
    assert found["total"] == 1
    patients = (await client.get("/fhir/Patient", params={"_summary": "count"})).json()
    assert patients["total"] == 1


async def test_an_ae_stores_nothing(client: httpx.AsyncClient) -> None:
    answer = await post_v2(client, (EXAMPLES / "hl7v2" / "invalid-ins-key.hl7").read_bytes())
    assert segments(answer.content)["MSA"][0][1] == "AE"
    for resource_type in ("ServiceRequest", "Patient", "Practitioner"):
        found = (await client.get(f"/fhir/{resource_type}", params={"_summary": "count"})).json()
        assert found["total"] == 0, resource_type


async def test_the_gp_letter_cda_becomes_a_referral_with_the_document_kept(client: httpx.AsyncClient) -> None:
    body = (EXAMPLES / "cda" / "lettre-de-liaison-gp.xml").read_bytes()
    answer = await client.post("/cda", content=body, headers={"Content-Type": CDA})
    assert answer.status_code == 200, answer.text
    entries = answer.json()["entry"]
    assert entries[0]["response"]["status"] == "201 Created"
    reference = entries[0]["response"]["location"].split("/_history")[0]
    request = (await client.get(f"/fhir/{reference}")).json()
    assert request["identifier"][0] == {
        "system": "urn:oid:1.2.250.1.71.4.2.2.1440012342",
        "value": "MSP-BDL-LDL-2025-000143",
    }
    document = (await client.get(f"/fhir/{request['supportingInfo'][0]['reference']}")).json()
    assert base64.b64decode(document["content"][0]["attachment"]["data"]) == body
    # The GP refers her own patient: no validation, no information Task; the patient is informed by the platform.
    tasks = (await client.get("/fhir/Task", params={"focus": reference})).json()
    codes = sorted(e["resource"]["code"]["coding"][0]["code"] for e in tasks.get("entry", []))
    assert codes == ["patient-information", "platform-intake"]


async def test_a_cda_issue_names_its_xpath_and_its_fhirpath(client: httpx.AsyncClient) -> None:
    body = (EXAMPLES / "cda" / "invalid-ins-key.xml").read_bytes()
    answer = await client.post("/cda", content=body, headers={"Content-Type": CDA})
    assert answer.status_code == 422, answer.text
    issue = answer.json()["issue"][0]
    assert issue["details"]["coding"][0]["code"] == "ins-key-invalid"
    assert issue["location"] == ["/cda:ClinicalDocument/cda:recordTarget/cda:patientRole/cda:id/@extension"]
    assert issue["expression"] == ["Bundle.entry[1].resource.identifier[0].value"]


async def test_a_cda_with_a_doctype_is_refused_before_it_is_read(client: httpx.AsyncClient) -> None:
    body = (EXAMPLES / "cda" / "invalid-doctype.xml").read_bytes()
    answer = await client.post("/cda", content=body, headers={"Content-Type": CDA})
    assert answer.status_code == 400
    assert answer.json()["issue"][0]["details"]["coding"][0]["code"] == "xml-doctype-forbidden"
    found = (await client.get("/fhir/ServiceRequest", params={"_summary": "count"})).json()
    assert found["total"] == 0


async def test_not_a_cda_and_wrong_media_types(client: httpx.AsyncClient) -> None:
    fhir = (EXAMPLES / "referral-hospital-nurse.xml").read_bytes()
    answer = await client.post("/cda", content=fhir, headers={"Content-Type": CDA})
    assert answer.status_code == 400
    assert answer.json()["issue"][0]["details"]["coding"][0]["code"] == "cda-invalid"
    assert (
        await client.post("/cda", content=fhir, headers={"Content-Type": "application/fhir+xml"})
    ).status_code == 415
    assert (await client.post("/hl7v2", content=b"MSH|", headers={"Content-Type": "text/plain"})).status_code == 415


async def test_with_authentication_on_a_sender_token_is_needed(secure: httpx.AsyncClient) -> None:
    body = (EXAMPLES / "hl7v2" / "ref-i12-discharge.hl7").read_bytes()
    assert (await post_v2(secure, body)).status_code == 401
    cda = (EXAMPLES / "cda" / "lettre-de-liaison-gp.xml").read_bytes()
    assert (await secure.post("/cda", content=cda, headers={"Content-Type": CDA})).status_code == 401
    reader = await token_of(secure, READ_ONLY)
    assert (await post_v2(secure, body, reader)).status_code == 403
    sender = await token_of(secure, SENDER)
    answer = await post_v2(secure, body, sender)
    assert segments(answer.content)["MSA"][0][1] == "AA", answer.content
    reference = segments(answer.content)["MSA"][0][3]
    # The sender reads back what it sent, as after POST /fhir; another sender does not.
    assert (await secure.get(f"/fhir/{reference}", headers=sender)).status_code == 200
    answer = await secure.post("/cda", content=cda, headers={"Content-Type": CDA, **sender})
    assert answer.status_code == 200, answer.text
    invalid = await post_v2(secure, (EXAMPLES / "hl7v2" / "invalid-ins-key.hl7").read_bytes(), sender)
    assert [e[2] for e in segments(invalid.content)["ERR"]] == ["PID^1^3^1^1"]


async def test_the_nurse_letter_without_a_gp_gets_the_platform_to_contact_one(client: httpx.AsyncClient) -> None:
    body = (EXAMPLES / "cda" / "lettre-de-liaison-nurse.xml").read_bytes()
    answer = await client.post("/cda", content=body, headers={"Content-Type": CDA})
    assert answer.status_code == 200, answer.text
    reference = answer.json()["entry"][0]["response"]["location"].split("/_history")[0]
    tasks = (await client.get("/fhir/Task", params={"focus": reference})).json()
    codes = sorted(e["resource"]["code"]["coding"][0]["code"] for e in tasks.get("entry", []))
    assert codes == ["contact-gp", "patient-information", "platform-intake"]


async def test_the_mdm_carries_the_cda_which_is_kept(client: httpx.AsyncClient) -> None:
    answer = await post_v2(client, (EXAMPLES / "hl7v2" / "mdm-t02-cda.hl7").read_bytes())
    reference = segments(answer.content)["MSA"][0][3]
    request = (await client.get(f"/fhir/{reference}")).json()
    assert request["identifier"][0]["value"] == "CSI-BASTIDE-LDL-2025-0192"
    document = (await client.get(f"/fhir/{request['supportingInfo'][0]['reference']}")).json()
    kept = base64.b64decode(document["content"][0]["attachment"]["data"])
    assert kept == (EXAMPLES / "cda" / "lettre-de-liaison-nurse.xml").read_bytes()


@pytest.mark.parametrize("line_break", [b"\\X0D\\\\X0A\\", b"\\.br\\"])
async def test_a_base64_cda_wrapped_in_lines_is_read(client: httpx.AsyncClient, line_break: bytes) -> None:
    """Senders wrap Base64 at 76 characters, the line breaks escaped in OBX-5 (HL7 v2.5 §2.7): they are no data."""
    message = (EXAMPLES / "hl7v2" / "mdm-t02-cda.hl7").read_bytes()
    start = message.index(b"^Base64^") + len(b"^Base64^")
    end = message.index(b"\r", start)
    encoded = message[start:end]
    wrapped = line_break.join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    answer = await post_v2(client, message[:start] + wrapped + message[end:])
    assert segments(answer.content)["MSA"][0][1] == "AA", answer.text
    reference = segments(answer.content)["MSA"][0][3]
    request = (await client.get(f"/fhir/{reference}")).json()
    document = (await client.get(f"/fhir/{request['supportingInfo'][0]['reference']}")).json()
    kept = base64.b64decode(document["content"][0]["attachment"]["data"])
    assert kept == (EXAMPLES / "cda" / "lettre-de-liaison-nurse.xml").read_bytes()


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (
            StoreUnavailable.single(IssueCode.STORE_UNAVAILABLE, "the database cannot be reached"),
            503,
            "store-unavailable",
        ),
        (RuntimeError("a bug"), 200, "internal-error"),
    ],
)
async def test_a_failure_unrelated_to_the_message_is_an_ar_to_resend(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, failure: Exception, status: int, code: str
) -> None:
    """HL7 v2.5 §2.9.2.2 c): the receiver failing for reasons unrelated to the message's content answers AR, which
    interface engines resend later; an AE is the message's own error, which they do not."""

    async def failing(*_: object) -> None:
        raise failure

    monkeypatch.setattr("gateway.inbound.service.process_transaction", failing)
    answer = await post_v2(client, (EXAMPLES / "hl7v2" / "ref-i12-discharge.hl7").read_bytes())
    assert answer.status_code == status
    found = segments(answer.content)
    assert found["MSA"][0][1:3] == ["AR", "CH3R-MSG-000451"]
    assert [err[5] for err in found["ERR"]] == [f"{code}^^dac-issue"]


async def test_an_hl7v2_referral_is_audited_as_its_senders_transaction(secure: httpx.AsyncClient) -> None:
    sender = await token_of(secure, SENDER)
    answer = await post_v2(secure, (EXAMPLES / "hl7v2" / "ref-i12-discharge.hl7").read_bytes(), sender)
    reference = segments(answer.content)["MSA"][0][3]
    operator = await token_of(secure, OPERATOR)
    found = await secure.get(
        "/fhir/AuditEvent",
        params={"subtype": "transaction", "agent": "hospital", "entity": reference},
        headers=operator,
    )
    assert found.json()["total"] == 1, found.text


async def test_concurrent_copies_of_a_cda_make_one_referral(client: httpx.AsyncClient) -> None:
    body = (EXAMPLES / "cda" / "lettre-de-liaison-gp.xml").read_bytes()
    answers = await asyncio.gather(
        *(client.post("/cda", content=body, headers={"Content-Type": CDA}) for _ in range(6))
    )
    assert {a.status_code for a in answers} == {200}, [a.text for a in answers if a.status_code != 200]
    locations = {a.json()["entry"][0]["response"]["location"] for a in answers}
    assert len(locations) == 1
    for resource_type in ("ServiceRequest", "DocumentReference", "Patient"):
        found = (await client.get(f"/fhir/{resource_type}", params={"_summary": "count"})).json()
        assert found["total"] == 1, resource_type


async def test_a_training_message_never_becomes_a_referral(
    client: httpx.AsyncClient, settings: Settings, database: Database, routing: RoutingTable
) -> None:
    """MSH-11 T (training) or D (debugging) from a hospital's test system is an AR 202 on a production gateway —
    nothing stored, nothing routed; a gateway set up for testing (GATEWAY_HL7V2_PROCESSING_ID=T) takes T only."""
    production = (EXAMPLES / "hl7v2" / "ref-i12-discharge.hl7").read_bytes()
    training = production.replace(b"|P|2.5", b"|T|2.5", 1)
    assert training != production
    for body in (training, production.replace(b"|P|2.5", b"|D|2.5", 1)):
        answer = await post_v2(client, body)
        assert answer.status_code == 400, answer.content
        found = segments(answer.content)
        assert found["MSA"][0][1:3] == ["AR", "CH3R-MSG-000451"]
        assert [(err[2], err[3].split("^")[0], err[5]) for err in found["ERR"]] == [
            ("MSH^1^11", "202", "hl7v2-message-unsupported^^dac-issue")
        ]
    assert (await client.get("/fhir/ServiceRequest", params={"_summary": "count"})).json()["total"] == 0
    testing = create_app(settings.model_copy(update={"hl7v2_processing_id": "T"}), database, routing)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=testing), base_url="http://gateway.test") as http:
        assert segments((await post_v2(http, production)).content)["MSA"][0][1] == "AR"
        assert segments((await post_v2(http, training)).content)["MSA"][0][1] == "AA"
    assert (await client.get("/fhir/ServiceRequest", params={"_summary": "count"})).json()["total"] == 1


@pytest.fixture(params=["auth-off", "auth-on"])
async def v2_sender(
    request: pytest.FixtureRequest, client: httpx.AsyncClient, secure: httpx.AsyncClient
) -> tuple[httpx.AsyncClient, dict[str, str]]:
    """The application and a sender's headers, with authentication off and on."""
    return (client, {}) if request.param == "auth-off" else (secure, await token_of(secure, SENDER))


async def test_v2_identity_traits_are_compared_as_the_ins_referential_writes_them(
    v2_sender: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    """HL7 v2 feeds often send names in upper case without accents — the form of the référentiel INS, in which
    identity traits are compared: ``MARIE THERESE`` for the ``Marie Thérèse`` on record is the same patient (one
    Patient, the second referral stored), while another given name is still refused ``ins-traits-mismatch``."""
    http, sender = v2_sender
    body = (EXAMPLES / "hl7v2" / "ref-i12-discharge.hl7").read_bytes()
    first = await post_v2(http, body, sender)
    assert segments(first.content)["MSA"][0][1] == "AA", first.content

    def another(number: str, names: bytes) -> bytes:  # another referral (MSH-10, RF1-6) naming the same INS
        changed = body.replace(b"CH3R-MSG-000451", f"CH3R-MSG-{number}".encode())
        changed = changed.replace(b"CH3R-SORTIE-2025-004518", f"CH3R-SORTIE-2025-{number}".encode())
        return changed.replace("DUBOIS^Jeanne^Marie Thérèse^^^^L".encode(), names)

    folded = await post_v2(http, another("100001", b"DUBOIS^JEANNE^MARIE THERESE^^^^L"), sender)
    assert segments(folded.content)["MSA"][0][1] == "AA", folded.content
    patients = (await http.get("/fhir/Patient", params={"_summary": "count"}, headers=sender)).json()
    assert patients["total"] == 1
    subjects = set()
    for answer in (first, folded):
        reference = segments(answer.content)["MSA"][0][3]
        subjects.add((await http.get(f"/fhir/{reference}", headers=sender)).json()["subject"]["reference"])
    assert len(subjects) == 1
    other = await post_v2(http, another("100002", b"DUBOIS^JEANNE^MARIE LOUISE^^^^L"), sender)
    ack = segments(other.content)
    assert ack["MSA"][0][1] == "AE", other.content
    assert [err[5].split("^")[0] for err in ack["ERR"]] == ["ins-traits-mismatch"]
    requests = (await http.get("/fhir/ServiceRequest", params={"_summary": "count"}, headers=sender)).json()
    assert requests["total"] == 2
