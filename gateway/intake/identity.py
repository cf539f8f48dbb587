"""Which identifiers make a resource the same resource (conditional create, DESIGN §3.1 and §8).

National identifiers first: the same INS is the same Patient, the same RPPS the same Practitioner, the same
FINESS the same Organization, whoever sends them. A resource without one is matched on its other identifiers
(system and value), which are unique within their issuer's system.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.fhir.types import Resource

INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"
INS_NIA = "urn:oid:1.2.250.1.213.1.4.9"
INS_NIR_TEST = "urn:oid:1.2.250.1.213.1.4.10"
INS_NIA_TEST = "urn:oid:1.2.250.1.213.1.4.11"
IDNPS = "urn:oid:1.2.250.1.71.4.2.1"
RPPS = "https://rpps.esante.gouv.fr"
ADELI = "https://adeli.esante.gouv.fr"
IDNST = "urn:oid:1.2.250.1.71.4.2.2"
FINESS = "https://finess.esante.gouv.fr"
SIRENE = "https://sirene.fr"

NATIONAL_IDENTIFIER_SYSTEMS: dict[str, frozenset[str]] = {
    "Patient": frozenset({INS_NIR, INS_NIA, INS_NIR_TEST, INS_NIA_TEST}),
    "Practitioner": frozenset({IDNPS, RPPS, ADELI}),
    "Organization": frozenset({IDNST, FINESS, SIRENE}),
}
#: Types matched on their identifiers at intake (a ServiceRequest's identifier is its idempotency key).
MATCHED_TYPES = frozenset({*NATIONAL_IDENTIFIER_SYSTEMS, "ServiceRequest"})


def identity_keys(resource: Resource) -> list[tuple[str, str]]:
    """The (system, value) pairs under which this resource must be unique; national ones when it has any."""
    resource_type = resource.get("resourceType", "")
    if resource_type not in MATCHED_TYPES:
        return []
    keys = [
        (identifier["system"], identifier["value"])
        for identifier in resource.get("identifier") or []
        if isinstance(identifier, dict)
        and isinstance(identifier.get("system"), str)
        and isinstance(identifier.get("value"), str)
        and identifier["system"]
        and identifier["value"]
    ]
    national = NATIONAL_IDENTIFIER_SYSTEMS.get(resource_type, frozenset())
    return list(dict.fromkeys([key for key in keys if key[0] in national] or keys))


def professional_identifiers(rpps: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """The identifiers (system, value) a Practitioner may carry each RPPS number under: the RPPS itself, and the
    IDNPS derived from it ("8" + RPPS)."""
    return tuple((system, value) for number in rpps for system, value in ((RPPS, number), (IDNPS, f"8{number}")))
