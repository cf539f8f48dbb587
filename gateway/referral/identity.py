"""Which identifiers make a resource the same resource (conditional create, DESIGN §3.1 and §8).

National identifiers first: the same INS is the same Patient, the same RPPS the same Practitioner, the same
FINESS the same Organization, whoever sends them. A resource without one is matched on its other identifiers
(system and value), which are unique within their issuer's system.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.fhir.france import INS_NIA as INS_NIA  # re-exported: the INS systems are defined with their check
from gateway.fhir.france import INS_NIA_TEST as INS_NIA_TEST
from gateway.fhir.france import INS_NIR as INS_NIR
from gateway.fhir.france import INS_NIR_TEST as INS_NIR_TEST
from gateway.fhir.france import INS_SYSTEMS
from gateway.fhir.types import Resource

IDNPS = "urn:oid:1.2.250.1.71.4.2.1"
RPPS = "https://rpps.esante.gouv.fr"
ADELI = "https://adeli.esante.gouv.fr"
IDNST = "urn:oid:1.2.250.1.71.4.2.2"
FINESS = "https://finess.esante.gouv.fr"
SIRENE = "https://sirene.fr"

NATIONAL_IDENTIFIER_SYSTEMS: dict[str, frozenset[str]] = {
    "Patient": INS_SYSTEMS,
    "Practitioner": frozenset({IDNPS, RPPS, ADELI}),
    "Organization": frozenset({IDNST, FINESS, SIRENE}),
}
#: Types matched on their identifiers at intake. Not a ServiceRequest: its identifier is its sender's idempotency
#: key, scoped to that sender (``idempotency_keys``) — two senders may use one value, as their systems are theirs.
MATCHED_TYPES = frozenset(NATIONAL_IDENTIFIER_SYSTEMS)


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
