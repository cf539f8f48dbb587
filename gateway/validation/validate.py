"""``$validate`` and ``gateway validate``: every finding on a resource or referral, nothing stored.

Today this runs the R4 structure checks (fhir.resources), the referral shape rules and the French identifier
rules — what intake enforces. Checking against our StructureDefinitions' snapshots (profiles/) is the next step
of the validation engine (issue #4).
"""

from __future__ import annotations

from gateway.errors import GatewayError, Issue, IssueCode
from gateway.fhir.models import check_resource_types, parse_model
from gateway.fhir.types import Resource
from gateway.intake.referral import read_referral
from gateway.validation.rules import resource_rules


def validate(resource: Resource) -> list[Issue]:
    """Every issue found, errors first; an empty list means nothing to report."""
    try:
        resource_type = check_resource_types(resource)
    except GatewayError as exc:
        return list(exc.issues)
    bundle_type = resource.get("type") if resource_type == "Bundle" else None
    try:
        if bundle_type in ("transaction", "message"):
            read_referral(resource, bundle_type)
            return []
        parse_model(resource)
    except GatewayError as exc:
        return list(exc.issues)
    return resource_rules(resource, resource_type)


def all_clear() -> Issue:
    return Issue(IssueCode.VALIDATION_PASSED, "No issues found", None, "informational", "information")
