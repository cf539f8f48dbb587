"""OperationOutcome documents built from ``Issue``s (the shape every error answer and $validate share)."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.errors import Issue
from gateway.fhir.types import Resource

CANONICAL_BASE = "https://fhir.dac-gateway.org"
DAC_ISSUE_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/dac-issue"


def outcome_issue(issue: Issue) -> Resource:
    rendered: Resource = {
        "severity": issue.severity,
        "code": issue.issue_type,
        "details": {"coding": [{"system": DAC_ISSUE_SYSTEM, "code": str(issue.code)}]},
        "diagnostics": issue.diagnostics,
    }
    if issue.expression:
        rendered["expression"] = [issue.expression]
    return rendered


def operation_outcome(issues: Iterable[Issue]) -> Resource:
    return {"resourceType": "OperationOutcome", "issue": [outcome_issue(issue) for issue in issues]}
