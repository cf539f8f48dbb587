"""From a referral's resources to the facts the workflow decides on: who the GP is, who triggered the request,
what the patient said. References here are the stored ones (``Type/id``), already rewritten."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import StrEnum
from typing import Any

from gateway.fhir.outcome import CANONICAL_BASE
from gateway.fhir.types import Resource
from gateway.referral.careteam import CARETEAM_ROLE_SYSTEM
from gateway.referral.consents import in_period, provision_type
from gateway.referral.identity import ADELI, IDNPS, RPPS

GP_LINK_EXTENSION = f"{CANONICAL_BASE}/StructureDefinition/dac-gp-link"
GP_VALIDATION_EXTENSION = f"{CANONICAL_BASE}/StructureDefinition/dac-gp-validation"
#: The ANS code for the médecin traitant role (TRE_R259 / v3 RoleCode PCP), accepted beside ours.
GP_ROLE_CODES = {(CARETEAM_ROLE_SYSTEM, "gp"), ("http://terminology.hl7.org/CodeSystem/v3-RoleCode", "PCP")}

Loader = Callable[[str], Awaitable[Resource | None]]


class Trigger(StrEnum):
    GP = "gp"  # the requester is the patient's GP
    LINKED_PHYSICIAN = "linked-physician"  # a physician declaring a link to the GP
    GP_VALIDATED = "gp-validated"  # someone else, who declares the GP already validated (dac-gp-validation)
    OTHER = "other"  # any other professional
    NO_GP = "no-gp"  # the patient has no known GP


class ConsentState(StrEnum):
    PERMIT = "permit"  # the patient was informed and does not object
    NONE = "none"  # not said: the platform must inform the patient
    DENY = "deny"  # the patient objects (L1110-12): nothing is processed


def extension(resource: Resource, url: str) -> dict[str, Any] | None:
    for item in resource.get("extension") or []:
        if isinstance(item, dict) and item.get("url") == url:
            return item
    return None


def gp_reference(patient: Resource, care_teams: list[Resource]) -> str | None:
    """The GP: Patient.generalPractitioner, else a CareTeam member in the GP role."""
    for item in patient.get("generalPractitioner") or []:
        if isinstance(item, dict) and isinstance(item.get("reference"), str):
            return str(item["reference"])
    for care_team in care_teams:
        for participant in care_team.get("participant") or []:
            codes = {
                (coding.get("system"), coding.get("code"))
                for role in participant.get("role") or []
                for coding in role.get("coding") or []
            }
            member = (participant.get("member") or {}).get("reference")
            if codes & GP_ROLE_CODES and isinstance(member, str):
                return member
    return None


def professional_keys(practitioner: Resource) -> set[str]:
    """National professional identifiers, normalised (IDNPS "8"+RPPS is the RPPS, "0"+ADELI the ADELI)."""
    keys = set()
    for identifier in practitioner.get("identifier") or []:
        system, value = identifier.get("system"), str(identifier.get("value") or "")
        if not value:
            continue
        if system == RPPS:
            keys.add(f"rpps:{value}")
        elif system == ADELI:
            keys.add(f"adeli:{value}")
        elif system == IDNPS and value[:1] == "8":
            keys.add(f"rpps:{value[1:]}")
        elif system == IDNPS and value[:1] == "0":
            keys.add(f"adeli:{value[1:]}")
    return keys


async def _person_keys(reference: str, load: Loader) -> set[str]:
    """The national identifiers of the practitioner behind a Practitioner or PractitionerRole reference."""
    if reference.startswith("PractitionerRole/"):
        role = await load(reference)
        practitioner = ((role or {}).get("practitioner") or {}).get("reference")
        if not isinstance(practitioner, str):
            return set()
        reference = practitioner
    if reference.startswith("Practitioner/"):
        practitioner_resource = await load(reference)
        return professional_keys(practitioner_resource or {})
    return set()


async def requester_is_gp(requester: str | None, gp: str | None, load: Loader) -> bool:
    if not requester or not gp:
        return False
    if requester == gp:
        return True
    requester_keys = await _person_keys(requester, load)
    return bool(requester_keys & await _person_keys(gp, load))


def declared_validation(service_request: Resource) -> tuple[datetime | None, str | None] | None:
    """The dac-gp-validation extension: (when, by whom) the requester says the GP validated; None if absent."""
    found = extension(service_request, GP_VALIDATION_EXTENSION)
    if found is None:
        return None
    when: datetime | None = None
    who: str | None = None
    for part in found.get("extension") or []:
        if part.get("url") == "date" and isinstance(part.get("valueDateTime"), str):
            try:
                when = datetime.fromisoformat(part["valueDateTime"])
            except ValueError:
                when = None
        elif part.get("url") == "validator":
            who = (part.get("valueReference") or {}).get("reference")
    return when, who


def trigger_of(*, gp: str | None, requester_is_gp: bool, gp_link: str | None, validation_declared: bool) -> Trigger:
    """Who triggered the request (DESIGN §3.2). National identifiers win over what the requester declares."""
    if requester_is_gp or (gp is None and gp_link == "self"):
        return Trigger.GP
    if gp is None:
        return Trigger.NO_GP
    if validation_declared:
        return Trigger.GP_VALIDATED
    if gp_link == "linked-physician":
        return Trigger.LINKED_PHYSICIAN
    return Trigger.OTHER


def consent_state(consents: list[Resource], at: datetime | None = None) -> ConsentState:
    """What the referral's own Consents say; a deny whose ``provision.period`` does not hold at ``at`` says
    nothing (``gateway.referral.consents``)."""
    types = {
        provision_type(consent)
        for consent in consents
        if consent.get("status") != "inactive" and (at is None or in_period(consent, at))
    }
    if "deny" in types:
        return ConsentState.DENY
    if "permit" in types:
        return ConsentState.PERMIT
    return ConsentState.NONE
