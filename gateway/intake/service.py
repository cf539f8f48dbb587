"""Taking in a referral: one database transaction that stores everything or nothing.

Order of work inside the transaction:
1. idempotency — a resubmission (same ServiceRequest identifier, Bundle.identifier or MessageHeader id) gets the
   recorded outcome back, and nothing is written;
2. each entry is resolved — conditional create on national identifiers or ``ifNoneExist``, ``ifMatch`` on updates;
3. references are rewritten from the bundle's fullUrls to the stored ids, and those to the server are checked;
4. the workflow's plan (ServiceRequest status, Tasks) and the CareTeam the referral needs are added;
5. everything is written, with the idempotency keys, and committed.

Two concurrent submissions of the same referral (or of two referrals for one new patient) race on unique keys;
the loser's transaction fails as a whole with ``DuplicateKey`` and is run again, and then finds the winner's work.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson
import structlog

from gateway import metrics
from gateway.errors import (
    BusinessRuleViolation,
    Conflict,
    Forbidden,
    IssueCode,
    PreconditionFailed,
    ResourceNotFound,
)
from gateway.fhir.primitives import fhir_instant, new_id, utc_now
from gateway.fhir.references import local_reference
from gateway.fhir.search import SearchQuery, parse_condition, split_reference
from gateway.fhir.types import JSONObject, Resource
from gateway.intake.vigilance import trait_mismatches, updated_patient
from gateway.referral import facts
from gateway.referral.bundle import SOURCE_ENDPOINT, Referral, ReferralEntry, iter_references
from gateway.referral.careteam import build_care_team
from gateway.referral.identity import NATIONAL_IDENTIFIER_SYSTEMS, identity_keys
from gateway.routing.callbacks import callback_endpoint
from gateway.routing.config import Platform, PlatformKind, RoutingTable
from gateway.routing.router import route
from gateway.routing.schedule import schedule_referral
from gateway.store.database import Database
from gateway.store.repository import StoredResource
from gateway.store.unit_of_work import DuplicateKey, UnitOfWork
from gateway.store.visibility import EVERYTHING, Viewer, searchable
from gateway.validation.rules import uses_ins, uses_test_identity
from gateway.workflow.deadlines import track_deadlines
from gateway.workflow.intake import ReferralFacts, plan_intake
from gateway.workflow.on_record import oppositions_on_record
from gateway.workflow.provenance import GATEWAY, Agent, client_agent, provenance
from gateway.workflow.references import unresolved_references
from gateway.workflow.tasks import TaskReferences

MAX_ATTEMPTS = 8
log = structlog.get_logger("gateway.intake")

#: Directory records: shared by every referral that names the same professional or structure (matched on their
#: national identifiers), and the platforms' Organizations of the routing file. A referral matches them and uses
#: them as they are on file; only an operator changes them (a PUT entry), and each change leaves a Provenance.
DIRECTORY_TYPES = frozenset({"Practitioner", "Organization", "PractitionerRole"})


@dataclass(frozen=True, slots=True)
class EntryOutcome:
    resource_type: str
    id: str
    version_id: int
    last_updated: str
    status: Literal["201 Created", "200 OK"]
    full_url: str | None = None

    @property
    def location(self) -> str:
        return f"{self.resource_type}/{self.id}/_history/{self.version_id}"

    def to_json(self) -> JSONObject:
        # By hand: dataclasses.asdict deep-copies field by field, a measurable share of an intake.
        return {
            "resource_type": self.resource_type,
            "id": self.id,
            "version_id": self.version_id,
            "last_updated": self.last_updated,
            "status": self.status,
            "full_url": self.full_url,
        }

    @classmethod
    def of(cls, stored: StoredResource, created: bool, full_url: str | None = None) -> EntryOutcome:
        return cls(
            stored.resource_type,
            stored.id,
            stored.version_id,
            fhir_instant(stored.last_updated),
            "201 Created" if created else "200 OK",
            full_url,
        )


@dataclass(frozen=True, slots=True)
class IntakeOutcome:
    """What a referral's intake produced; recorded under its idempotency keys and replayed from there."""

    service_request_id: str
    entries: list[EntryOutcome]  # one per posted entry, in order
    generated: list[EntryOutcome] = field(default_factory=list)  # made by the gateway (CareTeam, Tasks, Provenances)
    notes: list[str] = field(default_factory=list)  # what the workflow decided, for the sender
    replayed: bool = False

    def to_json(self) -> JSONObject:
        return {
            "service_request_id": self.service_request_id,
            "entries": [entry.to_json() for entry in self.entries],
            "generated": [entry.to_json() for entry in self.generated],
            "notes": self.notes,
        }

    @classmethod
    def from_json(cls, data: JSONObject, *, replayed: bool) -> IntakeOutcome:
        return cls(
            data["service_request_id"],
            [EntryOutcome(**entry) for entry in data["entries"]],
            [EntryOutcome(**entry) for entry in data["generated"]],
            list(data.get("notes", [])),
            replayed,
        )


