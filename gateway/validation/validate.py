"""``$validate`` and ``gateway validate``: every finding on a resource or referral, nothing stored.

The same checks as intake: the profile engine (R4 structure and our profiles, compiled once), then, for a
transaction or message Bundle, the referral's shape and business rules (``read_referral``'s findings). Warnings
(extensible bindings, invariants that could not be evaluated) are reported; they never make a referral invalid.
"""

from __future__ import annotations

from typing import Literal

from gateway.errors import GatewayError, InvalidRequest, Issue, IssueCode
from gateway.fhir.models import check_resource_types
from gateway.fhir.types import Resource
from gateway.intake.referral import REFERRAL_REQUEST, SHAPE_BROKEN, referral_findings
from gateway.validation.engine import engine, message_event
from gateway.validation.rules import resource_rules


def validate(resource: Resource, profile: str | None = None) -> list[Issue]:
    """Every issue found, errors first; an empty list means nothing to report.

    ``profile``: a canonical URL of a profile we know (else 400), checked instead of the default one."""
    try:
        resource_type = check_resource_types(resource)
    except GatewayError as exc:
        return list(exc.issues)
    if profile is not None and not engine().knows(profile):
        raise InvalidRequest.single(
            IssueCode.PROFILE_UNKNOWN, f"profile {profile!r} is not one the gateway knows", "profile"
        )
    bundle_type = resource.get("type") if resource_type == "Bundle" else None
    is_referral = bundle_type == "transaction" or (
        bundle_type == "message" and message_event(resource) == REFERRAL_REQUEST
    )
    if is_referral and profile is None:
        kind: Literal["transaction", "message"] = "transaction" if bundle_type == "transaction" else "message"
        try:
            _, issues = referral_findings(resource, kind)
        except GatewayError as exc:
            issues = list(exc.issues)
    else:
        issues = engine().validate(resource, profile)
        if not any(issue.code in SHAPE_BROKEN for issue in issues):
            for nested, expression in _resources(resource, resource_type):
                issues += resource_rules(nested, expression)
    return sorted(issues, key=lambda issue: issue.severity not in ("error", "fatal"))


def _resources(resource: Resource, expression: str) -> list[tuple[Resource, str]]:
    """The resource, or a Bundle's entries (an opposition message, a collection): what the rules apply to."""
    if resource.get("resourceType") != "Bundle":
        return [(resource, expression)]
    entries = resource.get("entry") or []
    return [
        (entry["resource"], f"Bundle.entry[{index}].resource")
        for index, entry in enumerate(entries)
        if isinstance(entry, dict) and isinstance(entry.get("resource"), dict)
    ]


def all_clear() -> Issue:
    return Issue(IssueCode.VALIDATION_PASSED, "No issues found", None, "informational", "information")
