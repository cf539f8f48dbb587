"""Recording what a patient said about their information (L1110-12): a Consent posted on its own, or carried by
an ``opposition`` message. An opposition revokes the patient's open referrals and cancels their open Tasks, in
the same transaction; it is kept, so that later referrals for that patient — looked up by national identifier,
whoever sends them — are revoked at intake."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from gateway.auth.clients import Role
from gateway.errors import (
    BusinessRuleViolation,
    Conflict,
    InvalidRequest,
    InvalidResource,
    IssueCode,
    PreconditionFailed,
    ResourceNotFound,
)
from gateway.fhir.models import parse_model
from gateway.fhir.primitives import fhir_instant, utc_now
from gateway.fhir.references import local_reference
from gateway.fhir.search import SearchQuery, parse_search, split_reference
from gateway.fhir.types import Resource
from gateway.referral.consents import is_permit, lifts, opposition_in_force, provision_type
from gateway.referral.identity import identity_keys
from gateway.routing.config import RoutingTable
from gateway.routing.schedule import platform_of, schedule_platform_update, schedule_update
from gateway.store.database import Database
from gateway.store.repository import StoredResource
from gateway.store.unit_of_work import DuplicateKey, UnitOfWork
from gateway.store.visibility import EVERYTHING, Viewer, searchable
from gateway.validation.rules import identity_traits, uses_ins
from gateway.workflow.deadlines import escalated_to_platform
from gateway.workflow.on_record import oppositions_on_record
from gateway.workflow.permissions import check_consent_update_right
from gateway.workflow.provenance import GATEWAY, Agent, Identifier, client_agent, provenance
from gateway.workflow.references import platform_keys, server_references, unresolved_references
from gateway.workflow.tasks import BusinessStatus, RevocationReason, business_status, revocation_reason
from gateway.workflow.transitions import FINAL

OPEN_REQUEST_STATUSES = ("draft", "active", "on-hold")
OPPOSITION_REASON = "patient-opposition (droit d'opposition, L1110-12)"
#: Runs of the transaction before a patient's referrals changing concurrently every time is reported as 409.
MAX_ATTEMPTS = 8
log = structlog.get_logger("gateway.workflow")


@dataclass(frozen=True, slots=True)
class ConsentOutcome:
    consent: StoredResource
    patient: str | None  # the stored Patient it applies to, when known here
    revoked: list[str] = field(default_factory=list)  # ServiceRequest references revoked by an opposition
    created: bool = True  # False: a conditional create found it already there, and wrote nothing
    notes: list[str] = field(default_factory=list)  # what the answer tells besides (a lift's consequences)


async def _patient_reference(
    uow: UnitOfWork,
    consent: Resource,
    patient: Resource | None,
    viewer: Viewer,
    paths: tuple[str, str],
    opposition: bool,
    own_base: str | None,
) -> str | None:
    consent_path, patient_path = paths
    if patient is not None:  # carried by a message: the same Patient as any referral with that INS
        keys = identity_keys(patient)
        found = await uow.resources.identify("Patient", keys)
        if opposition:
            await _check_identity(uow, viewer, found, patient, patient_path)
        return f"Patient/{found or uow.resources.add(patient, identity_keys=keys).id}"
    reference = consent.get("patient") or {}
    if isinstance(reference.get("reference"), str):
        # An absolute URL elsewhere names no Patient here (gateway.fhir.references): answered as an unknown one.
        local = local_reference(reference["reference"], own_base)
        target_type, target_id = split_reference(local) if local is not None else (None, "")
        if (
            target_type != "Patient"
            or not await uow.resources.exists("Patient", target_id)
            or not await uow.visibility.can_see(viewer, "Patient", target_id)
        ):
            # A Patient the caller may not see is answered as one that does not exist: by id, only one's own.
            raise BusinessRuleViolation.single(
                IssueCode.REFERENCE_UNRESOLVED,
                f"{reference['reference']} is not a Patient on this gateway; reference the patient by INS instead",
                f"{consent_path}.patient.reference",
            )
        return f"Patient/{target_id}"
    identifier = reference.get("identifier") or {}
    if identifier.get("system") and identifier.get("value"):
        found = await uow.resources.identify("Patient", [(identifier["system"], identifier["value"])])
        if opposition:
            await _check_identity(uow, viewer, found, None, f"{consent_path}.patient")
        return f"Patient/{found}" if found else None
    raise InvalidResource.single(
        IssueCode.ELEMENT_REQUIRED,
        "Consent.patient must reference the patient, by id or by national identifier (INS)",
        f"{consent_path}.patient",
        "required",
    )


async def _check_identity(
    uow: UnitOfWork, viewer: Viewer, found: str | None, patient: Resource | None, expression: str
) -> None:
    """An opposition revokes every party's referrals for its patient: it names the patient as a referral does —
    a Patient the caller may see (a party to one of its referrals), or the INS with the five identity traits, which
    must match the identity on record — else 422 ``patient-identity-required``, before anything is written. An
    INS alone (numbers can be enumerated) is not enough. With authentication off the caller sees everything."""
    if await _identifies(uow, viewer, found, patient):
        return
    raise BusinessRuleViolation.single(
        IssueCode.PATIENT_IDENTITY_REQUIRED,
        "an opposition names its patient as a referral does: a Patient of one of your referrals, or the INS with "
        "the five identity traits (birth family name, birth given names, gender, birth date, birth place INSEE "
        "code) as on record — a Patient (a message's entry, or contained in the Consent); nothing was revoked",
        expression,
    )


async def _identifies(uow: UnitOfWork, viewer: Viewer, found: str | None, patient: Resource | None) -> bool:
    """Whether the caller names the patient as strongly as an opposition must (``_check_identity``)."""
    if viewer.everything or (found is not None and await uow.visibility.can_see(viewer, "Patient", found)):
        return True
    traits = identity_traits(patient) if patient is not None and uses_ins(patient) else None
    if traits is not None:
        stored = await uow.resources.get("Patient", found) if found is not None else None
        if found is None or (stored is not None and identity_traits(stored.content) == traits):
            return True  # a patient not known here: recorded by INS, for the later referrals it stops
    return False


def contained_patient(consent: Resource) -> Resource | None:
    """The Patient a standalone Consent carries in ``contained`` and names as ``patient`` (``#id``): how a POST
    /fhir/Consent gives the patient's identity traits. Taken out of the Consent, which then names the patient as
    any other does (the stored Patient, its INS)."""
    reference = (consent.get("patient") or {}).get("reference")
    if not isinstance(reference, str) or not reference.startswith("#"):
        return None
    contained = consent.get("contained") or []
    found = next(
        (
            r
            for r in contained
            if isinstance(r, dict) and r.get("resourceType") == "Patient" and r.get("id") == reference[1:]
        ),
        None,
    )
    if found is None:
        return None
    rest = [r for r in contained if r is not found]
    if rest:
        consent["contained"] = rest
    else:
        consent.pop("contained", None)
    del consent["patient"]["reference"]
    patient = dict(found)
    patient.pop("id", None)
    return patient


async def record_consent(
    database: Database,
    routing: RoutingTable,
    consent: Resource,
    patient: Resource | None = None,
    viewer: Viewer = EVERYTHING,
    sender: str | None = None,
    paths: tuple[str, str] = ("Consent", "Patient"),
    condition: SearchQuery | None = None,
    own_base: str | None = None,
) -> ConsentOutcome:
    """Store the Consent (and, for an opposition, revoke and cancel) in one transaction. A referral or Task changed
    concurrently fails it with ``DuplicateKey``; it is then run again as a whole, from what was posted, so an
    opposition is never committed with a referral it should have revoked still open. ``viewer``: what the caller
    may see — a patient referenced by id must be one of those (by INS, any patient), and so must every other
    resource the Consent or the Patient names by id (``gateway.workflow.references``); ``sender``: the client that
    posts it (None when authentication is off), named in the Provenance of what an opposition revokes; ``paths``:
    the FHIRPath of the Consent and of the Patient as posted, for the answer's issues (``Bundle.entry[n].resource``
    in a message). ``condition``: a conditional create's search (``If-None-Exist``, R4 http.html#ccreate), run
    first, among what the caller may see (``searchable``, as its searches): one match is the outcome, nothing
    written and nothing revoked again; several are a 412; none, the Consent is stored — under a key made of the
    caller's view and the search, so that of identical conditional posts racing, one stores and the others, run
    again (``DuplicateKey``), find it. ``own_base``: this gateway's FHIR base — a reference on it is the same as
    its relative form."""
    parse_model(consent)
    return await _run_again_on_conflict(
        "consent_retried",
        lambda: _record(
            database,
            routing,
            copy.deepcopy(consent),
            copy.deepcopy(patient),
            viewer,
            sender,
            paths,
            condition,
            own_base,
        ),
    )


async def _run_again_on_conflict(event: str, run: Callable[[], Awaitable[ConsentOutcome]]) -> ConsentOutcome:
    """``run`` (one transaction, from what was posted), run again as a whole when what it changes changed
    concurrently (``DuplicateKey``); after MAX_ATTEMPTS, a 409 with nothing stored."""
    for attempt in range(MAX_ATTEMPTS):
        try:
            return await run()
        except DuplicateKey as exc:
            log.info(event, attempt=attempt + 1, reason=str(exc))
            if attempt == MAX_ATTEMPTS - 1:
                raise Conflict.single(
                    IssueCode.CONCURRENT_CHANGE,
                    "the patient's referrals kept changing concurrently; nothing was stored, retry it",
                ) from exc
    raise AssertionError("unreachable")  # pragma: no cover


async def _record(
    database: Database,
    routing: RoutingTable,
    consent: Resource,
    patient: Resource | None,
    viewer: Viewer,
    sender: str | None,
    paths: tuple[str, str],
    condition: SearchQuery | None,
    own_base: str | None,
) -> ConsentOutcome:
    now = utc_now()
    if patient is None and (inner := contained_patient(consent)) is not None:
        patient, paths = inner, (paths[0], f"{paths[0]}.contained")
    identified = _identified_patient(consent, patient)
    consent_path, patient_path = paths
    pending_key: str | None = None  # the conditional create's key, when this post takes it
    async with UnitOfWork(database) as uow:
        if condition is not None:
            # The key first, then the search: a key committed before this look-up came with its Consent, which
            # the search (a later statement, a later snapshot) then sees. Not there: this post takes it, and of
            # identical posts racing, the others fail on it and are run again. There, and its Consent no longer
            # matches for this caller (or never did: the search need not match what was posted), it stops nothing.
            key = _condition_key(viewer, condition)
            pending_key = key if await uow.idempotency.find([key], sender) is None else None
            # Only among what the caller may see, as its searches (a Consent posted by another party is never
            # matched, nor one whose Patient link the caller may not read): a match reveals nothing new.
            matches = await uow.resources.find(condition, limit=2, visible=searchable(viewer, condition))
            if len(matches) > 1:
                raise PreconditionFailed.single(
                    IssueCode.CONDITIONAL_MULTIPLE_MATCHES,
                    "If-None-Exist matches several Consents; it must match at most one",
                    "http.If-None-Exist",
                )
            if matches:
                return ConsentOutcome(matches[0], None, created=False)
        # Every other reference by id (performer, organization, provision.actor, sourceReference, provision.data…)
        # under the referral's rule: one the caller may not see is the 422 of one that does not exist. The
        # patient has its own words (by INS instead); a message's Patient replaces the Consent's reference.
        named = [
            (target, path)
            for target, path in server_references(consent, consent_path, own_base)
            if path != f"{consent_path}.patient"
        ]
        if patient is not None:
            named += server_references(patient, patient_path, own_base)
        unresolved = await unresolved_references(uow, viewer, named, platform_keys(routing))
        if unresolved:
            raise BusinessRuleViolation(*unresolved)
        # A deny names its patient as an opposition must whatever its status: an update may put it in force.
        patient_reference = await _patient_reference(
            uow, consent, patient, viewer, paths, provision_type(consent) == "deny", own_base
        )
        if patient_reference:
            # The stored Patient by reference, and the patient as the caller identified it (the INS, a message's
            # Patient's included): what names the patient to a reader who may not see that Patient
            # (``gateway.store.visibility``: its poster reads it as it posted it).
            consent["patient"] = {
                **(consent.get("patient") or {}),
                **(identified or {}),
                "reference": patient_reference,
            }
        stored = uow.resources.add(consent)
        if pending_key is not None:
            uow.idempotency.add([pending_key], sender, stored.reference, {"consent": stored.id})
        if sender is not None:
            # Its poster reads it back (the Location it was given): a Consent posted on its own is a record of
            # its own for visibility — keyed by its reference, which no ServiceRequest id can equal — with the
            # posting client as its sender.
            uow.visibility.add_members(stored.reference, [("Consent", stored.id)])
            uow.visibility.add_sender(stored.reference, sender)
        revoked: list[str] = []
        notes: list[str] = []
        if opposition_in_force(consent, now) and patient_reference:
            revoked = await revoke_open_referrals(uow, routing, patient_reference, now)
            informant = await _informant(uow, consent, patient_reference, identified, viewer)
            recorded = uow.resources.add(
                provenance(
                    [stored.reference],
                    now,
                    # Who informed the patient says so; the client that posted it caused the revocations.
                    [
                        GATEWAY,
                        *([Agent("informant", informant)] if informant is not None else []),
                        *([client_agent(sender)] if sender is not None else []),
                    ],
                    "patient opposition recorded: open referrals revoked, their open Tasks cancelled",
                    reason=OPPOSITION_REASON,
                )
            )
            if sender is not None:  # read, like the Consent, by its poster
                uow.visibility.add_members(stored.reference, [("Provenance", recorded.id)])
        elif is_permit(consent):
            found = patient_reference.split("/", 1)[1] if patient_reference else None
            if await _identifies(uow, viewer, found, patient):
                # It may lift an opposition: it names its patient as strongly as an opposition must. Only that
                # patient's: by the identifiers on record of the Patient it names (``_identified`` checked those),
                # never by every identifier posted — another patient's INS beside its own would lift theirs.
                keys = await _keys_on_record(uow, found) if found is not None else _identifier_keys(identified)
                await _lift(uow, stored, patient_reference, keys, now, sender)
                # The same words whether it lifted another party's opposition, one of the poster's, or none.
                notes.append(LIFT_NOTE)
            else:
                notes.append(UNIDENTIFIED_NOTE)
        await uow.commit()
    return ConsentOutcome(stored, patient_reference, revoked, notes=notes)


#: The answer to a standalone permit: what it lifts, and what it does not revive.
LIFT_NOTE = (
    "Permit recorded: it lifts this patient's oppositions dated before it (L1110-12), whoever recorded them. "
    "Referrals already revoked for an opposition are not revived: send a new referral."
)
#: The answer to a standalone permit that names its patient by INS alone: it lifts nothing.
UNIDENTIFIED_NOTE = (
    "Permit recorded; it lifts no opposition: a permit lifts this patient's oppositions only when it names the "
    "patient as an opposition must — a Patient of your referrals, or the INS with the five identity traits (a "
    "contained Patient)."
)
#: The answer to an update that ended an opposition.
ENDED_NOTE = (
    "Opposition ended: it no longer revokes this patient's new referrals. Referrals already revoked for it are not "
    "revived: send a new referral."
)


async def _keys_on_record(uow: UnitOfWork, patient_id: str) -> list[tuple[str, str]]:
    """The national identifiers (system, value) of the stored Patient ``patient_id``."""
    stored = await uow.resources.get("Patient", patient_id)
    return identity_keys(stored.content) if stored is not None else []


def _identifier_keys(identified: Resource | None) -> list[tuple[str, str]]:
    identifier = (identified or {}).get("identifier") or {}
    if isinstance(identifier.get("system"), str) and isinstance(identifier.get("value"), str):
        return [(identifier["system"], identifier["value"])]
    return []


async def _lift(
    uow: UnitOfWork,
    permit: StoredResource,
    patient_reference: str | None,
    keys: list[tuple[str, str]],
    now: datetime,
    sender: str | None,
) -> list[str]:
    """Record ``inactive`` each opposition in force that ``permit`` lifts (``lifts``), with a Provenance read by the
    opposition's poster, as the opposition is (not by the permit's: it may be another party's). It names the
    permit and its poster only to the party that posted both (or with authentication off): another party's permit
    is not the opposition's poster's to read, as an opposition is not the parties' of the referrals it revokes —
    operators find it in the permit's AuditEvent, which lists the opposition's new version. Returns those."""
    lifted = []
    for opposition in await oppositions_on_record(uow, patient_reference, keys, now):
        if not lifts(permit.content, opposition.content):
            continue
        named = (opposition.content.get("patient") or {}).get("reference")
        if patient_reference is not None and isinstance(named, str) and named != patient_reference:
            continue  # about another Patient on record (found by an identifier it was also posted with)
        ended = _changed(
            await uow.resources.update(opposition, {**opposition.content, "status": "inactive"}), opposition
        )
        version = f"{ended.reference}/_history/{ended.version_id}"
        lifted.append(version)
        own = sender is None or await uow.visibility.posted_by(sender, "Consent", opposition.id)
        note = uow.resources.add(
            provenance(
                [version],
                now,
                [GATEWAY, *([client_agent(sender)] if sender is not None and own else [])],
                "opposition lifted by a later permit of the patient: recorded inactive",
                reason=OPPOSITION_REASON,
                entities=[permit.reference] if own else [],
            )
        )
        for record in await uow.visibility.records_of("Consent", opposition.id):
            uow.visibility.add_members(record, [("Provenance", note.id)])
    return lifted


async def revoke_open_referrals(
    uow: UnitOfWork, routing: RoutingTable, patient_reference: str, now: datetime
) -> list[str]:
    """An opposition in force: the patient's open referrals revoked, their open Tasks cancelled, whoever knows of
    them told (their sender if it asked, the platform they went to). Returns the revoked ServiceRequests."""
    revoked: list[str] = []
    _, requests = await uow.resources.search(
        parse_search(
            "ServiceRequest",
            [("patient", patient_reference), ("status", ",".join(OPEN_REQUEST_STATUSES))],
            default_count=1000,
            max_count=1000,
        )
    )
    for request in requests:
        moved = dict(request.content)
        moved["status"] = "revoked"
        moved["extension"] = [
            *moved.get("extension", []),
            revocation_reason(RevocationReason.PATIENT_OPPOSITION),
        ]
        updated = _changed(await uow.resources.update(request, moved), request)
        revoked.append(request.reference)
        # Tell whoever knows of this referral: its sender (if it asked) and the platform it went to.
        await schedule_update(uow, request.reference, now, "revoked")
        # A referral held for the GP reached its platform only if escalated to it (a contact-gp message).
        reached = request.content.get("status") == "active" or await escalated_to_platform(uow, request.reference)
        if reached and (platform := await platform_of(uow, routing, request.content)):
            schedule_platform_update(uow, platform, request.reference, now, "revoked")
        targets = [f"{request.reference}/_history/{updated.version_id}"]
        targets += await _cancel_open_tasks(uow, request.reference, now)
        # Its parties learn why — the revocation reason, the Tasks' statusReason, this reason — and nothing
        # of the opposition itself: the Consent (who informed the patient, who posted it, …) is its poster's,
        # so it is neither linked from the referral nor named here (a reference they could not resolve).
        uow.resources.add(
            provenance(
                targets,
                now,
                [GATEWAY],
                "referral revoked for a patient opposition, its open Tasks cancelled",
                reason=OPPOSITION_REASON,
            )
        )
    return revoked


async def _informant(
    uow: UnitOfWork, consent: Resource, patient_reference: str, identified: Resource | None, viewer: Viewer
) -> str | Identifier | None:
    """Who informed the patient, as the opposition's Provenance (read by its poster) names it: the Consent's
    performer as posted, else the patient — by the stored Patient's id only when the poster may see it, else as the
    poster identified it (like the answer: ``gateway.intake.handlers.answered_consent``)."""
    performer = next(
        (p["reference"] for p in consent.get("performer") or [] if isinstance(p.get("reference"), str)), None
    )
    if performer is not None:
        return str(performer)
    if await uow.visibility.can_see(viewer, "Patient", patient_reference.split("/", 1)[1]):
        return patient_reference
    identifier = (identified or {}).get("identifier") or {}
    if identifier.get("system") and identifier.get("value"):
        return Identifier(str(identifier["system"]), str(identifier["value"]))
    return None


def _condition_key(viewer: Viewer, condition: SearchQuery) -> str:
    """The unique key a conditional create of a Consent takes: the caller's view (what its search can match) and
    the search's criteria, in a canonical order (hashed: a search may be longer than a key)."""
    scope = "everything" if viewer.everything else f"sender:{viewer.sender}|platform:{viewer.platform_organization}"
    criteria = "&".join(f"{name}={value}" for name, value in sorted(condition.echo))
    digest = hashlib.sha256(f"{scope}\n{criteria}".encode()).hexdigest()
    return f"conditional-create:{condition.resource_type}:{digest}"