async def take_in(
    database: Database,
    referral: Referral,
    routing: RoutingTable,
    sender: str | None = None,
    viewer: Viewer = EVERYTHING,
    callbacks: Sequence[str] | None = None,
    own_base: str | None = None,
) -> IntakeOutcome:
    """Store a referral atomically, or replay the outcome recorded for an earlier submission of it. ``sender``:
    the client that posts it (None when authentication is off), who may then read what it sent; idempotency keys
    are its own: another sender's referral under the same identifiers is another referral.
    ``viewer``: what the caller may see — an ``ifNoneExist`` search matches only among those resources.
    ``callbacks``: where the caller may be called back (its registered endpoints; None with authentication off):
    a message's ``source.endpoint`` elsewhere is a 422, before anything is read or stored. ``own_base``: this
    gateway's FHIR base — a reference on it is the same as its relative form (``gateway.fhir.references``)."""
    origin = callback_endpoint(referral.source_endpoint, callbacks, SOURCE_ENDPOINT)
    platform = route(routing, referral.patient.resource, f"{referral.patient.expression}.resource.address")
    if uses_test_identity(referral.patient.resource) and not platform.allow_test_identities:
        raise BusinessRuleViolation.single(
            IssueCode.INS_TEST_NOT_ALLOWED,
            f"{platform.name} does not accept test identities (INS test OIDs); send the patient's real INS",
            f"{referral.patient.expression}.resource.identifier",
        )
    listed = {(p.organization_system, p.organization_value): p for p in routing.platforms.values()}
    for attempt in range(MAX_ATTEMPTS):
        try:
            async with UnitOfWork(database) as uow:
                # The sender's own keys only: another's referral under the same identifier is no replay, and no
                # conflict either — neither can take the other's identifiers, nor learn of them from a 409.
                recorded = await uow.idempotency.find(referral.idempotency_keys, sender)
                if recorded is not None:
                    outcome = IntakeOutcome.from_json(recorded, replayed=True)
                    metrics.referrals.labels("replayed").inc()
                    log.info("referral_replayed", service_request_id=outcome.service_request_id)
                    return outcome
                outcome = await _store(uow, _fresh_copy(referral), platform, sender, viewer, listed, origin, own_base)
                members = [(entry.resource_type, entry.id) for entry in (*outcome.entries, *outcome.generated)]
                uow.visibility.add_members(outcome.service_request_id, members)
                if sender is not None:
                    uow.visibility.add_sender(outcome.service_request_id, sender)
                uow.idempotency.add(referral.idempotency_keys, sender, outcome.service_request_id, outcome.to_json())
                await uow.commit()
            metrics.referrals.labels("stored").inc()
            # Ids only: they say which referral without saying who the patient is.
            log.info(
                "referral_stored",
                service_request_id=outcome.service_request_id,
                created=sum(entry.status == "201 Created" for entry in outcome.entries) + len(outcome.generated),
                attempt=attempt + 1,
            )
            return outcome
        except DuplicateKey as exc:
            if attempt == MAX_ATTEMPTS - 1:
                raise Conflict.single(
                    IssueCode.CONCURRENT_CHANGE,
                    "the referral kept colliding with concurrent changes; nothing was stored, retry it",
                ) from exc
    raise AssertionError("unreachable")  # pragma: no cover


