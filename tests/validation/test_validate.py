"""``validate`` (``$validate`` and ``gateway validate``): the valid examples, JSON and XML, give no error."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.fhir.codec import parse_resource
from gateway.fhir.media import FhirFormat
from gateway.validation.validate import validate
from tests.conftest import EXAMPLES

VALID = sorted([*EXAMPLES.glob("*-*.json"), *EXAMPLES.glob("*.xml")])  # not expected.json, the kit's


@pytest.mark.parametrize("path", VALID, ids=[p.name for p in VALID])
def test_every_valid_example_passes(path: Path) -> None:
    fmt = FhirFormat.XML if path.suffix == ".xml" else FhirFormat.JSON
    issues = validate(parse_resource(path.read_bytes(), fmt))
    assert [(i.code, i.expression, i.diagnostics) for i in issues if i.severity in ("error", "fatal")] == []


def test_errors_come_before_warnings() -> None:
    bundle = parse_resource((EXAMPLES / "referral-social-worker.json").read_bytes(), FhirFormat.JSON)
    care_team = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "CareTeam")
    care_team["participant"][0]["role"] = [{"coding": [{"system": "http://example.org/roles", "code": "x"}]}]
    del care_team["participant"][1]["member"]
    severities = [issue.severity for issue in validate(bundle)]
    assert severities == ["error", "warning"]