def _identified_patient(consent: Resource, patient: Resource | None) -> Resource | None:
    """The patient as the caller identified it, by identifier only: ``Consent.patient.identifier`` as posted, or
    the national identifier of the Patient an opposition message carries."""
    posted = consent.get("patient")
    if isinstance(posted, dict) and isinstance(posted.get("identifier"), dict):
        return {key: value for key, value in posted.items() if key != "reference"}
    keys = identity_keys(patient) if patient is not None else []
    if keys:
        system, value = keys[0]
        return {"identifier": {"system": system, "value": value}}
    return None


def _changed(updated: StoredResource | None, current: StoredResource) -> StoredResource:
    """The new version, or ``DuplicateKey`` when someone changed ``current`` since it was read: the whole unit
    of work is then rolled back and run again (skipping it would leave that referral or Task open)."""
    if updated is None:
        raise DuplicateKey(f"{current.reference} changed during the transaction")
    return updated


async def _cancel_open_tasks(uow: UnitOfWork, service_request: str, now: datetime) -> list[str]:
    _, tasks = await uow.resources.search(
        parse_search("Task", [("focus", service_request)], default_count=1000, max_count=1000)
    )
    cancelled = []
    for task in tasks:
        if task.content.get("status") in FINAL:
            continue
        content = dict(task.content)
        content["status"] = "cancelled"
        content["statusReason"] = {"text": "The patient objects to the referral (L1110-12)."}
        content["businessStatus"] = business_status(BusinessStatus.CANCELLED)
        content["lastModified"] = fhir_instant(now)
        updated = _changed(await uow.resources.update(task, content), task)
        cancelled.append(f"{task.reference}/_history/{updated.version_id}")
    await uow.deadlines.remove(task.id for task in tasks)  # a cancelled GP validation is never escalated
    return cancelled


