"""Recording what a patient said about their information (L1110-12): a Consent posted on its own, or carried by
an ``opposition`` message. An opposition revokes the patient's open referrals and cancels their open Tasks, in
the same transaction; it is kept, so that later referrals for that patient — looked up by national identifier,
whoever sends them — are revoked at intake."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from gateway.errors import BusinessRuleViolation, Conflict, InvalidResource, IssueCode, PreconditionFailed
from gateway.fhir.models import parse_model
from gateway.fhir.primitives import fhir_instant, utc_now
from gateway.fhir.references import local_reference
from gateway.fhir.search import SearchQuery, parse_search, split_reference
from gateway.fhir.types import Resource
from gateway.referral.facts import is_opposition
from gateway.referral.identity import identity_keys
from gateway.routing.config import RoutingTable
from gateway.routing.schedule import platform_of, schedule_platform_update, schedule_update
from gateway.store.database import Database
from gateway.store.repository import StoredResource
from gateway.store.unit_of_work import DuplicateKey, UnitOfWork
from gateway.store.visibility import EVERYTHING, Viewer, searchable
from gateway.validation.rules import identity_traits, uses_ins
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
    if viewer.everything or (found is not None and await uow.visibility.can_see(viewer, "Patient", found)):
        return
    traits = identity_traits(patient) if patient is not None and uses_ins(patient) else None
    if traits is not None:
        stored = await uow.resources.get("Patient", found) if found is not None else None
        if found is None or (stored is not None and identity_traits(stored.content) == traits):
            return  # a patient not known here: recorded by INS, for the later referrals it stops
    raise BusinessRuleViolation.single(
        IssueCode.PATIENT_IDENTITY_REQUIRED,
        "an opposition names its patient as a referral does: a Patient of one of your referrals, or the INS with "
        "the five identity traits (birth family name, birth given names, gender, birth date, birth place INSEE "
        "code) as on record — a Patient (a message's entry, or contained in the Consent); nothing was revoked",
        expression,
    )


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
    for attempt in range(MAX_ATTEMPTS):
        try:
            return await _record(
                database,
                routing,
                copy.deepcopy(consent),
                copy.deepcopy(patient),
                viewer,
                sender,
                paths,
                condition,
                own_base,
            )
        except DuplicateKey as exc:
            log.info("consent_retried", attempt=attempt + 1, reason=str(exc))
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
        patient_reference = await _patient_reference(
            uow, consent, patient, viewer, paths, is_opposition(consent), own_base
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
        if is_opposition(consent) and patient_reference:
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
                if request.content.get("status") == "active" and (
                    platform := await platform_of(uow, routing, request.content)
                ):
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
        await uow.commit()
    return ConsentOutcome(stored, patient_reference, revoked)


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
    return cancelled
