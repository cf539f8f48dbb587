"""What a client may name by id in what it writes: a resource it may see, or shared directory data.

One rule for every write a client makes — a referral's entries (``gateway.intake.service``), a Consent posted on
its own or in an opposition message, and the Patient such a message carries (``gateway.workflow.opposition``), a
Task decision (``gateway.workflow.decisions``). A reference to anything else is answered exactly as one to nothing
there — the same 422 ``reference-unresolved``, same words, the element's FHIRPath — so that naming an id never
tells whether another party's resource exists, and nothing is stored pointing at what its poster may not see.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.errors import Issue, IssueCode
from gateway.fhir.references import local_reference
from gateway.fhir.search import SEARCH_PARAMETERS, split_reference
from gateway.fhir.types import Resource
from gateway.referral.bundle import iter_references
from gateway.referral.identity import NATIONAL_IDENTIFIER_SYSTEMS, identity_keys
from gateway.routing.config import RoutingTable
from gateway.store.unit_of_work import UnitOfWork
from gateway.store.visibility import Viewer

#: Shared directory data: a reference to one of these resources by id is accepted from anyone, seen or not.
#: They describe professionals and structures, not patients: a Practitioner under a national professional
#: identifier (RPPS, ADELI, IDNPS — the public Annuaire santé) and an Organization under a national structure
#: identifier (FINESS, SIRENE, IDNST — public registers), each deduplicated across senders (DESIGN §3.1), so that
#: whoever posts that RPPS or FINESS is matched to that very resource and its id in the answer anyway; and the
#: platforms' Organizations of the routing file, which every routed ServiceRequest names as its performer.
#: Everything else — the Patient (even under its INS: patient data, reached only with the identity traits),
#: Consent, ServiceRequest, CareTeam, Task, RelatedPerson, DocumentReference, PractitionerRole (a professional's
#: role in one sender's referrals) and professionals known only by a local identifier — is referenceable only
#: by a party of a referral it belongs to.
DIRECTORY_SYSTEMS: dict[str, frozenset[str]] = {
    resource_type: NATIONAL_IDENTIFIER_SYSTEMS[resource_type] for resource_type in ("Practitioner", "Organization")
}
#: What follows a reference's target in the answer when nothing of the request itself is meant.
NOT_ON_THIS_GATEWAY = "is not a resource on this gateway"


def platform_keys(routing: RoutingTable) -> frozenset[tuple[str, str]]:
    """The identifiers of every platform's Organization in the routing file (referenceable by anyone)."""
    return frozenset((p.organization_system, p.organization_value) for p in routing.platforms.values())


def server_references(resource: Resource, path: str, own_base: str | None = None) -> list[tuple[str, str]]:
    """Every reference by id to a stored resource in ``resource`` (its root's FHIRPath ``path``), as (target in
    its relative form, FHIRPath of the Reference): written relatively, or as an absolute URL on this gateway's
    own base ``own_base`` (``gateway.fhir.references``) — not a contained one (``#…``), a bundle's ``urn:`` id,
    nor an absolute URL elsewhere (external: kept as written, never resolved here)."""
    return [
        (local, reference_path)
        for reference, reference_path in iter_references(resource, path)
        if (local := local_reference(reference["reference"], own_base)) is not None
    ]


async def referenceable(
    uow: UnitOfWork,
    viewer: Viewer,
    resource_type: str,
    resource_id: str,
    platforms: frozenset[tuple[str, str]],
) -> bool:
    """A reference by id to a stored resource resolves for this caller: one it may see, or shared directory
    data (``DIRECTORY_SYSTEMS``, the platforms' Organizations). Anything else is answered as nothing there."""
    stored = await uow.resources.get(resource_type, resource_id)
    if stored is None:
        return False
    if await uow.visibility.can_see(viewer, resource_type, resource_id):
        return True
    systems = DIRECTORY_SYSTEMS.get(resource_type)
    if systems is None:
        return False
    keys = [
        key
        for key in identity_keys(stored.content)
        if key[0] in systems or (resource_type == "Organization" and key in platforms)
    ]
    # Registered under it (not merely carrying it): the one resource every referral naming it is matched to.
    return bool(keys) and await uow.resources.identify(resource_type, keys) == resource_id


async def unresolved_references(
    uow: UnitOfWork,
    viewer: Viewer,
    references: Iterable[tuple[str, str]],
    platforms: frozenset[tuple[str, str]],
    unknown: str = NOT_ON_THIS_GATEWAY,
) -> list[Issue]:
    """An issue for each (target, FHIRPath of the Reference) that does not resolve for this caller — unknown,
    not a served type, or not referenceable by it — each worded alike: ``"{target} {unknown}"``."""
    issues = []
    for target, path in references:
        target_type, target_id = split_reference(target)
        if (
            target_type is None
            or target_type not in SEARCH_PARAMETERS
            or not await referenceable(uow, viewer, target_type, target_id, platforms)
        ):
            # What the caller may not see is answered exactly as what does not exist: same code, same words.
            issues.append(
                Issue(IssueCode.REFERENCE_UNRESOLVED, f"{target} {unknown}", f"{path}.reference", "business-rule")
            )
    return issues
