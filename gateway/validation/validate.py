"""``$validate`` and ``gateway validate``: every finding on a resource or referral, nothing stored.

The same checks as intake: the profile engine (R4 structure and our profiles, compiled once), then, for a
transaction or message Bundle, the referral's shape and business rules (``referral_findings``, which intake runs
too). Warnings (extensible bindings, invariants that could not be evaluated) are reported; they never make a
referral invalid.
"""

from __future__ import annotations

from typing import Literal

from gateway.errors import GatewayError, InvalidRequest, Issue, IssueCode
from gateway.fhir.models import check_resource_types
from gateway.fhir.types import Resource
from gateway.referral.bundle import REFERRAL_REQUEST, REFERRAL_RESOURCE_TYPES, Referral, check_bundle, read_bundle
from gateway.validation.engine import engine, message_event
from gateway.validation.rules import resource_rules

#: Findings after which the referral's own rules are not run: the JSON does not have the shapes they read.
SHAPE_BROKEN = frozenset({IssueCode.TYPE_INVALID, IssueCode.VALUE_INVALID, IssueCode.RESOURCE_TYPE_UNKNOWN})


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


def referral_findings(
    bundle: Resource, expected: Literal["transaction", "message"]
) -> tuple[Referral | None, list[Issue]]:
    """The referral (None when any error was found) and every finding, errors and warnings: structure and profiles
    first (compiled once: ``gateway.validation.engine``), then — on R4 shapes — the referral's own rules
    (``gateway.referral.bundle.read_bundle``) and each entry's business rules. A 400 for a Bundle of another type."""
    check_bundle(bundle, expected)
    found = engine().validate(bundle)
    if any(issue.code in SHAPE_BROKEN for issue in found):
        return None, found
    referral, issues = read_bundle(bundle, expected)
    for index, entry in enumerate(bundle["entry"] if isinstance(bundle.get("entry"), list) else []):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") in REFERRAL_RESOURCE_TYPES:
            issues.extend(resource_rules(resource, f"Bundle.entry[{index}].resource"))
    issues = _merged(found, issues)
    if any(issue.severity in ("error", "fatal") for issue in issues):
        return None, issues
    return referral, issues


def _merged(profile_issues: list[Issue], rule_issues: list[Issue]) -> list[Issue]:
    """Both lists, without reporting one finding twice (same code at the same place)."""
    seen = {(issue.code, issue.expression) for issue in profile_issues}
    return profile_issues + [issue for issue in rule_issues if (issue.code, issue.expression) not in seen]


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
