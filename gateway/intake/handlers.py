"""Entry points of intake: a posted Bundle (or Consent) in, the answer out."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from gateway.auth.clients import Role
from gateway.errors import BusinessRuleViolation, InvalidResource, IssueCode, StoreUnavailable
from gateway.fhir.search import parse_condition
from gateway.fhir.types import Resource
from gateway.intake.reading import read_referral
from gateway.intake.responses import intake_note, message_response, transaction_response
from gateway.intake.service import take_in
from gateway.referral.bundle import MESSAGE_EVENT_SYSTEM, Referral, foreign_identifier_issues
from gateway.routing.config import RoutingTable
from gateway.store.database import Database
from gateway.store.repository import StoredResource
from gateway.store.unit_of_work import UnitOfWork
from gateway.store.visibility import EVERYTHING, Viewer
from gateway.validation.definitions import base_url
from gateway.validation.engine import engine
from gateway.validation.rules import resource_rules
from gateway.validation.validate import validate
from gateway.workflow.opposition import ConsentOutcome, record_consent, update_consent
from gateway.workflow.updates import follow_update

OPPOSITION = "opposition"
REFERRAL_UPDATE = "referral-update"


async def process_transaction(
    database: Database,
    routing: RoutingTable,
    bundle: Resource,
    base_url: str,
    sender: str | None = None,
    viewer: Viewer = EVERYTHING,
    foreign_systems: frozenset[str] = frozenset(),
) -> Resource:
    """``foreign_systems``: the identifier systems other clients registered as theirs (``_owned``)."""
    referral = _owned(bundle, read_referral(bundle, "transaction"), foreign_systems)
    outcome = await take_in(database, referral, routing, sender, viewer, own_base=base_url)
    return transaction_response(outcome, base_url)


def _owned(bundle: Resource, referral: Referral, foreign_systems: frozenset[str]) -> Referral:
    """The referral, unless it identifies itself in another client's identifier system: a 422 at the system. Its
    keys are its sender's (``take_in``); a system registered for a client is that client's alone besides."""
    issues = foreign_identifier_issues(bundle, referral, foreign_systems)
    if issues:
        raise BusinessRuleViolation(*issues)
    return referral


def message_event(bundle: Resource) -> str | None:
    """The event code of a message Bundle (``dac-message-event``), or None."""
    return _event(bundle) if bundle.get("type") == "message" else None


def _event(bundle: Resource) -> str | None:
    # Read before any validation, so nothing about the shape is assumed: "entry" may be an object, a number…
    entries = bundle.get("entry")
    first = (
        entries[0].get("resource") if isinstance(entries, list) and entries and isinstance(entries[0], dict) else None
    )
    coding = (first or {}).get("eventCoding") if isinstance(first, dict) else None
    if isinstance(coding, dict) and coding.get("system") == MESSAGE_EVENT_SYSTEM:
        return str(coding.get("code"))
    return None


async def process_message(
    database: Database,
    routing: RoutingTable,
    bundle: Resource,
    base_url: str,
    hop_limit: int,
    sender: str | None = None,
    viewer: Viewer = EVERYTHING,
    platform: str | None = None,
    foreign_systems: frozenset[str] = frozenset(),
    callbacks: Sequence[str] | None = None,
) -> Resource:
    """``$process-message``: a ``referral-request``, an ``opposition`` (a Consent deny and its Patient), or a
    ``referral-update`` (from a peer gateway). ``sender``: the calling client (None with authentication off),
    ``viewer`` what it may see, ``platform`` the platform key of a ``platform`` client, ``callbacks`` where it
    may be called back (None: anywhere, authentication off)."""
    event = _event(bundle) if bundle.get("type") == "message" else None
    if event in (OPPOSITION, REFERRAL_UPDATE):
        # The structure and profiles first, as for a referral: the handlers read R4 shapes.
        errors = [issue for issue in engine().validate(bundle) if issue.severity in ("error", "fatal")]
        if errors:
            raise InvalidResource(*errors)
        if event == OPPOSITION:
            return await _process_opposition(database, routing, bundle, base_url, viewer, sender)
        return await _process_update(database, routing, bundle, base_url, platform, authenticated=sender is not None)
    referral = _owned(bundle, read_referral(bundle, "message"), foreign_systems)
    if referral.hop_count >= hop_limit:
        # Gateways forwarding to each other in a loop: the count ends it.
        raise BusinessRuleViolation.single(
            IssueCode.HOP_LIMIT_REACHED,
            f"this message was already forwarded {referral.hop_count} times (limit {hop_limit}): refused, so that "
            "a routing loop between gateways ends",
            "Bundle.entry[0].resource.extension",
        )
    outcome = await take_in(database, referral, routing, sender, viewer, callbacks, own_base=base_url)
    async with UnitOfWork(database, write=False) as uow:
        service_request = await uow.resources.get("ServiceRequest", outcome.service_request_id)
    if service_request is None:  # pragma: no cover - stored in the same transaction as the outcome
        raise StoreUnavailable.single(IssueCode.STORE_UNAVAILABLE, "the stored referral could not be read back")
    assert referral.message_header is not None
    return message_response(referral.message_header, service_request, base_url, intake_note(outcome))


def consent_note(revoked: list[str]) -> Resource:
    """The answer's note: the referrals an opposition revoked among those the caller may see (``revoked``). Of
    another party's it says nothing — neither names nor how many — nor whether the patient was known here: the
    same note whether the opposition revoked only others' referrals, none, or concerned a patient nobody
    referred."""
    if revoked:
        text = f"Opposition recorded; revoked: {', '.join(revoked)}."
    else:
        text = "Opposition recorded; it holds for this patient's later referrals."
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "information", "code": "informational", "diagnostics": text}],
    }


async def _visible(database: Database, viewer: Viewer, references: list[str]) -> list[str]:
    """Those of ``references`` (``Type/id``) the viewer may see."""
    if viewer.everything or not references:
        return references
    seen = []
    async with UnitOfWork(database, write=False) as uow:
        for reference in references:
            resource_type, resource_id = reference.split("/", 1)
            if await uow.visibility.can_see(viewer, resource_type, resource_id):
                seen.append(reference)
    return seen


async def _process_opposition(
    database: Database, routing: RoutingTable, bundle: Resource, base_url: str, viewer: Viewer, sender: str | None
) -> Resource:
    resources = [entry.get("resource") or {} for entry in bundle.get("entry") or []]
    consents = [(i, r) for i, r in enumerate(resources) if r.get("resourceType") == "Consent"]
    patients = [(i, r) for i, r in enumerate(resources) if r.get("resourceType") == "Patient"]
    if len(consents) != 1 or len(patients) > 1:
        raise BusinessRuleViolation.single(
            IssueCode.RESOURCE_TYPE_NOT_ALLOWED,
            "an opposition message carries one Consent (provision.type deny) and at most one Patient",
            "Bundle.entry",
        )
    index, consent = consents[0]
    patient_issues = [
        issue
        for position, resource in enumerate(resources)
        if resource.get("resourceType") == "Patient"
        for issue in resource_rules(resource, f"Bundle.entry[{position}].resource")
    ]
    if patient_issues:
        raise BusinessRuleViolation(*patient_issues)
    if (consent.get("provision") or {}).get("type") != "deny":
        raise BusinessRuleViolation.single(
            IssueCode.MESSAGE_EVENT_UNSUPPORTED,
            "an opposition message's Consent has provision.type deny",
            f"Bundle.entry[{index}].resource.provision.type",
        )
    patient_index, patient = patients[0] if patients else (None, None)
    paths = (f"Bundle.entry[{index}].resource", f"Bundle.entry[{patient_index}].resource")
    outcome = await record_consent(database, routing, consent, patient, viewer, sender, paths, own_base=base_url)
    note = consent_note(await _visible(database, viewer, outcome.revoked))
    return message_response(resources[0], await answered_consent(database, viewer, outcome), base_url, note)


async def _process_update(
    database: Database,
    routing: RoutingTable,
    bundle: Resource,
    base_url: str,
    platform: str | None,
    *,
    authenticated: bool,
) -> Resource:
    """A ``referral-update`` from where we sent a referral (a peer gateway, which runs its workflow): our copy
    of the ServiceRequest follows the status it reports, when that status ends or suspends the request."""
    resources = [entry.get("resource") or {} for entry in bundle.get("entry") or []]
    reported = next((r for r in resources if r.get("resourceType") == "ServiceRequest"), None)
    if reported is None:
        raise BusinessRuleViolation.single(
            IssueCode.REFERRAL_SERVICEREQUEST_MISSING, "a referral-update carries its ServiceRequest", "Bundle.entry"
        )
    outcome = await follow_update(database, routing, reported, platform, authenticated=authenticated)
    return message_response(resources[0], outcome, base_url)


async def process_consent(
    database: Database,
    routing: RoutingTable,
    consent: Resource,
    viewer: Viewer = EVERYTHING,
    sender: str | None = None,
    if_none_exist: str | None = None,
    condition_source: tuple[str, str] = ("http.If-None-Exist", "If-None-Exist"),
    own_base: str | None = None,
) -> ConsentOutcome:
    """``POST /fhir/Consent``: the outcome, its Consent as the caller may read it (``answered_consent``) and
    ``created`` False when ``if_none_exist`` (the ``If-None-Exist`` header: a conditional create, R4
    http.html#ccreate) matched one the caller may see, which is then the answer, nothing written; ``sender`` the
    posting client (None when authentication is off); ``condition_source`` where the condition came from (its
    FHIRPath-like place and label, for the issues of a bad one); ``own_base`` this gateway's FHIR base (a
    reference on it is its relative form)."""
    if consent.get("resourceType") != "Consent":
        raise BusinessRuleViolation.single(
            IssueCode.RESOURCE_TYPE_NOT_ALLOWED, "POST /fhir/Consent takes a Consent", "resourceType"
        )
    # R4's rules, then the identifier rules, as $validate checks them: a required binding broken (a
    # provision.type "Deny" is no opposition, and must not be stored as something else) or an INS with a wrong key
    # (it names no patient) is a 422, nothing stored. Against R4's Consent and every profile it claims in
    # meta.profile (the engine checks those too), not dac-consent unless claimed: an opposition that does not claim
    # it, lacking what our profile asks besides (dateTime), is still recorded; one that claims it must conform, as
    # it says it does.
    errors = [issue for issue in validate(consent, base_url("Consent")) if issue.severity in ("error", "fatal")]
    if errors:
        raise InvalidResource(*errors)
    # A contained Patient (how a standalone opposition gives the patient's identity traits) under the rules of a
    # referral's Patient: a valid INS, with its five traits.
    patient_issues = [
        issue
        for index, inner in enumerate(consent.get("contained") or [])
        if isinstance(inner, dict) and inner.get("resourceType") == "Patient"
        for issue in resource_rules(inner, f"Consent.contained[{index}]")
    ]
    if patient_issues:
        raise BusinessRuleViolation(*patient_issues)
    condition = None if if_none_exist is None else parse_condition("Consent", if_none_exist, *condition_source)
    outcome = await record_consent(
        database, routing, consent, viewer=viewer, sender=sender, condition=condition, own_base=own_base
    )
    return dataclasses.replace(outcome, consent=await answered_consent(database, viewer, outcome))


async def process_consent_update(
    database: Database,
    routing: RoutingTable,
    consent_id: str,
    consent: Resource,
    expected_version: int,
    role: Role,
    viewer: Viewer = EVERYTHING,
    sender: str | None = None,
    own_base: str | None = None,
) -> ConsentOutcome:
    """``PUT /fhir/Consent/{id}``: the Consent under R4's rules and those it claims, as a posted one
    (``process_consent``), then ``update_consent``; the outcome's Consent as the caller reads it."""
    errors = [issue for issue in validate(consent, base_url("Consent")) if issue.severity in ("error", "fatal")]
    if errors:
        raise InvalidResource(*errors)
    outcome = await update_consent(
        database, routing, consent_id, consent, expected_version, role, viewer, sender, own_base
    )
    return dataclasses.replace(outcome, consent=await answered_consent(database, viewer, outcome))


async def answered_consent(database: Database, viewer: Viewer, outcome: ConsentOutcome) -> StoredResource:
    """The stored Consent as its poster reads it (``VisibilityRepository.as_seen``): ``patient`` names the stored
    Patient only when the caller may see it; otherwise the patient as the caller identified it (its INS) — so the
    answer is the same whether or not that patient is known here, and carries no id of a resource the caller may
    not see."""
    async with UnitOfWork(database, write=False) as uow:
        return (await uow.visibility.as_seen(viewer, [outcome.consent]))[0]
