"""Identity vigilance at intake (référentiel INS, DESIGN §7): an INS travels with its five identity traits, and a
referral naming a known INS with other traits is an alert, not a merge. Pure: Patients in, issues or the next
version of the stored Patient out.

- Traits that differ (birth family name, birth given names, gender, birth date, birth place) are a 422
  ``ins-traits-mismatch``, one issue per trait, at its element in the posted bundle. Only the trait is named,
  never a value: neither the stored one (the caller may not be allowed to see that identity) nor the posted one.
  A trait the record lacks contradicts nothing.
- Equal traits: what else the referral says of the patient (address, telecom, a used name, the GP…) becomes the
  record's next version — elements it does not send are kept — with the identity reliability status kept at the
  highest either carries (``gateway.fhir.france.IDENTITY_STATUS_ORDER``). The record's identifiers stay as they
  are: the identity table keys the Patient on them.
"""

from __future__ import annotations

from gateway.errors import Issue, IssueCode
from gateway.fhir.france import IDENTITY_RELIABILITY_EXTENSION, identity_status, identity_status_rank
from gateway.fhir.types import Resource
from gateway.validation.rules import IDENTITY_TRAITS, identity_trait_values

#: What a referral never changes in a Patient on record: its id and meta (the store's), its identifiers (the
#: identity table's keys), its narrative (it would describe another version).
_KEPT = frozenset({"resourceType", "id", "meta", "identifier", "text"})
#: What a referral gives the record only when it has none: the GP it names is that referral's (its CareTeam, its
#: Tasks), through a PractitionerRole each referral brings anew — a new version per referral otherwise.
_FIRST_ONLY = frozenset({"generalPractitioner"})


def trait_mismatches(posted: Resource, stored: Resource, expression: str) -> list[Issue]:
    """One issue per identity trait the posted Patient (at ``expression``) gives otherwise than the record."""
    ours, theirs = identity_trait_values(posted), identity_trait_values(stored)
    return [
        Issue(
            IssueCode.INS_TRAITS_MISMATCH,
            f"this INS is on record with another {trait}: identity vigilance (référentiel INS) refuses the referral "
            "rather than merge two identities; check the patient's identity (INSi teleservice) and send it again — "
            "nothing was stored",
            f"{expression}.{ours[trait][1]}",
            "business-rule",
        )
        for trait in IDENTITY_TRAITS
        if trait in ours and trait in theirs and ours[trait][0] != theirs[trait][0]
    ]


def updated_patient(stored: Resource, posted: Resource) -> Resource | None:
    """The record's next version after a referral with the same identity traits, or None when it says nothing
    new. Element by element, the posted one wins but for ``_KEPT``; extensions by URL likewise, but the identity
    reliability extension, which is the more reliable of the two."""
    merged = {key: value for key, value in stored.items() if key != "meta"}
    for key, value in posted.items():
        if key not in _KEPT and key != "extension" and not (key in _FIRST_ONLY and key in stored):
            merged[key] = value
    extensions = [e for e in stored.get("extension") or [] if isinstance(e, dict)]
    for extension in posted.get("extension") or []:
        if not isinstance(extension, dict):
            continue
        url = extension.get("url")
        position = next((i for i, e in enumerate(extensions) if e.get("url") == url), None)
        if (
            url == IDENTITY_RELIABILITY_EXTENSION
            and position is not None
            and identity_status_rank(identity_status(posted)) <= identity_status_rank(identity_status(stored))
        ):
            continue  # the record's status is as reliable, or more
        if position is None:
            extensions.append(extension)
        else:
            extensions[position] = extension
    if extensions:
        merged["extension"] = extensions
    unchanged = {key: value for key, value in stored.items() if key != "meta"}
    return None if merged == unchanged else merged
