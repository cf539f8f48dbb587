"""When a patient's opposition holds (L1110-12, DESIGN §3.4 and §11): the one rule, pure, that intake (the
referral's own Consent, ``facts.consent_state``, and those on record), the recording of a Consent and its update
all go by.

An opposition is a Consent with ``provision.type`` deny. It is *in force* at an instant when it is ``active`` and
that instant falls within its ``provision.period`` (either bound may be absent: open). It ends only by a Consent of
its own:

- its poster (or an operator) updates it — ``status`` ``inactive`` (or ``entered-in-error``), or a period that ends;
- a later ``permit`` posted on its own for the same patient (``POST /fhir/Consent``) *lifts* it: one dated
  (``dateTime``) after the opposition's date. The gateway then records the opposition ``inactive`` (a new version,
  with a Provenance naming the permit), so that what is on record says what holds. A ``permit`` inside a referral
  lifts nothing: the patient's word that lifts an opposition is recorded as such, not inferred from a referral.

Lifting revives nothing: a referral revoked for the opposition stays revoked; a new referral is needed.
"""

from __future__ import annotations

from datetime import datetime

from gateway.fhir.search import date_period
from gateway.fhir.types import Resource

#: More denials than any patient has (what a look-up of a patient's oppositions reads at most).
CONSENTS_OF_A_PATIENT = 1000
#: Consent statuses under which it says nothing any more (R4 consent-state-codes).
ENDED = frozenset({"inactive", "entered-in-error", "rejected"})


def provision_type(consent: Resource) -> str | None:
    value = (consent.get("provision") or {}).get("type") if isinstance(consent.get("provision"), dict) else None
    return value if isinstance(value, str) else None


def is_opposition(consent: Resource) -> bool:
    """An active deny, whatever its period."""
    return consent.get("status") == "active" and provision_type(consent) == "deny"


def is_permit(consent: Resource) -> bool:
    return consent.get("status") == "active" and provision_type(consent) == "permit"


def _bounds(consent: Resource) -> tuple[datetime | None, datetime | None]:
    """``provision.period`` as [start, end) instants: from the start of its start to the end of its end (a day
    ends at its last instant: ``end`` 2026-12-31 holds all that day). An unreadable bound is open."""
    period = (consent.get("provision") or {}).get("period") if isinstance(consent.get("provision"), dict) else None
    if not isinstance(period, dict):
        return None, None
    start = date_period(period["start"]) if isinstance(period.get("start"), str) else None
    end = date_period(period["end"]) if isinstance(period.get("end"), str) else None
    return (start[0] if start else None), (end[1] if end else None)


def in_period(consent: Resource, at: datetime) -> bool:
    """Whether ``at`` falls within the Consent's ``provision.period`` (no period: always)."""
    start, end = _bounds(consent)
    return (start is None or start <= at) and (end is None or at < end)


def opposition_in_force(consent: Resource, at: datetime) -> bool:
    """Whether this Consent is an opposition that holds at ``at``: active, deny, ``at`` within its period."""
    return is_opposition(consent) and in_period(consent, at)


def dated(consent: Resource) -> datetime | None:
    """When the patient said it (``dateTime``), at its earliest instant; None when undated or unreadable."""
    value = consent.get("dateTime")
    period = date_period(value) if isinstance(value, str) else None
    return period[0] if period else None


def lifts(permit: Resource, opposition: Resource) -> bool:
    """Whether a ``permit`` posted on its own lifts ``opposition``: both about the same patient (the caller's to
    know), the permit active and dated after the opposition was — by the end of the opposition's date's precision
    (a permit of 2026-12-07T10:00 does not lift an opposition dated 2026-12-07, which may be later that day). An
    undated permit lifts nothing; an undated opposition counts from when it was recorded (``meta.lastUpdated``)."""
    when = dated(permit)
    if not is_permit(permit) or when is None:
        return False
    value = opposition.get("dateTime") or (opposition.get("meta") or {}).get("lastUpdated")
    period = date_period(value) if isinstance(value, str) else None
    return period is not None and when >= period[1]
