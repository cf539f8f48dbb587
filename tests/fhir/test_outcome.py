"""An OperationOutcome lists at most MAX_OUTCOME_ISSUES issues, then one counting the rest (issue 23: 3.6 MB of
unknown keys made an 85 MB OperationOutcome)."""

from __future__ import annotations

import httpx
import pytest

from gateway.errors import Issue, IssueCode, Severity
from gateway.fhir.outcome import MAX_OUTCOME_ISSUES, operation_outcome


def _issues(count: int, severity: Severity = "error") -> list[Issue]:
    return [
        Issue(IssueCode.ELEMENT_UNKNOWN, f"unknown k{i}", f"Patient.k{i}", "structure", severity) for i in range(count)
    ]


def test_up_to_the_cap_every_issue_is_listed() -> None:
    outcome = operation_outcome(_issues(MAX_OUTCOME_ISSUES))
    assert [i["expression"] for i in outcome["issue"]] == [[f"Patient.k{i}"] for i in range(MAX_OUTCOME_ISSUES)]


@pytest.mark.parametrize(("more", "late_severity"), [(1, "error"), (5_000, "error"), (7, "warning")])
def test_beyond_the_cap_one_issue_counts_the_rest_as_severe_as_the_worst(more: int, late_severity: Severity) -> None:
    issues = _issues(MAX_OUTCOME_ISSUES, "warning") + _issues(more, late_severity)
    outcome = operation_outcome(issues)
    assert len(outcome["issue"]) == MAX_OUTCOME_ISSUES + 1
    assert outcome["issue"][-2]["expression"] == [f"Patient.k{MAX_OUTCOME_ISSUES - 1}"]
    last = outcome["issue"][-1]
    assert (last["severity"], last["code"], last["details"]["coding"][0]["code"]) == (
        late_severity,
        "informational",
        "outcome-truncated",
    )
    assert last["diagnostics"].startswith(f"and {more} more issue(s) not listed")


@pytest.mark.parametrize("route", ["/fhir", "/fhir/Patient/$validate"])
async def test_a_body_of_thousands_of_unknown_keys_gets_a_bounded_answer(client: httpx.AsyncClient, route: str) -> None:
    patient = {"resourceType": "Patient", **{f"k{i}": 1 for i in range(5_000)}}
    body = patient if route.endswith("$validate") else {
        "resourceType": "Bundle", "type": "transaction",
        "entry": [{"fullUrl": "urn:uuid:1", "resource": patient, "request": {"method": "POST", "url": "Patient"}}],
    }  # fmt: skip
    answer = await client.post(route, json=body)
    issues = answer.json()["issue"]
    assert answer.status_code in (200, 422), answer.text
    assert len(issues) == MAX_OUTCOME_ISSUES + 1
    assert issues[-1]["details"]["coding"][0]["code"] == "outcome-truncated"
    assert issues[-1]["severity"] == "error"
    assert len(answer.content) < 100_000
