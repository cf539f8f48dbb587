"""The patient's oppositions on record, in force at an instant (``gateway.workflow.consents``): what a referral's
intake checks, and what a later ``permit`` lifts.

One indexed look-up, among the patient's denials only (``ResourceRepository.denials``: Consents whose provision
denies, indexed as such), by either way the patient is named — the stored Patient, and its identifier (an opposition
recorded by INS before the patient was known here): not among all its Consents, one per referral, which made each
referral of a followed patient slower than the one before (issue 21). A patient has a handful of denials, whatever
the size of the table and its history; the rule is applied to those.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from gateway.fhir.search import split_reference
from gateway.referral.consents import CONSENTS_OF_A_PATIENT, opposition_in_force
from gateway.store.repository import StoredResource
from gateway.store.unit_of_work import UnitOfWork


async def oppositions_on_record(
    uow: UnitOfWork, patient_reference: str | None, keys: Sequence[tuple[str, str]], at: datetime
) -> list[StoredResource]:
    """The oppositions (Consent deny) of this patient in force at ``at``: by stored id for a known patient, and by
    national identifier for one recorded before the patient was (an opposition sent on its own, by INS)."""
    target_type, patient_id = split_reference(patient_reference) if patient_reference else (None, "")
    known = patient_id if patient_id and target_type in (None, "Patient") else None
    consents = await uow.resources.denials(known, keys, CONSENTS_OF_A_PATIENT)
    found: dict[str, StoredResource] = {}
    for consent in consents:
        if opposition_in_force(consent.content, at):
            found.setdefault(consent.reference, consent)
    return list(found.values())
