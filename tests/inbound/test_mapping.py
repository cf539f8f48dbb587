"""The mapping engine: rules are data. A new field is a rule in a TOML file, a new local code a line of CSV, and
the engine (``gateway.inbound.mapping``) is the same; what it cannot read stops start-up with the file's name."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from gateway.conformance.files import mappings_dir
from gateway.inbound.er7 import read_message
from gateway.inbound.hl7v2 import V2Source
from gateway.inbound.mapping import Builder, Mapped, MappingError, load_mapping

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "hl7v2"


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    """A copy of mappings/hl7v2 to change."""
    shutil.copytree(mappings_dir() / "hl7v2", tmp_path / "hl7v2")
    return tmp_path / "hl7v2"


def mapped(rules: Path, example: str, raw: bytes | None = None) -> Mapped:
    message = read_message(raw or (EXAMPLES / example).read_bytes())
    builder = Builder(message.digest)
    builder.apply(load_mapping(rules / "ref_i12.toml"), V2Source(message))
    return builder.finish()


def resource(bundle: dict[str, Any], resource_type: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type
    )
    return found


def test_a_new_field_is_a_rule_of_data(rules: Path) -> None:
    before = resource(mapped(rules, "ref-i12-discharge.hl7").bundle, "ServiceRequest")
    assert "occurrenceDateTime" not in before
    with (rules / "ref_i12.toml").open("a", encoding="utf-8") as toml:
        toml.write('\n[[rules]]\neach = "RF1"\ninto = "request"\nset = { occurrenceDateTime = "{7|datetime}" }\n')
    result = mapped(rules, "ref-i12-discharge.hl7")
    assert resource(result.bundle, "ServiceRequest")["occurrenceDateTime"] == "2025-03-11T16:40:00+01:00"
    assert result.origins["Bundle.entry[0].resource.occurrenceDateTime"] == "RF1^1^7^1^1"


def test_a_new_local_code_is_a_line_of_csv(rules: Path) -> None:
    unknown = resource(mapped(rules, "invalid-unknown-mission.hl7").bundle, "ServiceRequest")
    assert unknown["code"]["coding"][0]["code"] == "HAD"  # through as sent: the validation names it (mission-invalid)
    with (rules / "codes" / "rf1-3-mission.csv").open("a", encoding="utf-8") as csv:
        csv.write("HAD,pathway-support\n")
    known = resource(mapped(rules, "invalid-unknown-mission.hl7").bundle, "ServiceRequest")
    assert known["code"]["coding"][0]["code"] == "pathway-support"


def test_references_to_what_is_not_there_are_dropped(rules: Path) -> None:
    raw = b"\n".join(
        line
        for line in (EXAMPLES / "ref-i12-discharge.hl7").read_bytes().split(b"\n")
        if not line.startswith(b"PRD|PP")
    )
    bundle = mapped(rules, "", raw).bundle
    assert "generalPractitioner" not in resource(bundle, "Patient")
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == [
        "ServiceRequest", "Patient", "PractitionerRole", "Practitioner", "Organization",
    ]  # fmt: skip


def test_an_issue_is_located_at_the_element_or_its_nearest_source() -> None:
    result = Mapped({}, {"Bundle.entry[1].resource": "PID^1", "Bundle.entry[1].resource.birthDate": "PID^1^7^1^1"}, [])
    assert result.locate("Bundle.entry[1].resource.birthDate") == "PID^1^7^1^1"
    assert result.locate("Bundle.entry[1].resource.birthDate.extension[0]") == "PID^1^7^1^1"
    assert result.locate("Bundle.entry[1].resource") == "PID^1^7^1^1"  # the first recorded element under it
    assert result.locate("Bundle.entry[4].resource") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[rules]]\neach = 'PID'\n", "lacks 'into'"),
        ("[[rules]]\neach = 'PID'\ninto = 'nobody.name'\n", "not a declared resource"),
        ("[[checks]]\neach = 'PID'\ncode = 'no-such-code'\nmessage = 'x'\n", "check 1"),
        ("[rules\n", "broken.toml"),
    ],
)
def test_a_mapping_file_that_cannot_be_read_is_named(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "broken.toml").write_text(text)
    with pytest.raises(MappingError, match=message):
        load_mapping(tmp_path / "broken.toml")


def test_cda_locations_index_same_named_siblings_listing_them_once_per_document() -> None:
    """An element's XPath carries its position among same-named siblings, and only then. Those positions are listed
    once per parent for the whole document (``CdaSource.positions``): listed again for each element, naming n
    siblings cost n² — a 177 KB lettre de liaison with 990 ids, names and telecoms held the event loop 13.9 s in
    the mapping (now 0.8 s; ``bench/intake/bench_inbound_shapes.py``)."""
    from gateway.inbound.cda import read_cda

    ids = "".join(f'<id root="1.2.3" extension="{i}"/>' for i in range(3))
    source = read_cda(
        f'<ClinicalDocument xmlns="urn:hl7-org:v3"><recordTarget><patientRole>{ids}<addr/></patientRole>'
        "</recordTarget></ClinicalDocument>".encode()
    )
    role = "/cda:ClinicalDocument/cda:recordTarget/cda:patientRole"
    found = source.each(f"{role}/cda:id")
    assert [match.location() for match in found] == [f"{role}/cda:id[{n}]" for n in (1, 2, 3)]
    assert found[2].location("@extension") == f"{role}/cda:id[3]/@extension"
    (addr,) = source.each(f"{role}/cda:addr")
    assert addr.location() == f"{role}/cda:addr"
    assert {len(listed) for listed in source.positions.values()} == {1, 3}  # each parent's children, listed once
