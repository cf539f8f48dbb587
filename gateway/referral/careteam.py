"""The CareTeam a referral needs when the sender sent none: the GP, the requester, the other professionals
and the caregivers named in the bundle (DESIGN §2, §7). Roles from CodeSystem ``dac-careteam-role``."""

from __future__ import annotations

from gateway.fhir.outcome import CANONICAL_BASE
from gateway.fhir.types import Resource

CARETEAM_ROLE_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/dac-careteam-role"
_ROLE_DISPLAY = {
    "gp": "Médecin traitant",
    "requester": "Demandeur",
    "professional": "Professionnel",
    "caregiver": "Aidant",
}


def _participant(reference: str, role: str) -> Resource:
    return {
        "role": [{"coding": [{"system": CARETEAM_ROLE_SYSTEM, "code": role, "display": _ROLE_DISPLAY[role]}]}],
        "member": {"reference": reference},
    }


def build_care_team(
    patient_reference: str,
    gp_reference: str | None,
    requester_reference: str | None,
    professional_references: list[str],
    caregiver_references: list[str],
) -> Resource:
    """References are already the stored ones (``Type/id``)."""
    participants: list[Resource] = []
    seen: set[str] = set()
    for reference, role in (
        (gp_reference, "gp"),
        (requester_reference, "requester"),
        *((reference, "professional") for reference in professional_references),
        *((reference, "caregiver") for reference in caregiver_references),
    ):
        if reference and reference not in seen:
            seen.add(reference)
            participants.append(_participant(reference, role))
    care_team: Resource = {
        "resourceType": "CareTeam",
        "status": "active",
        "name": "Équipe de soins autour du patient",
        "subject": {"reference": patient_reference},
    }
    if participants:
        care_team["participant"] = participants
    return care_team
