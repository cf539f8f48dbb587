"""OperationOutcome documents built from ``Issue``s (the shape every error answer and $validate share)."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.errors import Issue, IssueCode
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
    if issue.location:
        rendered["location"] = [issue.location]
    return rendered


#: Issues an OperationOutcome lists; the rest are counted in one more issue. Unbounded, 3.6 MB of unknown keys
#: made an 85 MB OperationOutcome (issue 23); a client fixes the first hundred before it needs the next.
MAX_OUTCOME_ISSUES = 100
_SEVERITY_RANK = {"information": 0, "warning": 1, "error": 2, "fatal": 3}


def operation_outcome(issues: Iterable[Issue]) -> Resource:
    listed = list(issues)
    rendered = [outcome_issue(issue) for issue in listed[:MAX_OUTCOME_ISSUES]]
    rest = listed[MAX_OUTCOME_ISSUES:]
    if rest:
        # As severe as the worst left out, so that an outcome whose errors come late still says it failed.
        worst = max((issue.severity for issue in rest), key=_SEVERITY_RANK.__getitem__)
        summary = Issue(
            IssueCode.OUTCOME_TRUNCATED,
            f"and {len(rest)} more issue(s) not listed: the first {MAX_OUTCOME_ISSUES} are",
            None,
            "informational",
            worst,
        )
        rendered.append(outcome_issue(summary))
    return {"resourceType": "OperationOutcome", "issue": rendered}
