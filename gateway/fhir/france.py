"""FR Core (Interop'Santé) element URLs the gateway reads (FR Core 2.1), and the INS: its systems and the one
check of its form that every path carrying an INS goes through (referral Patient, Consent, opposition message,
search by identifier, conditional-create conditions)."""

from __future__ import annotations

import re

INSEE_CODE_EXTENSION = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-address-insee-code"
BIRTH_PLACE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"  # core R4, used by FR Core
#: FR Core's identity reliability extension on Patient; its ``identityStatus`` part (a Coding) is the identity's
#: status, as our examples send it: system ``fr-core-cs-v2-0445``, code ``VALI``.
IDENTITY_RELIABILITY_EXTENSION = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability"
IDENTITY_STATUS = "identityStatus"
#: The référentiel national d'identitovigilance's four statuses of an identity, least to most reliable. Checked
#: (December 2026) against FR Core's pages: ``fr-core-identity-reliability`` binds identityStatus to ValueSet
#: ``fr-core-vs-identity-reliability`` = CodeSystem ``fr-core-cs-v2-0445`` (HL7 v2 table 0445: VIDE, PROV, VALI,
#: DOUB, … 21 codes, no order among them, and no RECUP or QUAL code), and ``fr-core-patient-ins``'s description
#: ("l'identité INS récupérée par le téléservice INSi et potentiellement qualifiée"). The RNIV builds the four
#: from two checks — an identity document of high trust seen, the INS retrieved by the INSi teleservice: PROV
#: neither, RECUP the INSi only, VALI the document only, QUAL both (only a qualified INS may be shared,
#: identito-na.fr "Dispositifs d'identification"). RECUP and VALI each lack one check; the order keeps VALI above
#: RECUP, as issue 17 asks. Codes outside these four (VIDE, DOUB…) rank below PROV: they never replace one.
IDENTITY_STATUS_ORDER = ("PROV", "RECUP", "VALI", "QUAL")

INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"
INS_NIA = "urn:oid:1.2.250.1.213.1.4.9"
INS_NIR_TEST = "urn:oid:1.2.250.1.213.1.4.10"
INS_NIA_TEST = "urn:oid:1.2.250.1.213.1.4.11"
INS_SYSTEMS = frozenset({INS_NIR, INS_NIA, INS_NIR_TEST, INS_NIA_TEST})

# ASCII only ([0-9], not \d: Python's \d and int() take full-width and Arabic-Indic digits too), and the Corsican
# departments in upper case: an INS is compared as the exact text stored, so "2a" or "２" would name no patient
# (an opposition stored under it would revoke nothing, and hold for no later referral).
_NIR = re.compile(r"[1-478][0-9]{2}(?:0[1-9]|1[0-2]|[2-9][0-9])(?:[0-9]{2}|2[AB])[0-9]{6}[0-9]{2}", re.ASCII)


def ins_form_problem(value: str) -> str | None:
    """Why ``value`` is not written as an INS is (INS-NIR, INS-NIA, or a test one), or None: its one form, whatever
    its key. What a search by INS checks (a wrong key finds nothing, as any unknown value)."""
    if not _NIR.fullmatch(value):
        return (
            "an INS is 15 characters, ASCII digits but for 2A / 2B (Corsica, upper case): sex, year, month, "
            "department, commune, order, then a 2-digit key"
        )
    return None


def ins_problem(value: str) -> str | None:
    """Why ``value`` is not a valid INS, or None: its form (``ins_form_problem``), then its 2-digit key = 97 −
    (number mod 97), Corsica's 2A / 2B counting as 19 / 18 (référentiel INS)."""
    if problem := ins_form_problem(value):
        return problem
    department = value[5:7]
    number = value[:5] + {"2A": "19", "2B": "18"}.get(department, department) + value[7:13]
    expected = 97 - int(number) % 97
    if int(value[13:]) != expected:
        return f"the INS key {value[13:]} is wrong for {value[:13]} (97 − number mod 97 = {expected:02d})"
    return None


def identity_status(patient: object) -> str | None:
    """The identity reliability status (``identityStatus`` code of FR Core's extension) a Patient carries."""
    if not isinstance(patient, dict):
        return None
    for extension in patient.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == IDENTITY_RELIABILITY_EXTENSION:
            for part in extension.get("extension") or []:
                if isinstance(part, dict) and part.get("url") == IDENTITY_STATUS:
                    code = (part.get("valueCoding") or {}).get("code")
                    return code if isinstance(code, str) else None
    return None


def identity_status_rank(code: str | None) -> int:
    """Where a status stands in ``IDENTITY_STATUS_ORDER`` (1 = PROV … 4 = QUAL); 0 for none or another code."""
    return IDENTITY_STATUS_ORDER.index(code) + 1 if code in IDENTITY_STATUS_ORDER else 0