def _fresh_copy(referral: Referral) -> Referral:
    """Intake rewrites the resources in place; every attempt starts from what was posted (orjson: fast)."""
    entries = [
        dataclasses.replace(entry, resource=orjson.loads(orjson.dumps(entry.resource))) for entry in referral.entries
    ]
    by_index = {entry.index: entry for entry in entries}
    return dataclasses.replace(
        referral,
        entries=entries,
        service_request=by_index[referral.service_request.index],
        patient=by_index[referral.patient.index],
    )


@dataclass(slots=True)
class _Resolution:
    entry: ReferralEntry
    id: str
    existing: StoredResource | None = None  # matched (conditional create) or updated (PUT)
    create: bool = True
    same_as: _Resolution | None = None  # an earlier entry of this bundle with the same national identifier


@dataclass(frozen=True, slots=True)
class _Known:
    """What the store already holds under the referral's identifiers, fetched in one query up front."""

    identities: dict[tuple[str, str, str], str]
    resources: dict[tuple[str, str], StoredResource]

    def matching(self, resource_type: str, keys: list[tuple[str, str]]) -> StoredResource | None:
        for system, value in keys:
            found = self.identities.get((resource_type, system, value))
            if found is not None and (resource_type, found) in self.resources:
                return self.resources[(resource_type, found)]
        return None


async def _known(uow: UnitOfWork, referral: Referral, platform: Platform) -> _Known:
    wanted = [("Organization", platform.organization_system, platform.organization_value)]
    for entry in referral.entries:
        if entry.method == "POST" and entry.resource_type != "ServiceRequest":
            wanted += [(entry.resource_type, system, value) for system, value in identity_keys(entry.resource)]
    holders = await uow.resources.identify_many(wanted)
    return _Known(
        {key: stored.id for key, stored in holders.items()},
        {(stored.resource_type, stored.id): stored for stored in holders.values()},
    )


async def _resolve(uow: UnitOfWork, entry: ReferralEntry, known: _Known, viewer: Viewer) -> _Resolution:
    resource_type = entry.resource_type
    if entry.method == "PUT":
        target = entry.update_target or ""
        current = await uow.resources.get(resource_type, target)
        if current is None or not await uow.visibility.can_see(viewer, resource_type, target):
            # What the caller may not see, it may not update either: the same 404 as for nothing there.
            raise ResourceNotFound.single(
                IssueCode.RESOURCE_NOT_FOUND,
                f"{resource_type}/{target} does not exist",
                f"{entry.expression}.request.url",
            )
        if resource_type in DIRECTORY_TYPES and not viewer.everything:
            # Every party and every delivery carries what is on file: a sender's names and telecoms over it would
            # be everyone's (issue 23). Operators only (with authentication off, the caller is one).
            raise Forbidden.single(
                IssueCode.DIRECTORY_RECORD_READ_ONLY,
                f"{resource_type}/{target} is a directory record shared by every party: only an operator changes it; "
                "send the entry as a POST (it is matched on its national identifier and used as on file)",
                f"{entry.expression}.request.method",
            )
        if entry.if_match is not None and entry.if_match.strip() not in (
            current.etag,
            f'"{current.version_id}"',
        ):
            raise PreconditionFailed.single(
                IssueCode.VERSION_MISMATCH,
                f"ifMatch {entry.if_match} is not the current version of {current.reference}: {current.etag}",
                f"{entry.expression}.request.ifMatch",
            )
        if set(identity_keys(entry.resource)) != set(identity_keys(current.content)):
            # The identity table keys the resource on them: they change through the identity services, not here.
            raise BusinessRuleViolation.single(
                IssueCode.IDENTIFIER_CHANGE_FORBIDDEN,
                f"this update changes the national identifiers of {current.reference}; send them unchanged",
                f"{entry.expression}.resource.identifier",
            )
        return _Resolution(entry, current.id, existing=current, create=False)
    keys = identity_keys(entry.resource)
    if entry.if_none_exist:
        where = f"{entry.expression}.request.ifNoneExist"
        query = parse_condition(resource_type, entry.if_none_exist, where, "ifNoneExist")
        wanted = _identifier_pairs(query)
        if wanted and set(wanted) <= set(keys):
            # The identifiers this resource is registered under: already looked up with the others. The
            # national-identity match every entry gets anyway (DESIGN §3.1): one patient, one professional.
            matches = [m for m in [known.matching(resource_type, wanted)] if m is not None]
        else:
            # Any other search matches only among what the caller may see: it must not adopt (and so come to
            # read) another party's Consent or CareTeam, nor learn from a 412 that such a resource exists — nor,
            # from a match, which Patient its own Consent by INS is linked to (``searchable``).
            matches = await uow.resources.find(query, limit=2, visible=searchable(viewer, query))
        if len(matches) > 1:
            raise PreconditionFailed.single(
                IssueCode.CONDITIONAL_MULTIPLE_MATCHES,
                f"ifNoneExist matches several {resource_type} resources; it must match at most one",
                where,
            )
        if matches:
            _check_same_identity(resource_type, entry.resource, matches[0], where)
            return _Resolution(entry, matches[0].id, existing=matches[0], create=False)
    if resource_type != "ServiceRequest" and (existing := known.matching(resource_type, keys)):
        return _Resolution(entry, existing.id, existing=existing, create=False)
    return _Resolution(entry, new_id())


