"""The patient's oppositions on record, in force at an instant (``gateway.workflow.consents``): what a referral's
intake checks, and what a later ``permit`` lifts.

One indexed look-up per way the patient is named — the ``patient`` search parameter (the stored Patient), and its
``identifier`` chain (an opposition recorded by INS before the patient was known here) — among the Consents of that
patient only: a patient has a handful of them, whatever the size of the table; the rule is applied to those.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from gateway.fhir.search import parse_search
from gateway.referral.consents import opposition_in_force
from gateway.store.repository import StoredResource
from gateway.store.unit_of_work import UnitOfWork

#: More Consents than any patient has (each referral brings at most one or two).
CONSENTS_OF_A_PATIENT = 1000


async def oppositions_on_record(
    uow: UnitOfWork, patient_reference: str | None, keys: Sequence[tuple[str, str]], at: datetime
) -> list[StoredResource]:
    """The oppositions (Consent deny) of this patient in force at ``at``: by stored id for a known patient, and by
    national identifier for one recorded before the patient was (an opposition sent on its own, by INS)."""
    params = [("patient", patient_reference)] if patient_reference else []
    if keys:
        params.append(("patient:identifier", ",".join(f"{system}|{value}" for system, value in keys)))
    found: dict[str, StoredResource] = {}
    for param in params:
        # The patient alone, not also status=active (the rule checks the status): with both, PostgreSQL may start
        # from the status — whenever its statistics lag behind a growing table, it takes 'active' for rare — and
        # walk every active Consent of every patient (3.9 ms and 3,400 buffers at 480 Consents, and growing with
        # them), where a patient has a handful of Consents.
        consents = await uow.resources.find(
            parse_search("Consent", [param], default_count=CONSENTS_OF_A_PATIENT, max_count=CONSENTS_OF_A_PATIENT),
            limit=CONSENTS_OF_A_PATIENT,
        )
        for consent in consents:
            if opposition_in_force(consent.content, at):
                found.setdefault(consent.reference, consent)
    return list(found.values())
