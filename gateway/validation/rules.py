"""Business rules of a referral that no profile can say (DESIGN §7–8): national identifiers with valid keys, an
INS only with its five identity traits (dac-patient-1 says that there is one; this names the missing trait), INSEE
codes of the right shape. Pure: resources in, issues out."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from gateway.errors import Issue, IssueCode, IssueType
from gateway.fhir.france import BIRTH_PLACE_EXTENSION, INSEE_CODE_EXTENSION
from gateway.fhir.search import fold
from gateway.fhir.types import Resource
from gateway.validation.identifiers import IDENTIFIER_RULES, INS_SYSTEMS, TEST_INS_SYSTEMS

_COMMUNE = re.compile(r"^(?:\d{5}|2[AB]\d{3})$")
_BIRTH_PLACE = re.compile(r"^(?:\d{5}|2[AB]\d{3}|99\d{3})$")  # 99xxx: born abroad (INSEE country code)


def _rule_issue(code: IssueCode, diagnostics: str, expression: str, issue_type: IssueType = "business-rule") -> Issue:
    return Issue(code, diagnostics, expression, issue_type)


def _identifiers(resource: Any, expression: str) -> Iterator[tuple[dict[str, Any], str]]:
    """Every Identifier in a resource — its own, and those of logical references — with its FHIRPath."""
    if isinstance(resource, dict):
        for key, value in resource.items():
            if key == "identifier" and isinstance(value, list):
                for index, identifier in enumerate(value):
                    if isinstance(identifier, dict):
                        yield identifier, f"{expression}.identifier[{index}]"
            elif key == "identifier" and isinstance(value, dict):  # Reference.identifier, Bundle.identifier
                yield value, f"{expression}.identifier"
            elif isinstance(value, (dict, list)) and key not in ("contained", "text"):
                yield from _identifiers(value, f"{expression}.{key}")
    elif isinstance(resource, list):
        for index, item in enumerate(resource):
            yield from _identifiers(item, f"{expression}[{index}]")


MAX_IDENTIFIER_LENGTH = 500  # what resource_identities and idempotency keys store


def identifier_issues(resource: Resource, expression: str) -> list[Issue]:
    issues = []
    for identifier, where in _identifiers(resource, expression):
        if len(str(identifier.get("value", ""))) + len(str(identifier.get("system", ""))) > MAX_IDENTIFIER_LENGTH:
            issues.append(
                _rule_issue(
                    IssueCode.VALUE_TOO_LONG,
                    f"identifier system and value are limited to {MAX_IDENTIFIER_LENGTH} characters together",
                    where,
                    "too-long",
                )
            )
            continue
        rule = IDENTIFIER_RULES.get(str(identifier.get("system")))
        value = identifier.get("value")
        if rule is None or not isinstance(value, str):
            continue
        problem = rule(value)
        if problem:
            code = (
                IssueCode.INS_KEY_INVALID if identifier.get("system") in INS_SYSTEMS else IssueCode.IDENTIFIER_INVALID
            )
            issues.append(_rule_issue(code, f"{problem} ({identifier.get('system')})", f"{where}.value"))
    return issues


def _birth_place_code(patient: Resource) -> str | None:
    for extension in patient.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == BIRTH_PLACE_EXTENSION:
            address = extension.get("valueAddress") or {}
            for inner in address.get("extension") or []:
                if inner.get("url") == INSEE_CODE_EXTENSION:
                    return str((inner.get("valueCoding") or {}).get("code") or "") or None
            return str(address.get("district") or "") or None
    return None


def ins_traits_issues(patient: Resource, expression: str) -> list[Issue]:
    """An INS never travels without the five identity traits (référentiel INS)."""
    has_ins = any(isinstance(i, dict) and i.get("system") in INS_SYSTEMS for i in patient.get("identifier") or [])
    if not has_ins:
        return []
    missing = []
    official = [n for n in patient.get("name") or [] if isinstance(n, dict) and n.get("use") == "official"]
    if not any(n.get("family") for n in official):
        missing.append(("birth family name (name with use official, family)", "name"))
    if not any(n.get("given") for n in official):
        missing.append(("birth given names (name with use official, given)", "name"))
    if patient.get("gender") not in ("male", "female", "other", "unknown"):
        missing.append(("gender", "gender"))
    if not patient.get("birthDate"):
        missing.append(("birth date", "birthDate"))
    birth_place = _birth_place_code(patient)
    if birth_place is None:
        missing.append(("INSEE code of the birth place (patient-birthPlace extension)", "extension"))
    elif not _BIRTH_PLACE.match(birth_place.upper()):
        missing.append((f"a valid INSEE code of the birth place, not {birth_place!r}", "extension"))
    return [
        _rule_issue(
            IssueCode.INS_TRAITS_MISSING,
            f"an INS travels only with the five identity traits; missing: {trait}",
            f"{expression}.{element}",
        )
        for trait, element in missing
    ]


#: The five identity traits of the référentiel INS, by name, in the order ``identity_traits`` gives them.
IDENTITY_TRAITS = ("birth family name", "birth given names", "gender", "birth date", "birth place")


def identity_trait_values(patient: Resource) -> dict[str, tuple[str, str]]:
    """Each identity trait the Patient carries: its value in the form two records of one person share — names as the
    référentiel INS writes them, in capitals without accents (``fold``: case, accents and spacing ignored, so the
    ``HELENE`` of an HL7 v2 feed is the ``Hélène`` on record), codes ignoring case — and the FHIRPath of the element
    holding it, relative to the Patient (``name[0].family``). A trait the Patient lacks is absent."""
    found: dict[str, tuple[str, str]] = {}
    names = patient.get("name") or []
    for index, name in enumerate(names):
        if not isinstance(name, dict) or name.get("use") != "official":
            continue
        family, given = name.get("family"), name.get("given")
        if isinstance(family, str) and family and "birth family name" not in found:
            found["birth family name"] = (fold(family), f"name[{index}].family")
        if isinstance(given, list) and given and "birth given names" not in found:
            found["birth given names"] = (fold(" ".join(str(g) for g in given)), f"name[{index}].given")
    if isinstance(gender := patient.get("gender"), str):
        found["gender"] = (gender, "gender")
    if isinstance(birth_date := patient.get("birthDate"), str):
        found["birth date"] = (birth_date, "birthDate")
    for index, extension in enumerate(patient.get("extension") or []):
        if isinstance(extension, dict) and extension.get("url") == BIRTH_PLACE_EXTENSION:
            if place := _birth_place_code(patient):
                found["birth place"] = (place.upper(), f"extension[{index}].valueAddress")
            break
    return found


def identity_traits(patient: Resource) -> tuple[str, str, str, str, str] | None:
    """The five identity traits of the référentiel INS — birth family name, birth given names, gender, birth date,
    INSEE code of the birth place — in the form two records of one person share (``identity_trait_values``), or
    None when any is missing."""
    values = identity_trait_values(patient)
    if len(values) < len(IDENTITY_TRAITS):
        return None
    family, given, gender, birth_date, place = (values[trait][0] for trait in IDENTITY_TRAITS)
    return (family, given, gender, birth_date, place)


def insee_code_issues(patient: Resource, expression: str) -> list[Issue]:
    issues = []
    for index, address in enumerate(patient.get("address") or []):
        if not isinstance(address, dict):
            continue
        for position, extension in enumerate(address.get("extension") or []):
            if isinstance(extension, dict) and extension.get("url") == INSEE_CODE_EXTENSION:
                code = str((extension.get("valueCoding") or {}).get("code") or "")
                if not _COMMUNE.match(code.upper()):
                    issues.append(
                        _rule_issue(
                            IssueCode.INSEE_CODE_INVALID,
                            f"{code!r} is not an INSEE commune code (5 characters: 75056, 2A004, 97411)",
                            f"{expression}.address[{index}].extension[{position}].valueCoding.code",
                        )
                    )
    return issues


def resource_rules(resource: Resource, expression: str) -> list[Issue]:
    """The rules that apply to one resource of a referral."""
    issues = identifier_issues(resource, expression)
    # ServiceRequest.code (the mission) is dac-servicerequest's required binding: the engine checks it and keeps
    # its stable code mission-invalid (engine.BINDING_ISSUE_CODES).
    if resource.get("resourceType") == "Patient":
        issues += ins_traits_issues(resource, expression)
        issues += insee_code_issues(resource, expression)
    return issues


def uses_ins(patient: Resource) -> bool:
    return any(isinstance(i, dict) and i.get("system") in INS_SYSTEMS for i in patient.get("identifier") or [])


def uses_test_identity(patient: Resource) -> bool:
    return any(isinstance(i, dict) and i.get("system") in TEST_INS_SYSTEMS for i in patient.get("identifier") or [])