async def update_consent(
    database: Database,
    routing: RoutingTable,
    consent_id: str,
    proposed: Resource,
    expected_version: int,
    role: Role,
    viewer: Viewer = EVERYTHING,
    sender: str | None = None,
    own_base: str | None = None,
) -> ConsentOutcome:
    """``PUT /fhir/Consent/{id}`` (If-Match): its poster, or an operator (``CONSENT_UPDATES``), ends an opposition
    (``inactive``) or corrects a Consent — its patient stays the one on record. An opposition that ends tells the
    answer that nothing revoked is revived; one that comes into force (set active again, a period corrected)
    revokes the patient's open referrals, as a new one does. Each update leaves a Provenance, read by the
    Consent's poster. ``role``, ``viewer``, ``sender``: the caller (``sender`` None when authentication is off).
    Run again as a whole when what it changes changed concurrently, as ``record_consent`` is."""
    if proposed.get("resourceType") != "Consent" or proposed.get("id") != consent_id:
        found = f"id {proposed['id']!r}" if "id" in proposed else "no id"
        raise InvalidRequest.single(
            IssueCode.ENTRY_REQUEST_INVALID,
            f"the body must be Consent/{consent_id}: resourceType Consent and id {consent_id!r}, the id in the URL "
            f"({found})",
            "Consent.id",
        )
    parse_model(proposed)
    return await _run_again_on_conflict(
        "consent_update_retried",
        lambda: _update(
            database, routing, consent_id, copy.deepcopy(proposed), expected_version, role, viewer, sender, own_base
        ),
    )


