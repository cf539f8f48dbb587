"""The kit without a server: which endpoint each kind of file goes to, what an answer reads as, what differs."""

from __future__ import annotations

from pathlib import Path

import httpx

from gateway.kit import check, discover, observe
from gateway.kit._run import _ack
from tests.conftest import EXAMPLES


def test_each_example_goes_where_its_kind_says() -> None:
    kinds = {example.name: (example.kind.name, example.url_path()) for example in discover(EXAMPLES)}
    assert kinds["referral-gp.json"] == ("transaction-json", "")
    assert kinds["referral-hospital-nurse.xml"] == ("transaction-xml", "")
    assert kinds["message-referral-gp.json"] == ("message-json", "/$process-message")
    assert kinds["consent-opposition.json"] == ("resource-json", "/Consent")
    assert kinds["invalid/bad-ins-key.json"] == ("transaction-json", "")
    assert "expected.json" not in kinds and "invalid/expected.json" not in kinds


def test_hl7v2_and_cda_files_are_recognised_by_suffix_and_root(tmp_path: Path) -> None:
    (tmp_path / "hl7v2").mkdir()
    (tmp_path / "hl7v2" / "ref-i12.hl7").write_text("MSH|^~\\&|A|B\rRF1|P\r")
    (tmp_path / "cda").mkdir()
    (tmp_path / "cda" / "lettre.xml").write_text('<ClinicalDocument xmlns="urn:hl7-org:v3"/>')
    (tmp_path / "_build.py").write_text("")
    found = {example.name: example.kind for example in discover(tmp_path)}
    assert sorted(found) == ["cda/lettre.xml", "hl7v2/ref-i12.hl7"]
    assert (found["cda/lettre.xml"].path, found["cda/lettre.xml"].under_fhir_base) == ("/cda", False)
    assert (found["hl7v2/ref-i12.hl7"].path, found["hl7v2/ref-i12.hl7"].answer) == ("/hl7v2", "hl7v2-ack")


def test_an_ack_reads_as_its_code_and_errors() -> None:
    ack = "MSH|^~\\&|GW|DAC\rMSA|AE|MSG1\rERR||PID^1^3^1^1|207|E|ins-key-invalid^the key\r"
    assert _ack(ack) == {"ack": "AE", "issues": [{"code": "ins-key-invalid", "location": "PID^1^3^1^1"}]}


def test_a_non_fhir_kind_is_posted_under_the_servers_root(tmp_path: Path) -> None:
    (tmp_path / "m.hl7").write_text("MSH|^~\\&|A|B\r")
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path} {request.headers['content-type']}")
        return httpx.Response(200, text="MSH|^~\\&|GW\rMSA|AA|1\r")

    with httpx.Client(base_url="http://server/fhir", transport=httpx.MockTransport(answer)) as client:
        observed = observe(client, discover(tmp_path)[0])
    assert seen == ["POST /hl7v2 x-application/hl7-v2+er7"]
    assert observed == {"status": 200, "ack": "AA", "issues": []}


def test_only_what_is_expected_is_compared_and_lists_as_multisets() -> None:
    observed = {"status": 422, "issues": [{"code": "b", "expression": "y"}, {"code": "a", "expression": "x"}]}
    assert check({"issues": [{"code": "a", "expression": "x"}, {"code": "b", "expression": "y"}]}, observed) == []
    assert check({"status": 201}, observed) == ["status 422, expected 201"]
