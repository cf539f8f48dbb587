"""The conformance resources the gateway publishes (DESIGN §15): ours under profiles/ (package data), read-only,
found by id and searched by ``url``, ``version``, ``name`` and ``_id``; the expansions of our ValueSets. Pure:
the API routes render what this finds."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

from gateway.conformance.files import DefinitionsNotFound, check_definitions
from gateway.errors import InvalidRequest, IssueCode, ResourceNotFound
from gateway.fhir.types import Resource

#: The types served read-only, and published by us under the canonical base of DESIGN §2.
CONFORMANCE_TYPES = (
    "CodeSystem",
    "GraphDefinition",
    "MessageDefinition",
    "OperationDefinition",
    "SearchParameter",
    "StructureDefinition",
    "ValueSet",
)
#: Search parameters of every conformance type: name → FHIR search parameter type (for the CapabilityStatement).
SEARCH_PARAMETERS: Mapping[str, str] = MappingProxyType(
    {"_id": "token", "name": "string", "url": "uri", "version": "token"}
)
#: Parameters that shape the answer, not the selection.
_RESULT_PARAMETERS = frozenset({"_format", "_pretty"})


@functools.cache
def published() -> Mapping[tuple[str, str], Resource]:
    """(type, id) → resource: every conformance resource of profiles/ (not the R4 base of profiles/r4/)."""
    found: dict[tuple[str, str], Resource] = {}
    for path in sorted(check_definitions().glob("*-*.json")):
        try:
            resource = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DefinitionsNotFound(f"cannot read {path}: {exc}") from exc
        if isinstance(resource, dict) and resource.get("resourceType") in CONFORMANCE_TYPES:
            found[(str(resource["resourceType"]), str(resource["id"]))] = resource
    return MappingProxyType(found)


def read(resource_type: str, resource_id: str) -> Resource:
    resource = published().get((resource_type, resource_id))
    if resource is None:
        raise ResourceNotFound.single(IssueCode.RESOURCE_NOT_FOUND, f"{resource_type}/{resource_id} is not known")
    return resource


def _url_matches(resource: Resource, value: str) -> bool:
    url, _, version = value.partition("|")  # a canonical may name its version: url|version
    return resource.get("url") == url and (not version or resource.get("version") == version)


#: Parameter → does this value select the resource: url exact (``url|version`` too), version and _id exact, name as
#: FHIR strings (starts with, case-insensitive).
_MATCHERS: Mapping[str, Callable[[Resource, str], bool]] = MappingProxyType(
    {
        "_id": lambda resource, value: resource.get("id") == value,
        "name": lambda resource, value: str(resource.get("name", "")).casefold().startswith(value.casefold()),
        "url": _url_matches,
        "version": lambda resource, value: resource.get("version") == value,
    }
)


def search(resource_type: str, params: Sequence[tuple[str, str]]) -> list[Resource]:
    """The resources of one type matching every parameter; an unknown parameter is a 400 (never ignored)."""
    criteria: list[tuple[str, list[str]]] = []
    for name, raw in params:
        if name in _RESULT_PARAMETERS:
            continue
        if name not in SEARCH_PARAMETERS:
            raise InvalidRequest.single(
                IssueCode.SEARCH_PARAMETER_UNKNOWN,
                f"{resource_type} is searched by {', '.join(sorted(SEARCH_PARAMETERS))}; not {name!r}",
                name,
            )
        criteria.append((name, raw.split(",")))  # FHIR's comma: any of the values
    return [
        resource
        for (kind, _), resource in published().items()
        if kind == resource_type
        and all(any(_MATCHERS[name](resource, value) for value in values) for name, values in criteria)
    ]


def valueset_by_url(url: str) -> Resource:
    found = search("ValueSet", [("url", url)])
    if not found:
        raise ResourceNotFound.single(IssueCode.RESOURCE_NOT_FOUND, f"no ValueSet {url} is published here", "url")
    return found[0]