def _identity_namespaces(resource_type: str, resource: Resource) -> dict[str, set[str]]:
    """The resource's national identifiers by what they number: a patient has one INS whatever its system (NIR,
    NIA, test ones: two of them are two patients, or a test identity and a real one); a professional one RPPS and
    one ADELI (an IDNPS is one of those: ``professional_keys``); a structure one value per system."""
    if resource_type == "Practitioner":
        namespaces: dict[str, set[str]] = {}
        for key in facts.professional_keys(resource):
            kind, _, value = key.partition(":")
            namespaces.setdefault(kind, set()).add(value)
        return namespaces
    national = NATIONAL_IDENTIFIER_SYSTEMS.get(resource_type, frozenset())
    namespaces = {}
    for system, value in identity_keys(resource):
        if system in national:
            # A patient's INS is kept with its system: a test identity's number is no real one's.
            kind, key = ("ins", f"{system}|{value}") if resource_type == "Patient" else (system, value)
            namespaces.setdefault(kind, set()).add(key)
    return namespaces


def _check_same_identity(resource_type: str, posted: Resource, matched: StoredResource, where: str) -> None:
    """A condition (on a name, a birth date…) may match a resource registered under another national identifier
    than the entry's (another INS, another RPPS): adopting it would make two patients, or two professionals, one.
    A 422, at the condition. Only a contradiction counts: an IDNPS beside the RPPS it derives from is the same."""
    ours = _identity_namespaces(resource_type, posted)
    theirs = _identity_namespaces(resource_type, matched.content)
    if any(kind in theirs and not values & theirs[kind] for kind, values in ours.items()):
        raise BusinessRuleViolation.single(
            IssueCode.IDENTIFIER_CHANGE_FORBIDDEN,
            f"ifNoneExist matches {matched.reference}, registered under another national identifier than this "
            "entry's: it is not the same one; match on identifier=system|value",
            where,
        )


def _identifier_pairs(query: SearchQuery) -> list[tuple[str, str]]:
    """(system, value) pairs when a query is nothing but ``identifier=system|value`` criteria."""
    pairs = []
    for criterion in query.criteria:
        if criterion.parameter.name != "identifier" or len(criterion.tokens) != 1:
            return []
        token = criterion.tokens[0]
        if not token.system or not token.value:
            return []
        pairs.append((token.system, token.value))
    return pairs


def _rewrite_references(
    resolutions: list[_Resolution], stored_ids: dict[str, str], own_base: str | None
) -> list[tuple[str, str]]:
    """Point bundle-internal references at stored ids; return the server references left to check (target,
    FHIRPath of the Reference). One rule for every element: a reference on this gateway's own base is its
    relative form (stored so, and checked as one); any other absolute URL is external, kept as written."""
    to_check = []
    for resolution in resolutions:
        entry = resolution.entry
        for reference, path in iter_references(entry.resource, f"{entry.expression}.resource"):
            target = reference["reference"]
            if target in stored_ids:
                reference["reference"] = stored_ids[target]
            elif (local := local_reference(target, own_base)) is not None:
                reference["reference"] = local
                to_check.append((local, path))
    return to_check


