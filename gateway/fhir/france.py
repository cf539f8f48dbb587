"""FR Core (Interop'Santé) element URLs the gateway reads (FR Core 2.1), and the INS: its systems and the one
check of its form that every path carrying an INS goes through (referral Patient, Consent, opposition message,
search by identifier, conditional-create conditions)."""

from __future__ import annotations

import re

INSEE_CODE_EXTENSION = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-address-insee-code"
BIRTH_PLACE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"  # core R4, used by FR Core

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
