from __future__ import annotations

import gateway
from gateway.errors import ISSUE_DEFINITIONS, IssueCode


def test_exports_are_sorted_and_importable() -> None:
    assert gateway.__all__ == sorted(gateway.__all__)
    for name in gateway.__all__:
        assert getattr(gateway, name) is not None


def test_every_issue_code_has_a_definition() -> None:
    assert set(ISSUE_DEFINITIONS) == set(IssueCode)
    assert all(definition.endswith(".") for definition in ISSUE_DEFINITIONS.values())
    codes = [str(code) for code in IssueCode]
    assert len(codes) == len(set(codes))


def test_the_published_dac_issue_codesystem_lists_every_code() -> None:
    import json
    from pathlib import Path

    published = json.loads((Path(__file__).resolve().parents[1] / "profiles" / "CodeSystem-dac-issue.json").read_text())
    assert published["url"] == "https://fhir.dac-gateway.org/CodeSystem/dac-issue"
    assert {concept["code"] for concept in published["concept"]} == {str(code) for code in IssueCode}
