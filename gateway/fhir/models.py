"""The fhir.resources R4B models (closest to R4 4.0.1, DESIGN §9), behind one door.

They check required elements, primitive formats and unknown elements; pydantic's errors become ``Issue``s with
FHIRPath expressions here, and nowhere else. An unknown ``resourceType`` makes the library raise ``KeyError`` or
``ValueError`` instead of a validation error, so types are checked against ``RESOURCE_TYPES`` first.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.fhirresourcemodel import FHIRResourceModel
from pydantic import BaseModel, ValidationError

from gateway.errors import InvalidRequest, InvalidResource, Issue, IssueCode
from gateway.fhir.paths import fhirpath
from gateway.fhir.types import Resource

# R4B types that do not exist in R4 4.0.1: refused, since we speak R4 on the wire.
_NOT_IN_R4 = frozenset(
    {
        "AdministrableProductDefinition",
        "Citation",
        "ClinicalUseDefinition",
        "EvidenceReport",
        "Ingredient",
        "ManufacturedItemDefinition",
        "NutritionProduct",
        "PackagedProductDefinition",
        "RegulatedAuthorization",
        "SubscriptionStatus",
        "SubscriptionTopic",
    }
)


# Bounded: the names looked up come from requests (a Bundle entry's resourceType), and every made-up one would
# stay cached for the process's life (issue 21: memory). R4 has 146 resource types.
@functools.lru_cache(maxsize=512)
def model_class(resource_type: str) -> type[FHIRResourceModel] | None:
    if resource_type in _NOT_IN_R4 or not resource_type.isalpha() or not resource_type[:1].isupper():
        return None
    try:
        cls = get_fhir_model_class(resource_type)
    except (KeyError, ValueError):
        return None
    return cls if issubclass(cls, FHIRResourceModel) else None


def require_resource_type(resource: Any, expression: str) -> str:
    """The resourceType of a JSON object, or a 400 saying what is wrong with it."""
    resource_type = resource.get("resourceType") if isinstance(resource, dict) else None
    if not isinstance(resource_type, str) or model_class(resource_type) is None:
        raise InvalidRequest.single(
            IssueCode.RESOURCE_TYPE_UNKNOWN,
            f"resourceType {resource_type!r} is not a FHIR R4 resource type",
            f"{expression}.resourceType" if isinstance(resource, dict) else expression,
        )
    return resource_type


def _nested_resources(resource: Resource, expression: str) -> Iterator[tuple[Any, str]]:
    entries = resource.get("entry")
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        if isinstance(entry, dict) and "resource" in entry:
            yield entry["resource"], f"{expression}.entry[{index}].resource"
    contained = resource.get("contained")
    for index, item in enumerate(contained if isinstance(contained, list) else []):
        yield item, f"{expression}.contained[{index}]"


def check_resource_types(resource: Any, expression: str | None = None) -> str:
    """Check the resourceType of a resource and of those inside it (bundle entries, contained).

    ``expression`` is where the resource sits (None for the posted one, whose root is its own type)."""
    resource_type = require_resource_type(resource, expression or "$this")
    expression = expression or resource_type
    for nested, nested_expression in _nested_resources(resource, expression):
        check_resource_types(nested, nested_expression)
    return resource_type


def issues_from_validation_error(exc: ValidationError, root: str) -> list[Issue]:
    issues = []
    for error in exc.errors():
        # pydantic names the inside of a root model "root": no FHIR element, so no FHIRPath step.
        location = [step for step in error["loc"] if isinstance(step, (str, int)) and step != "root"]
        expression = fhirpath(root, location)
        kind = error["type"]
        if kind == "extra_forbidden":
            issues.append(Issue(IssueCode.ELEMENT_UNKNOWN, f"Unknown element at {expression}", expression, "structure"))
        elif kind.endswith("missing"):
            issues.append(
                Issue(
                    IssueCode.ELEMENT_REQUIRED,
                    f"Missing required element {expression}",
                    expression,
                    "required",
                )
            )
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            issues.append(Issue(IssueCode.VALUE_INVALID, f"{message} ({expression})", expression, "value"))
    return issues


def parse_model(resource: Resource) -> FHIRResourceModel:
    """Build the R4B model of a JSON resource; structural failures raise InvalidResource (422)."""
    resource_type = check_resource_types(resource)
    cls = model_class(resource_type)
    assert cls is not None  # checked above
    try:
        model = cls.model_validate(resource)
    except ValidationError as exc:
        raise InvalidResource(*issues_from_validation_error(exc, resource_type)) from exc
    except (AttributeError, TypeError, KeyError, ValueError) as exc:
        # fhir.resources' own validators fail this way on some wrong shapes (an integer where a url is
        # expected raises AttributeError): still the client's structure error, not ours.
        raise InvalidResource(
            Issue(
                IssueCode.VALUE_INVALID,
                f"the resource is not valid R4 structure ({type(exc).__name__})",
                resource_type,
                "structure",
            )
        ) from exc
    sent_as_strings = _objects_sent_as_strings(resource, model, resource_type)
    if sent_as_strings:
        raise InvalidResource(*sent_as_strings)
    return model


def _objects_sent_as_strings(resource: Resource, model: FHIRResourceModel, root: str) -> list[Issue]:
    """fhir.resources reads a *string* holding JSON where an object is expected as that object (fhir_core's
    ``fhir_model_validator``), so ``"code": "{\"coding\": …}"`` passes its validation — and the string would be
    stored, and trip every reader expecting an object. Such strings start with ``{`` or ``[``: only those are
    looked up in the model (rarely any, so this costs one walk without recursion)."""
    issues = []
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(resource, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            stack.extend((value, (*path, key)) for key, value in node.items())
        elif isinstance(node, list):
            stack.extend((value, (*path, index)) for index, value in enumerate(node))
        elif isinstance(node, str) and node.lstrip()[:1] in ("{", "[") and _is_object_in_model(model, path):
            expression = fhirpath(root, list(path))
            issues.append(
                Issue(IssueCode.VALUE_INVALID, f"{expression} must be a JSON object, not a string", expression, "value")
            )
    return issues


def _is_object_in_model(model: Any, path: tuple[str | int, ...]) -> bool:
    node = model
    for step in path:
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                return False
            node = node[step]
            continue
        fields = type(node).model_fields if isinstance(node, BaseModel) else {}
        name = next((n for n, f in fields.items() if n == step or f.alias == step), None)
        if name is None:
            return False
        node = getattr(node, name, None)
    return isinstance(node, (BaseModel, list))


def model_issues(resource: Resource, expression: str) -> list[Issue]:
    """What the R4B model finds wrong with a resource of a known type, expressions rooted at ``expression``."""
    cls = model_class(str(resource.get("resourceType")))
    assert cls is not None
    try:
        cls.model_validate(resource)
    except ValidationError as exc:
        return issues_from_validation_error(exc, expression)
    return []


def warm_up() -> None:
    """The first validation after import costs ~100 ms (DESIGN §9): pay it at start-up, not on a request."""
    for resource_type in ("Bundle", "Patient", "ServiceRequest", "Consent", "CareTeam", "Task"):
        model_class(resource_type)
    parse_model({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Patient"}}]})