async def _store(
    uow: UnitOfWork,
    referral: Referral,
    platform: Platform,
    sender: str | None,
    viewer: Viewer,
    listed: Mapping[tuple[str, str], Platform] | None = None,
    origin: str | None = None,
    own_base: str | None = None,
) -> IntakeOutcome:
    """``listed``: every platform of the routing file by its Organization's identifier (referenceable by anyone,
    like the national directories: ``gateway.workflow.references``); ``origin``: where the sender is to be sent
    updates (a message's callback), if anywhere."""
    listed = listed or {}
    platforms = frozenset(listed)
    known = await _known(uow, referral, platform)
    resolutions = []
    claimed: dict[tuple[str, str, str], _Resolution] = {}
    for entry in referral.entries:
        resolution = await _resolve(uow, entry, known, viewer)
        if entry.resource_type == "Patient" and resolution.existing is not None and uses_ins(entry.resource):
            # Identity vigilance: a known INS with other traits is refused, before anything is written.
            mismatches = trait_mismatches(entry.resource, resolution.existing.content, f"{entry.expression}.resource")
            if mismatches:
                raise BusinessRuleViolation(*mismatches)
        if resolution.create and entry.resource_type == "Organization":
            routed = next((listed[key] for key in identity_keys(entry.resource) if key in listed), None)
            if routed is not None:
                # A platform's Organization is the routing file's, whoever names it first (a peer gateway's
                # forwarded referral): what a bundle says of it is not kept.
                entry.resource.clear()
                entry.resource.update(_platform_organization_content(routed))
        typed_keys = [(entry.resource_type, system, value) for system, value in identity_keys(entry.resource)]
        earlier = next((claimed[key] for key in typed_keys if key in claimed), None)
        if resolution.create and earlier is not None and entry.resource_type != "ServiceRequest":
            # Two entries for one person or organisation (same RPPS, same FINESS): one resource.
            resolution = _Resolution(entry, earlier.id, earlier.existing, create=False, same_as=earlier)
        elif resolution.create:
            claimed.update(dict.fromkeys(typed_keys, resolution))
        resolutions.append(resolution)
    stored_ids: dict[str, str] = {}
    for resolution in resolutions:
        reference = f"{resolution.entry.resource_type}/{resolution.id}"
        if resolution.entry.full_url:
            stored_ids[resolution.entry.full_url] = reference
        stored_ids.setdefault(reference, reference)
    for alias, full_url in referral.aliases.items():
        stored_ids[alias] = stored_ids[full_url]

    unresolved = await unresolved_references(
        uow,
        viewer,
        _rewrite_references(resolutions, stored_ids, own_base),
        platforms,
        "is neither an entry of this bundle nor a resource on this gateway",
    )
    if unresolved:
        raise BusinessRuleViolation(*unresolved)

    by_entry = {id(resolution.entry): resolution for resolution in resolutions}
    now = utc_now()
    service_request = referral.service_request.resource
    service_request_reference = f"ServiceRequest/{by_entry[id(referral.service_request)].id}"
    patient_resolution = by_entry[id(referral.patient)]
    patient_reference = f"Patient/{patient_resolution.id}"

    in_bundle = {f"{r.entry.resource_type}/{r.id}": r.entry.resource for r in resolutions}

    async def load(reference: str) -> Resource | None:
        if reference in in_bundle:
            return in_bundle[reference]
        resource_type, resource_id = split_reference(reference)
        stored = await uow.resources.get(resource_type, resource_id) if resource_type else None
        return stored.content if stored else None

    care_teams = referral.of_type("CareTeam")
    gp = facts.gp_reference(referral.patient.resource, [entry.resource for entry in care_teams])
    requester = _first_reference(service_request.get("requester"))
    declared = facts.declared_validation(service_request)
    gp_link = (facts.extension(service_request, facts.GP_LINK_EXTENSION) or {}).get("valueCode")
    trigger = facts.trigger_of(
        gp=gp,
        requester_is_gp=await facts.requester_is_gp(requester, gp, load),
        gp_link=gp_link,
        validation_declared=declared is not None,
    )
    on_record = await oppositions_on_record(
        uow,
        patient_reference if patient_resolution.existing is not None else None,
        identity_keys(referral.patient.resource),
        now,
    )
    oppositions = [stored.reference for stored in on_record]
    # Another party's opposition stops this referral without being shown to its sender: the Provenance names only
    # those it may read (its own, or of a referral it is a party to); the reason says why in any case.
    shown = [o for o in oppositions if await uow.visibility.can_see(viewer, "Consent", o.split("/", 1)[1])]
    # After the look-ups: the platform's Organization, when it is new, is the first write, and every write waits
    # for the commit's single flush (a write staged before a read is flushed first: one more round trip).
    platform_reference = _platform_organization(uow, platform, known, claimed)
    plan = plan_intake(
        ReferralFacts(
            policy=platform.policy,
            gp_validation_delay=platform.gp_validation_delay,
            trigger=trigger,
            # The referral's own deny counts within its period; its permit lifts nothing on record.
            consent=facts.consent_state([entry.resource for entry in referral.of_type("Consent")], now),
            opposition_on_record=bool(oppositions),
            oppositions=tuple(shown),
            declared_validation=declared[0] if declared else None,
            declared_validator=declared[1] if declared else None,
            forwarded=platform.kind is PlatformKind.PEER_GATEWAY,
            consents=tuple(f"Consent/{by_entry[id(e)].id}" for e in referral.of_type("Consent")),
        ),
        references := TaskReferences(service_request_reference, patient_reference, requester, gp, platform_reference),
        now,
        # The gateway decides (route, hold, revoke); the client that posted the referral caused it.
        deciders := [GATEWAY] if sender is None else [GATEWAY, client_agent(sender)],
    )
    service_request["status"] = plan.service_request_status
    if plan.service_request_extensions:
        service_request["extension"] = [*service_request.get("extension", []), *plan.service_request_extensions]
    if plan.service_request_status != "revoked":
        service_request["performer"] = [{"reference": platform_reference, "display": platform.name}]

    generated: list[Resource] = [*plan.tasks, *plan.provenances]
    track_deadlines(uow, plan.tasks)  # a GP validation held for its answer: the escalation scan's row
    if plan.routed:
        generated += schedule_referral(uow, platform, references, now, hop=referral.hop_count, deciders=deciders)
    if origin:
        uow.outbox.record_origin(service_request_reference.split("/")[1], origin)
    if not care_teams:
        care_team = build_care_team(
            patient_reference,
            gp,
            requester,
            [f"PractitionerRole/{by_entry[id(e)].id}" for e in referral.of_type("PractitionerRole")],
            [f"RelatedPerson/{by_entry[id(e)].id}" for e in referral.of_type("RelatedPerson")],
        )
        care_team_id = new_id()
        generated.insert(0, care_team | {"id": care_team_id})
        _link(service_request, f"CareTeam/{care_team_id}")
    else:
        for entry in care_teams:
            _link(service_request, f"CareTeam/{by_entry[id(entry)].id}")
    for entry in referral.of_type("Consent"):
        _link(service_request, f"Consent/{by_entry[id(entry)].id}")

    entries: list[EntryOutcome] = []
    created: dict[str, StoredResource] = {}
    notes = list(plan.notes)
    for resolution in resolutions:
        entry = resolution.entry
        if resolution.create:
            stored = uow.resources.add(
                entry.resource, resource_id=resolution.id, identity_keys=identity_keys(entry.resource)
            )
            created[resolution.id] = stored
            entries.append(EntryOutcome.of(stored, True, entry.full_url))
        elif resolution.same_as is not None and resolution.same_as.create:
            entries.append(EntryOutcome.of(created[resolution.id], False, entry.full_url))
        elif entry.method == "PUT" and resolution.existing is not None:
            updated = await uow.resources.update(resolution.existing, entry.resource)
            if updated is None:
                raise DuplicateKey(f"{resolution.existing.reference} changed during the transaction")
            entries.append(EntryOutcome.of(updated, False, entry.full_url))
            if entry.resource_type in DIRECTORY_TYPES:  # an operator's change (``_resolve``): who, and when
                generated.append(
                    provenance(
                        [f"{updated.reference}/_history/{updated.version_id}"],
                        now,
                        deciders,
                        "directory record changed by an operator",
                    )
                )
        elif entry.resource_type == "Patient" and (renewed := await _renewed_patient(uow, resolution, now, deciders)):
            entries.append(EntryOutcome.of(renewed[0], False, entry.full_url))
            generated.append(renewed[1])
        else:
            assert resolution.existing is not None
            entries.append(EntryOutcome.of(resolution.existing, False, entry.full_url))
            if entry.resource_type in DIRECTORY_TYPES and _differs(entry.resource, resolution.existing.content):
                notes.append(
                    f"{resolution.existing.reference} was matched on its identifiers and is used as on file: what "
                    "this referral says of it differs and was not kept (directory records change only by an operator)"
                )
    made = [
        EntryOutcome.of(uow.resources.add(resource, resource_id=resource.pop("id", None) or new_id()), True)
        for resource in generated
    ]
    return IntakeOutcome(by_entry[id(referral.service_request)].id, entries, made, notes)


