"""The CapabilityStatement, generated from what really runs (DESIGN §15): the application's routes say which
interactions and operations each resource type has, the search parameter registries (gateway.fhir.search for what
the store serves, gateway.conformance.catalog for the published definitions) which parameters, the profiles
which ``supportedProfile``. A route under /fhir that this module cannot read is an error, so a new route is
described or the statement fails to build (tests/api/test_capability.py)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from fastapi import FastAPI

from gateway import __version__
from gateway.conformance import catalog
from gateway.fhir.primitives import fhir_instant, utc_now
from gateway.fhir.search import (
    COMMON_PARAMETERS,
    RESULT_PARAMETER_DEFINITIONS,
    SEARCH_PARAMETERS,
    documentation,
    includes,
    revincludes,
)
from gateway.fhir.types import Resource
from gateway.notify.topics import BACKPORT_SUBSCRIPTION, TOPIC_CANONICAL, TOPICS
from gateway.validation.definitions import PROFILE_BY_TYPE

#: What a generic ``{resource_type}`` in a route's path stands for: the types the store serves.
STORED_TYPES = frozenset(SEARCH_PARAMETERS)
_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Methods that are no interaction of their own (answered by the GET route or the framework).
_IGNORED_METHODS = frozenset({"HEAD", "OPTIONS"})
#: (method, path after the type) → the type-level or instance-level interaction.
_TYPE_INTERACTIONS = {
    ("GET", ""): "search-type",
    ("POST", "/_search"): "search-type",
    ("POST", ""): "create",
    ("GET", "/_history"): "history-type",
    ("GET", "/{id}"): "read",
    ("PUT", "/{id}"): "update",
    ("PATCH", "/{id}"): "patch",
    ("DELETE", "/{id}"): "delete",
    ("GET", "/{id}/_history"): "history-instance",
    ("GET", "/{id}/_history/{version_id}"): "vread",
}
#: (method, path after /fhir) → the system-level interaction.
_SYSTEM_INTERACTIONS = {
    ("POST", ""): "transaction",
    ("GET", ""): "search-system",
    ("GET", "/_history"): "history-system",
}
#: Routes under /fhir that are no FHIR interaction: the statement itself, and SMART's discovery document.
_NOT_INTERACTIONS = frozenset({"/metadata", "/.well-known/smart-configuration"})
#: Conditional create: ``If-None-Exist`` inside a transaction for the directory types, and on ``POST /fhir/Consent``.
_CONDITIONAL_CREATE = frozenset({"Patient", "Practitioner", "Organization", "PractitionerRole", "Consent"})
#: What PATCH takes (gateway/api/routes/tasks.py).
PATCH_FORMATS = ("application/json-patch+json",)
#: Types whose update names the version it changes: a Task decision needs If-Match (428 without).
_VERSIONED_UPDATE = frozenset({"Task"})
_MESSAGE_TRANSPORT = "http://terminology.hl7.org/CodeSystem/message-transport"


#: The operations of the Subscriptions R5 Backport IG (DESIGN §12), defined by it rather than by us.
_BACKPORT_OPERATIONS = {
    "status": "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status",
    "events": "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-events",
}


class UndescribedRoute(Exception):
    """A route under /fhir that the statement cannot describe: describe it here (or it is not FHIR)."""


@dataclass(slots=True)
class Served:
    """What the routes serve: interactions and operations by type, and at system level."""

    interactions: dict[str, set[str]] = field(default_factory=dict)
    operations: dict[str, set[str]] = field(default_factory=dict)
    system_interactions: set[str] = field(default_factory=set)
    system_operations: set[str] = field(default_factory=set)

    def add(self, types: Iterable[str], interaction: str | None = None, operation: str | None = None) -> None:
        for resource_type in types:
            if interaction is not None:
                self.interactions.setdefault(resource_type, set()).add(interaction)
            if operation is not None:
                self.operations.setdefault(resource_type, set()).add(operation)


def _normalised(rest: str) -> str:
    """``/{resource_id}/_history/{version_id}`` and ``/{task_id}`` alike → ``/{id}…``."""
    parts = rest.split("/")
    if len(parts) > 1 and parts[1].startswith("{"):
        parts[1] = "{id}"
    if len(parts) > 3 and parts[3].startswith("{"):
        parts[3] = "{version_id}"
    return "/".join(parts)


def fhir_routes(app: FastAPI) -> Iterator[tuple[str, str, str]]:
    """(method, path after /fhir, path) of every route of the FHIR API, read from the application's OpenAPI
    document: FastAPI's flat view of every route it serves (routes of included routers too), without the hidden
    ones — the refusals, such as writes to the conformance types (a 405 whatever is sent)."""
    for path, operations in app.openapi()["paths"].items():
        if path != "/fhir" and not path.startswith("/fhir/"):
            continue
        for method in sorted(operations):
            if method.upper() in _HTTP_METHODS - _IGNORED_METHODS:
                yield method.upper(), path.removeprefix("/fhir"), path


def served(app: FastAPI) -> Served:
    found = Served()
    for method, rest, path in fhir_routes(app):
        if rest in _NOT_INTERACTIONS and method == "GET":
            continue
        if (method, rest) in _SYSTEM_INTERACTIONS:
            found.system_interactions.add(_SYSTEM_INTERACTIONS[(method, rest)])
            continue
        if rest.startswith("/$"):
            found.system_operations.add(rest.removeprefix("/$"))
            continue
        first, _, tail = rest.removeprefix("/").partition("/")
        types = STORED_TYPES if first == "{resource_type}" else {first}
        tail = "/" + tail if tail else ""
        if "/$" in tail:  # an operation at type (/$name) or instance level (/{id}/$name)
            found.add(types, operation=tail.rsplit("/$", 1)[1])
            continue
        interaction = _TYPE_INTERACTIONS.get((method, _normalised(tail)))
        if interaction is None:
            raise UndescribedRoute(f"{method} {path}: describe it in gateway/api/capability.py")
        found.add(types, interaction)
    return found


def _operation(name: str, resource_type: str | None = None) -> Resource:
    """Our OperationDefinition of that name; an operation without one is an error (write it: profiles/fsh/)."""
    if resource_type == "Subscription" and name in _BACKPORT_OPERATIONS:
        return {"name": name, "definition": _BACKPORT_OPERATIONS[name]}
    found = catalog.search("OperationDefinition", [("_id", f"dac-{name}")])
    if not found:
        raise UndescribedRoute(f"operation ${name} has no OperationDefinition dac-{name} in profiles/")
    return {"name": name, "definition": found[0]["url"]}


def _search_params(resource_type: str) -> list[Resource]:
    if resource_type == "Subscription":
        return [{"name": "status", "type": "token", "documentation": "The Subscription's status (the caller's own)"}]
    if resource_type in catalog.CONFORMANCE_TYPES:
        # One page with every match, by url, version, name: no result parameter (_count… are a 400 there).
        return [{"name": name, "type": kind} for name, kind in catalog.SEARCH_PARAMETERS.items()]
    ours = {
        (base, str(definition["code"])): str(definition["url"])
        for definition in catalog.search("SearchParameter", [])
        for base in definition.get("base") or []
    }
    rendered = []
    for parameter in {**COMMON_PARAMETERS, **SEARCH_PARAMETERS.get(resource_type, {})}.values():
        item: Resource = {"name": parameter.name, "type": parameter.type.value}
        if (definition := ours.get((resource_type, parameter.name))) is not None:
            item["definition"] = definition
        if text := documentation(parameter):
            item["documentation"] = text
        rendered.append(item)
    # The result parameters, here rather than in rest.searchParam ("for searching all resources"): the
    # conformance types' searches take none of them.
    # _include / _revinclude only where they have a target (searchInclude / searchRevInclude).
    targets = {"_include": includes(resource_type), "_revinclude": revincludes(resource_type)}
    rendered += [
        {"name": name, "type": kind, "documentation": text} if text else {"name": name, "type": kind}
        for name, kind, text in RESULT_PARAMETER_DEFINITIONS
        if targets.get(name, True)
    ]
    return rendered


def _resource(resource_type: str, interactions: set[str], operations: set[str]) -> Resource:
    stored = resource_type in STORED_TYPES
    rendered: Resource = {"type": resource_type, "profile": f"http://hl7.org/fhir/StructureDefinition/{resource_type}"}
    if resource_type in PROFILE_BY_TYPE:
        rendered["supportedProfile"] = [PROFILE_BY_TYPE[resource_type]]
    if resource_type == "Subscription":  # the topics offered, as the backport IG advertises them
        rendered["extension"] = [{"url": TOPIC_CANONICAL, "valueCanonical": url} for url in TOPICS]
        rendered["supportedProfile"] = [BACKPORT_SUBSCRIPTION]
    rendered["interaction"] = [{"code": code} for code in sorted(interactions)]
    if stored:
        rendered |= {
            "versioning": "versioned-update" if resource_type in _VERSIONED_UPDATE else "versioned",
            "readHistory": "vread" in interactions,
            "updateCreate": False,
            "conditionalCreate": resource_type in _CONDITIONAL_CREATE,
            "conditionalRead": "full-support",  # If-None-Match and If-Modified-Since on reads and vreads (304)
            "conditionalUpdate": False,
            "conditionalDelete": "not-supported",
        }
    else:
        rendered |= {"versioning": "no-version", "readHistory": False, "updateCreate": False}
    if "search-type" in interactions:
        rendered["searchParam"] = _search_params(resource_type)
        if stored:
            # No empty arrays in FHIR JSON (json.html): an element without include is left out.
            for element, names in (
                ("searchInclude", includes(resource_type)),
                ("searchRevInclude", revincludes(resource_type)),
            ):
                if names:
                    rendered[element] = names
    if operations:
        rendered["operation"] = [_operation(name, resource_type) for name in sorted(operations)]
    return rendered


def capability_statement(app: FastAPI, base_url: str, security: Resource | None = None) -> Resource:
    """``security``: the ``rest.security`` element when authentication is on (``gateway.auth.smart``)."""
    found = served(app)
    types = sorted(set(found.interactions) | set(found.operations))
    rest: Resource = {
        "mode": "server",
        "documentation": "Referrals to DAC platforms: POST a transaction Bundle to the base, or a message "
        "Bundle to $process-message. Search results are paged by their next links (keyset: each match that "
        "existed at the first page is seen once); Prefer: handling=lenient ignores unknown search parameters. The "
        "conformance resources of the gateway are read-only, and the FHIR package dac.gateway is at /package.tgz.",
    }
    if security is not None:
        rest["security"] = security
    rest["resource"] = [
        _resource(name, found.interactions.get(name, set()), found.operations.get(name, set())) for name in types
    ]
    rest["interaction"] = [{"code": code} for code in sorted(found.system_interactions)]
    rest["operation"] = [_operation(name) for name in sorted(found.system_operations)]
    statement: Resource = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": fhir_instant(utc_now()),
        "publisher": "DAC Gateway",
        "kind": "instance",
        "software": {"name": "DAC Gateway", "version": __version__},
        "implementation": {"description": "DAC Gateway FHIR API", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "application/fhir+xml"],
        "patchFormat": list(PATCH_FORMATS) if any("patch" in codes for codes in found.interactions.values()) else [],
        "implementationGuide": [],
        "rest": [rest],
    }
    if "process-message" in found.system_operations:
        statement["messaging"] = [
            {
                "endpoint": [{"protocol": {"system": _MESSAGE_TRANSPORT, "code": "http"}, "address": base_url}],
                "documentation": "Referrals, their updates and oppositions as message Bundles, to "
                "[base]/$process-message; the gateway sends the same messages to the platforms.",
                "supportedMessage": [
                    {"mode": mode, "definition": str(definition["url"])}
                    for definition in catalog.search("MessageDefinition", [])
                    for mode in ("receiver", "sender")
                ],
            }
        ]
    return {key: value for key, value in statement.items() if value != []}