async def _update(
    database: Database,
    routing: RoutingTable,
    consent_id: str,
    proposed: Resource,
    expected_version: int,
    role: Role,
    viewer: Viewer,
    sender: str | None,
    own_base: str | None,
) -> ConsentOutcome:
    now = utc_now()
    async with UnitOfWork(database) as uow:
        current = await uow.resources.get("Consent", consent_id)
        if current is None or not await uow.visibility.can_see(viewer, "Consent", consent_id):
            # What the caller may not see, it may not update either: the same 404 as for nothing there.
            raise ResourceNotFound.single(IssueCode.RESOURCE_NOT_FOUND, f"Consent/{consent_id} is not known")
        posted = sender is not None and await uow.visibility.posted_by(sender, "Consent", consent_id)
        check_consent_update_right(role, posted)
        if current.version_id != expected_version:
            raise PreconditionFailed.single(
                IssueCode.VERSION_MISMATCH,
                f'If-Match W/"{expected_version}" is not the current version of {current.reference}: {current.etag}',
                "Consent.meta.versionId",
            )
        on_record = current.content.get("patient") or {}
        _check_same_patient(proposed.get("patient"), on_record, own_base)
        already = {target for target, _ in server_references(current.content, "Consent", own_base)}
        added = [
            (target, path)
            for target, path in server_references(proposed, "Consent", own_base)
            if target not in already and path != "Consent.patient"
        ]
        unresolved = await unresolved_references(uow, viewer, added, platform_keys(routing))
        if unresolved:
            raise BusinessRuleViolation(*unresolved)
        content = {key: value for key, value in proposed.items() if key != "meta"}
        profiles = (current.content.get("meta") or {}).get("profile")
        if profiles:
            content["meta"] = {"profile": profiles}
        if on_record:
            content["patient"] = on_record
        parse_model(content)
        if provision_type(content) == "deny" and provision_type(current.content) != "deny":
            # Made a deny, it may revoke every party's referrals for its patient: the caller names that patient as
            # an opposition must (a Patient it may see; an update carries no traits) — a permit posted by INS
            # alone never becomes one.
            target = on_record.get("reference")
            found = target.split("/", 1)[1] if isinstance(target, str) and target.startswith("Patient/") else None
            if not await _identifies(uow, viewer, found, None):
                raise BusinessRuleViolation.single(
                    IssueCode.PATIENT_IDENTITY_REQUIRED,
                    "a Consent becomes an opposition only for a patient of one of your referrals (an opposition "
                    "revokes every party's referrals): post the opposition as a new Consent, with the INS and the "
                    "five identity traits — nothing was changed",
                    "Consent.provision.type",
                )
        was, is_now = opposition_in_force(current.content, now), opposition_in_force(content, now)
        updated = _changed(await uow.resources.update(current, content), current)
        patient_reference = on_record.get("reference") if isinstance(on_record.get("reference"), str) else None
        revoked: list[str] = []
        notes: list[str] = []
        if is_now and not was:
            activity = "opposition in force again: open referrals revoked, their open Tasks cancelled"
            if patient_reference is not None:
                revoked = await revoke_open_referrals(uow, routing, patient_reference, now)
        elif was and not is_now:
            activity = "opposition ended by its poster or an operator"
            notes.append(ENDED_NOTE)
        else:
            activity = "Consent corrected by its poster or an operator"
        note = uow.resources.add(
            provenance(
                [f"{updated.reference}/_history/{updated.version_id}"],
                now,
                [GATEWAY, *([client_agent(sender)] if sender is not None else [])],
                activity,
                reason=OPPOSITION_REASON if (was or is_now) else None,
            )
        )
        for record in await uow.visibility.records_of("Consent", consent_id):
            uow.visibility.add_members(record, [("Provenance", note.id)])
        await uow.commit()
    return ConsentOutcome(updated, patient_reference, revoked, notes=notes)


def _check_same_patient(posted: object, on_record: Resource, own_base: str | None) -> None:
    """An update keeps the Consent's patient: sent as read (by reference, or by the identifier its poster gave), or
    left out. Another patient is a 422 — what a patient said of themselves is never moved to someone else."""
    if posted is None:
        return
    reference = posted.get("reference") if isinstance(posted, dict) else None
    identifier = posted.get("identifier") if isinstance(posted, dict) else None
    same_reference = reference is None or local_reference(str(reference), own_base) == on_record.get("reference")
    same_identifier = identifier is None or identifier == on_record.get("identifier")
    if isinstance(posted, dict) and same_reference and same_identifier and (reference or identifier):
        return
    raise BusinessRuleViolation.single(
        IssueCode.IDENTIFIER_CHANGE_FORBIDDEN,
        "an update keeps the Consent's patient (send it as read); what another patient says is a Consent of its own",
        "Consent.patient",
    )