async def _renewed_patient(
    uow: UnitOfWork, resolution: _Resolution, now: datetime, deciders: Sequence[Agent]
) -> tuple[StoredResource, Resource] | None:
    """A Patient on record matched on its INS, whose traits the referral gives equally (``_store`` refused it
    otherwise): its next version with what else the referral says of the patient (``updated_patient``), and the
    Provenance of that version — or None when the referral says nothing new of it (or names it without an INS)."""
    existing = resolution.existing
    if existing is None or not uses_ins(resolution.entry.resource):
        return None
    merged = updated_patient(existing.content, resolution.entry.resource)
    if merged is None:
        return None
    updated = await uow.resources.update(existing, merged)
    if updated is None:  # changed since it was read: the whole intake runs again
        raise DuplicateKey(f"{existing.reference} changed during the transaction")
    return updated, provenance(
        [f"{updated.reference}/_history/{updated.version_id}"],
        now,
        deciders,
        "patient record updated from a referral naming its INS with the same identity traits",
    )


def _differs(posted: Resource, stored: Resource) -> bool:
    """Whether a posted entry says something else than the record on file (ids and meta aside)."""
    return any(stored.get(key) != value for key, value in posted.items() if key not in ("id", "meta", "text"))


def _platform_organization(
    uow: UnitOfWork, platform: Platform, known: _Known, claimed: dict[tuple[str, str, str], _Resolution]
) -> str:
    """The platform's Organization (from the routing file), created the first time a referral goes there —
    unless the bundle itself carries it (a referral forwarded by a peer gateway names its platform)."""
    key = [(platform.organization_system, platform.organization_value)]
    in_bundle = claimed.get(("Organization", *key[0]))
    found = in_bundle.id if in_bundle is not None else known.identities.get(("Organization", *key[0]))
    if found is None:
        found = uow.resources.add(_platform_organization_content(platform), identity_keys=key).id
    return f"Organization/{found}"


def _platform_organization_content(platform: Platform) -> Resource:
    return {
        "resourceType": "Organization",
        "identifier": [{"system": platform.organization_system, "value": platform.organization_value}],
        "active": True,
        "name": platform.name,
        "telecom": [{"system": "url", "value": platform.endpoint}],
    }


def _first_reference(value: Any) -> str | None:
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("reference"), str):
            return str(item["reference"])
    return None


def _link(service_request: Resource, reference: str) -> None:
    """Add a reference to ServiceRequest.supportingInfo, once."""
    supporting = service_request.setdefault("supportingInfo", [])
    if not any(isinstance(item, dict) and item.get("reference") == reference for item in supporting):
        supporting.append({"reference": reference})
