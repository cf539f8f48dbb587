"""The CapabilityStatement, generated from what is really served: the search parameter table and the routes."""

from __future__ import annotations

from gateway import __version__
from gateway.fhir.primitives import fhir_instant, utc_now
from gateway.fhir.search import COMMON_PARAMETERS, SEARCH_PARAMETERS
from gateway.fhir.types import Resource

_INTERACTIONS = ("read", "vread", "history-instance", "history-type", "search-type")
#: Beyond reading: Task decisions (PUT / JSON Patch, If-Match required) and Consent recording.
_WRITES = {"Task": ("update", "patch"), "Consent": ("create",)}
#: Conditional create: inside a transaction (``ifNoneExist``) for the directory types, and ``POST /fhir/Consent``
#: with ``If-None-Exist``.
_CONDITIONAL_CREATE = ("Patient", "Practitioner", "Organization", "PractitionerRole", "Consent")


def _search_param(name: str, kind: str, documentation: str) -> Resource:
    rendered: Resource = {"name": name, "type": kind}
    if documentation:
        rendered["documentation"] = documentation
    return rendered


def capability_statement(base_url: str, security: Resource | None = None) -> Resource:
    """``security``: the ``rest.security`` element when authentication is on (``gateway.auth.smart``)."""
    resources = []
    for resource_type, parameters in sorted(SEARCH_PARAMETERS.items()):
        all_parameters = {**COMMON_PARAMETERS, **parameters}
        resources.append(
            {
                "type": resource_type,
                "interaction": [{"code": code} for code in (*_INTERACTIONS, *_WRITES.get(resource_type, ()))],
                "versioning": "versioned-update" if resource_type == "Task" else "versioned",
                "readHistory": True,
                "updateCreate": False,
                "conditionalUpdate": False,
                "conditionalCreate": resource_type in _CONDITIONAL_CREATE,
                "searchParam": [_search_param(p.name, p.type.value, p.documentation) for p in all_parameters.values()],
            }
        )
    rest: Resource = {
        "mode": "server",
        "documentation": "Referrals to DAC platforms: POST a transaction Bundle to the base, or a message "
        "Bundle to $process-message. Search results are paged with _count and _offset.",
    }
    if security is not None:
        rest["security"] = security
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": fhir_instant(utc_now()),
        "publisher": "DAC Gateway",
        "kind": "instance",
        "software": {"name": "DAC Gateway", "version": __version__},
        "implementation": {"description": "DAC Gateway FHIR API", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "application/fhir+xml"],
        "rest": [
            rest
            | {
                "resource": resources,
                "interaction": [
                    {"code": "transaction", "documentation": "A referral bundle (DESIGN §7)"},
                    {"code": "history-system", "documentation": "What the caller may see; _since, _count"},
                ],
                "operation": [
                    {
                        "name": "process-message",
                        "definition": "http://hl7.org/fhir/OperationDefinition/MessageHeader-process-message",
                    },
                    {"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"},
                ],
            }
        ],
    }
