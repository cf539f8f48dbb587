"""A posted Bundle → one ``Referral`` or a refusal: validated (``gateway.validation``), then read
(``gateway.referral``); every error found is reported together, with the status it calls for."""

from __future__ import annotations

from typing import Literal

from gateway.errors import BusinessRuleViolation, GatewayError, InvalidRequest, InvalidResource, Issue, IssueCode
from gateway.fhir.types import Resource
from gateway.referral.bundle import Referral
from gateway.validation.validate import referral_findings


def read_referral(bundle: Resource, expected: Literal["transaction", "message"]) -> Referral:
    """Check a posted Bundle against R4 and our profiles (the validation engine) and its shape (DESIGN §7);
    every error found is reported together. Warnings do not block: ``referral_findings`` gives them too."""
    referral, issues = referral_findings(bundle, expected)
    errors = [issue for issue in issues if issue.severity in ("error", "fatal")]
    if errors:
        raise _failure(errors)
    assert referral is not None
    return referral


def _failure(issues: list[Issue]) -> GatewayError:
    """400 when the request itself is malformed; 422 for structure and referral rules."""
    if all(issue.code is IssueCode.ENTRY_REQUEST_INVALID for issue in issues):
        return InvalidRequest(*issues)
    if any(issue.issue_type in ("structure", "required", "value") for issue in issues):
        return InvalidResource(*issues)
    return BusinessRuleViolation(*issues)
